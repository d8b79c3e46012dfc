//! Command-line types for Darknet's positional syntax:
//! `darknet classifier COMMAND DATA CFG [FILES...] [options]`.

// The doc comments below are clap's help text, where `[IMAGE]` marks an
// optional argument and `<out>` a value, not a rustdoc link or HTML tag.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "darknet",
    version,
    about = "Darknet image classifier: FP32 training, quantization-aware training (QAT) and integer-only INT8 inference",
    after_help = "Workshop flow:\n  darknet classifier train_randseq cfg/mnist.data cfg/mnist_fc4.cfg\n  darknet classifier valid cfg/mnist.data cfg/mnist_fc4.cfg backup/mnist_fc4.weights\n  darknet classifier qat_int8 cfg/mnist.data cfg/mnist_fc4.cfg backup/mnist_fc4.weights\n  darknet classifier qat_int8 cfg/mnist.data cfg/mnist_fc4.cfg backup/mnist_fc4.qat.int8.qweights backup/mnist_fc4.qat.int8.qparams"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: TopCommand,
}

/// The positional syntax of each classifier command, with what it reads
/// and writes. BACKUP is `backup` of the `.data` file; <cfg> is the cfg file
/// name without folder and extension.
const CLASSIFIER_FILES: &str = "\
Darknet syntax, then the files each command reads -> writes:
  train_randseq DATA CFG [WEIGHTS]
      DATA, CFG, train list and images, WEIGHTS -> BACKUP/<cfg>.weights, BACKUP/<cfg>.backup,
      log/<cfg>.json, log/<cfg>_chart.png
  valid DATA CFG WEIGHTS
      DATA, CFG, valid list and images, WEIGHTS -> summary on stdout, log/<cfg>.json,
      log/<cfg>_confusion.png
  qat_int8 DATA CFG WEIGHTS
      DATA, CFG, train list and images, WEIGHTS -> BACKUP/<cfg>.qat.int8.weights,
      BACKUP/<cfg>.qat.int8.qweights, BACKUP/<cfg>.qat.int8.qparams, log/<cfg>.json
  qat_int8 DATA CFG QWEIGHTS QPARAMS  (the same as valid_int8)
  valid_int8 DATA CFG QWEIGHTS QPARAMS [--report]
      DATA, CFG, valid list and images, QWEIGHTS, QPARAMS -> summary (and report) on stdout,
      log/<cfg>.json, log/<cfg>_confusion_int8.png
  predict DATA CFG WEIGHTS [IMAGE]
  predict DATA CFG QWEIGHTS QPARAMS [IMAGE]
      DATA (labels, top), CFG, parameter files, IMAGE or paths on stdin -> top-k on stdout";

#[derive(Subcommand, Debug)]
pub enum TopCommand {
    /// Train, validate and quantize image classifiers.
    #[command(after_help = CLASSIFIER_FILES)]
    Classifier {
        #[command(subcommand)]
        command: ClassifierCommand,
    },
    /// Prepare data sets in Darknet's layout.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Convert IDX files (MNIST, Fashion-MNIST; gzip or raw) into
    /// <out>/{train,test}/<index>_<label>.jpg, labels.txt and list files.
    ImportIdx(crate::commands::import::ImportArgs),
}

/// Options shared by the training commands.
#[derive(Args, Debug, Clone)]
pub struct TrainOptions {
    /// Seed of the shuffling, augmentation, dropout and initial weights.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Leave out list entries that cannot be read or decoded instead of stopping.
    #[arg(long)]
    pub skip_bad_images: bool,
    /// train_randseq: write the checkpoint BACKUP/<cfg base>.backup after each
    /// batch whose number is a multiple of N (0: only when Ctrl-C, SIGTERM or
    /// a NaN/infinite loss stops the run). Pass it as WEIGHTS to resume.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub checkpoint_every: usize,
}

/// Options shared by the validation commands.
#[derive(Args, Debug, Clone)]
pub struct ValidOptions {
    /// Print one line per image: path, label, top-1 class and its probability.
    #[arg(long)]
    pub per_image: bool,
}

/// Options of the INT8 validation commands.
#[derive(Args, Debug, Clone, Default)]
pub struct Int8Options {
    /// Print the quantization report on stdout after the summary: per layer
    /// S1/S2/S3, Z1/Z2/Z3, the multiplier M (real, Q31, shift), the weight
    /// ranges and the share of outputs saturated at -128 or 127.
    #[arg(long)]
    pub report: bool,
}

#[derive(Subcommand, Debug)]
pub enum ClassifierCommand {
    /// FP32 training in shuffled epochs.
    ///
    /// Reads DATA (train list, labels, backup folder), CFG and optionally
    /// WEIGHTS (start point; its `seen` counts toward max_batches).
    /// Writes BACKUP/<cfg base>.weights at the end, the checkpoint
    /// BACKUP/<cfg base>.backup during the run, appends to log/<cfg base>.json
    /// and draws log/<cfg base>_chart.png (loss and learning rate per batch).
    #[command(name = "train_randseq", alias = "train")]
    TrainRandseq {
        /// .data file, e.g. cfg/mnist.data.
        data: PathBuf,
        /// .cfg file, e.g. cfg/mnist_fc4.cfg.
        cfg: PathBuf,
        /// FP32 .weights or .backup file to start from.
        weights: Option<PathBuf>,
        /// Start the schedule over with WEIGHTS, as Darknet's -clear does:
        /// their `seen` is set to 0, so max_batches more batches run, with
        /// burn_in and the learning-rate steps from the start.
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        options: TrainOptions,
    },
    /// FP32 validation: prints top-1 and top-k accuracy (k = `top` in DATA).
    ///
    /// Reads DATA (valid list, labels), CFG and WEIGHTS. Prints
    /// `N: top 1: F, top K: F, S seconds` on stdout, appends to
    /// log/<cfg base>.json and draws log/<cfg base>_confusion.png.
    Valid {
        /// .data file, e.g. cfg/mnist.data.
        data: PathBuf,
        /// .cfg file, e.g. cfg/mnist_fc4.cfg.
        cfg: PathBuf,
        /// FP32 .weights file, e.g. backup/mnist_fc4.weights.
        weights: PathBuf,
        #[command(flatten)]
        options: ValidOptions,
        /// Accepted only to explain that the report belongs to INT8 validation.
        #[arg(long, hide = true)]
        report: bool,
    },
    /// QAT fine-tuning (with WEIGHTS) or INT8 validation (with QWEIGHTS QPARAMS).
    ///
    /// With WEIGHTS: reads DATA (train list, labels), CFG and the FP32
    /// WEIGHTS; writes BACKUP/<cfg base>.qat.int8.weights, .qat.int8.qweights
    /// and .qat.int8.qparams, and appends to log/<cfg base>.json.
    /// With QWEIGHTS QPARAMS: integer-only validation, the same as valid_int8.
    #[command(name = "qat_int8")]
    QatInt8 {
        /// .data file, e.g. cfg/mnist.data.
        data: PathBuf,
        /// .cfg file, e.g. cfg/mnist_fc4.cfg.
        cfg: PathBuf,
        /// FP32 .weights (QAT) or .qat.int8.qweights (INT8 validation).
        #[arg(value_name = "WEIGHTS|QWEIGHTS")]
        weights: PathBuf,
        /// .qat.int8.qparams: give it to validate instead of training.
        qparams: Option<PathBuf>,
        #[command(flatten)]
        train: TrainOptions,
        #[command(flatten)]
        valid: ValidOptions,
        #[command(flatten)]
        int8: Int8Options,
    },
    /// Integer-only INT8 validation: prints top-1 and top-k accuracy.
    ///
    /// Reads DATA (valid list, labels), CFG, QWEIGHTS and QPARAMS. Prints
    /// `N: top 1: F, top K: F, S seconds` on stdout, appends to
    /// log/<cfg base>.json and draws log/<cfg base>_confusion_int8.png.
    #[command(name = "valid_int8")]
    ValidInt8 {
        /// .data file, e.g. cfg/mnist.data.
        data: PathBuf,
        /// .cfg file, e.g. cfg/mnist_fc4.cfg.
        cfg: PathBuf,
        /// .qat.int8.qweights file written by qat_int8.
        qweights: PathBuf,
        /// .qat.int8.qparams file written by qat_int8.
        qparams: PathBuf,
        #[command(flatten)]
        options: ValidOptions,
        #[command(flatten)]
        int8: Int8Options,
    },
    /// Top-k classes of single images, as `NN.NN%: label` lines (k = `top` in DATA).
    ///
    /// Give WEIGHTS for FP32, or QWEIGHTS QPARAMS for integer-only INT8; the
    /// extension of the third argument (.qweights or not) selects the path.
    /// Without IMAGE, image paths are read from standard input, one per line.
    /// Reads DATA (labels, top), CFG, the parameter files and the images;
    /// writes nothing but standard output.
    #[command(override_usage = "darknet classifier predict DATA CFG WEIGHTS [IMAGE]\n       darknet classifier predict DATA CFG QWEIGHTS QPARAMS [IMAGE]")]
    Predict {
        /// .data file, e.g. cfg/mnist.data.
        data: PathBuf,
        /// .cfg file, e.g. cfg/mnist_fc4.cfg.
        cfg: PathBuf,
        /// WEIGHTS [IMAGE] or QWEIGHTS QPARAMS [IMAGE].
        #[arg(value_name = "FILES", num_args = 1..=3, required = true)]
        files: Vec<PathBuf>,
    },
}

/// Darknet's single-dash flags that this CPU-only program accepts for
/// compatibility, with the value that each one takes (`-gpus 0`).
const GPU_FLAGS: [&str; 3] = ["-gpus", "-gpu", "-i"];

/// Rewrites Darknet's single-dash spellings in `args` (program name first)
/// into this program's: `-clear` becomes `--clear`, and the GPU flags
/// (`-gpus LIST`, `-gpu N`, `-i N`, `-nogpu`) are dropped, since everything
/// runs on the CPU. Returns the new arguments and one note per dropped flag.
pub fn from_darknet_flags(args: Vec<std::ffi::OsString>) -> (Vec<std::ffi::OsString>, Vec<String>) {
    let mut out = Vec::with_capacity(args.len());
    let mut notes = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-clear") => {
                // Some Darknet tutorials write `-clear 1`. Darknet itself only
                // looks for the flag, so a following 1 goes with it.
                if args.as_slice().first().is_some_and(|next| next == "1") {
                    args.next();
                }
                out.push("--clear".into());
            }
            Some("-nogpu") => notes.push("note: -nogpu is Darknet's flag for a CPU run; this program always runs on the CPU".to_string()),
            Some(flag) if GPU_FLAGS.contains(&flag) => {
                let value = args.next().map(|v| v.to_string_lossy().into_owned()).unwrap_or_default();
                notes.push(format!("note: ignoring Darknet's {flag} {value}: this program has no GPU code and runs on the CPU"));
            }
            _ => out.push(arg),
        }
    }
    (out, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn strings(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn darknet_flags_are_translated() {
        let (args, notes) = from_darknet_flags(strings(&["darknet", "classifier", "train_randseq", "d", "c", "w", "-gpus", "0,1", "-clear", "-nogpu"]));
        assert_eq!(args, strings(&["darknet", "classifier", "train_randseq", "d", "c", "w", "--clear"]));
        let (args, _) = from_darknet_flags(strings(&["darknet", "classifier", "train_randseq", "d", "c", "w", "-clear", "1"]));
        assert_eq!(args, strings(&["darknet", "classifier", "train_randseq", "d", "c", "w", "--clear"]));
        assert_eq!(notes.len(), 2);
        assert!(notes[0].contains("ignoring Darknet's -gpus 0,1"), "{}", notes[0]);
        assert!(notes[1].contains("-nogpu"), "{}", notes[1]);
    }

    #[test]
    fn other_arguments_pass_unchanged() {
        let input = strings(&["darknet", "classifier", "valid", "d", "c", "w", "--per-image"]);
        let (args, notes) = from_darknet_flags(input.clone());
        assert_eq!(args, input);
        assert!(notes.is_empty());
    }
}
