//! Command-line types for Darknet's positional syntax:
//! `darknet classifier COMMAND DATA CFG [FILES...] [options]`.

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

#[derive(Subcommand, Debug)]
pub enum TopCommand {
    /// Train, validate and quantize image classifiers.
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

#[derive(Subcommand, Debug)]
pub enum ClassifierCommand {
    /// FP32 training in shuffled epochs. Reads DATA (train list, labels), CFG and
    /// optionally WEIGHTS (start point; its `seen` counts toward max_batches).
    /// Writes BACKUP/<cfg base>.weights and appends to log/<cfg base>.json.
    #[command(name = "train_randseq", alias = "train")]
    TrainRandseq {
        data: PathBuf,
        cfg: PathBuf,
        weights: Option<PathBuf>,
        #[command(flatten)]
        options: TrainOptions,
    },
    /// FP32 validation on the `valid` list of DATA: prints top-1 and top-k
    /// (k = `top` in DATA). Reads DATA, CFG, WEIGHTS; writes only the log.
    Valid {
        data: PathBuf,
        cfg: PathBuf,
        weights: PathBuf,
        #[command(flatten)]
        options: ValidOptions,
    },
    /// With WEIGHTS: QAT fine-tuning, writing BACKUP/<cfg base>.qat.int8.weights,
    /// .qat.int8.qweights and .qat.int8.qparams. With QWEIGHTS QPARAMS:
    /// integer-only INT8 validation (the same as valid_int8).
    #[command(name = "qat_int8")]
    QatInt8 {
        data: PathBuf,
        cfg: PathBuf,
        /// FP32 .weights (QAT) or .qat.int8.qweights (INT8 validation).
        weights: PathBuf,
        /// .qat.int8.qparams: give it to validate instead of training.
        qparams: Option<PathBuf>,
        #[command(flatten)]
        train: TrainOptions,
        #[command(flatten)]
        valid: ValidOptions,
    },
    /// Integer-only INT8 validation. Reads DATA, CFG, QWEIGHTS, QPARAMS.
    #[command(name = "valid_int8")]
    ValidInt8 {
        data: PathBuf,
        cfg: PathBuf,
        qweights: PathBuf,
        qparams: PathBuf,
        #[command(flatten)]
        options: ValidOptions,
    },
}
