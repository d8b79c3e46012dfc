//! One module per command; [`run`] dispatches the parsed command line.

pub mod import;
pub mod predict;
pub mod qat;
pub mod train;
pub mod valid;

use crate::cli::{ClassifierCommand, Cli, DataCommand, TopCommand};
use crate::config::cfg::{LayerSpec, NetworkConfig};
use crate::config::data_file::DataConfig;
use crate::data::lists::read_labels;
use crate::formats::{expect_kind, FileKind};
use crate::network::Network;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// The `.data` and `.cfg` files of a run, with the label names.
pub struct Setup {
    pub data: DataConfig,
    pub cfg: NetworkConfig,
    pub labels: Vec<String>,
}

impl Setup {
    /// Parses both files, prints their warnings to stderr, and reads the labels.
    pub fn load(data_path: &Path, cfg_path: &Path) -> Result<Setup> {
        let data = DataConfig::load(data_path)?;
        let cfg = NetworkConfig::load(cfg_path)?;
        for warning in data.warnings.iter().chain(&cfg.warnings) {
            crate::note!("{warning}");
        }
        let labels_path = data.require(&data.labels, "labels")?;
        let labels = read_labels(&labels_path, data.classes, data_path)?;
        Ok(Setup { data, cfg, labels })
    }

    /// Prints the warnings about the two files once more, after a long run
    /// whose per-batch lines have pushed them out of sight.
    pub fn repeat_warnings(&self) {
        let warnings: Vec<&String> = self.data.warnings.iter().chain(&self.cfg.warnings).collect();
        if warnings.is_empty() {
            return;
        }
        crate::note!("The run started with {} warning(s) about its files, repeated here:", warnings.len());
        for warning in warnings {
            crate::note!("{warning}");
        }
    }

    /// `BACKUP/<cfg base><suffix>`.
    pub fn output_path(&self, suffix: &str) -> PathBuf {
        self.data.backup.join(format!("{}{}", self.cfg.base_name(), suffix))
    }

    /// Returns the text files this run reads: the `.data` and `.cfg` files,
    /// the labels and the list files it names. Image files are not included.
    pub fn text_inputs(&self) -> Vec<PathBuf> {
        let mut inputs = vec![self.data.path.clone(), self.cfg.path.clone()];
        inputs.extend([&self.data.labels, &self.data.train, &self.data.valid].into_iter().flatten().cloned());
        inputs
    }

    /// Builds the FP32 network with buffers for `max_batch` rows, after
    /// checking that its size can be allocated at all.
    pub fn build_network(&self, max_batch: usize, seed: u64) -> Result<Network> {
        check_network_size(&self.cfg, max_batch)?;
        Network::build(&self.cfg, max_batch, seed)
    }
}

/// Estimates the f32 values that training a network for `cfg` with
/// `max_batch` rows allocates. It counts the weights of each layer with
/// parameters three times (values, updates, a fake-quantized copy), three
/// `[rows][outputs]` buffers per layer (output, delta, one scratch), the
/// im2col workspace of each convolution, and the input batch. `None` when the count overflows
/// `usize`. Shapes follow Darknet's formulas; a layer that does not fit its
/// input ends the estimate there, and `Network::build` reports it.
fn estimated_values(cfg: &NetworkConfig, max_batch: usize) -> Option<usize> {
    let net = &cfg.net;
    let (mut c, mut h, mut w) = if net.height * net.width * net.channels == net.inputs {
        (net.channels, net.height, net.width)
    } else {
        (net.inputs, 1, 1)
    };
    let mut total = max_batch.checked_mul(net.inputs)?.checked_mul(2)?;
    for layer in &cfg.layers {
        match layer.spec {
            LayerSpec::Connected { output, .. } => {
                let weights = c.checked_mul(h)?.checked_mul(w)?.checked_mul(output)?.checked_mul(3)?;
                total = total.checked_add(weights)?.checked_add(output.checked_mul(4)?)?;
                (c, h, w) = (output, 1, 1);
            }
            LayerSpec::Convolutional { filters, size, stride, pad, .. } => {
                let out_h = (h.checked_add(pad.checked_mul(2)?)?.checked_sub(size)?) / stride + 1;
                let out_w = (w.checked_add(pad.checked_mul(2)?)?.checked_sub(size)?) / stride + 1;
                let patch = c.checked_mul(size)?.checked_mul(size)?;
                let weights = patch.checked_mul(filters)?.checked_mul(3)?;
                let workspace = patch.checked_mul(out_h)?.checked_mul(out_w)?;
                total = total.checked_add(weights)?.checked_add(workspace)?.checked_add(filters.checked_mul(4)?)?;
                (c, h, w) = (filters, out_h, out_w);
            }
            // `padding` is the total over both sides, as in Darknet.
            LayerSpec::MaxPool { size, stride, padding } => {
                h = h.checked_add(padding)?.checked_sub(size)? / stride + 1;
                w = w.checked_add(padding)?.checked_sub(size)? / stride + 1;
            }
            LayerSpec::AvgPool => (h, w) = (1, 1),
            LayerSpec::Softmax { .. } | LayerSpec::Dropout { .. } | LayerSpec::Cost { .. } => {}
        }
        let buffers = max_batch.checked_mul(c)?.checked_mul(h)?.checked_mul(w)?.checked_mul(3)?;
        total = total.checked_add(buffers)?;
    }
    Some(total)
}

/// Fails when the network of `cfg` is too large to address or when the
/// allocator rejects a block of its estimated size, with a message naming
/// the cfg, instead of an abort inside `Network::build`.
fn check_network_size(cfg: &NetworkConfig, max_batch: usize) -> Result<()> {
    let bytes = estimated_values(cfg, max_batch).and_then(|values| values.checked_mul(std::mem::size_of::<f32>()));
    let fix = "lower output= of the [connected] layers, batch=, or height/width/channels";
    let Some(bytes) = bytes.filter(|&b| b <= isize::MAX as usize) else {
        bail!("{}: the network is too large to address in memory; {fix}", cfg.path.display());
    };
    // Reserving without touching the pages costs little, and on Linux a
    // block larger than memory plus swap is rejected here.
    let mut probe: Vec<u8> = Vec::new();
    if probe.try_reserve_exact(bytes).is_err() {
        bail!(
            "{}: the network needs about {} bytes with {max_batch} rows per batch, and that much memory cannot be allocated; {fix}",
            cfg.path.display(),
            crate::formats::weights::group_digits(bytes)
        );
    }
    Ok(())
}

/// The error of a run stopped by SIGINT, SIGTERM or SIGHUP after its
/// checkpoint was saved; `main` exits with status 130 for it.
#[derive(Debug)]
pub struct Interrupted {
    pub message: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Interrupted {}

pub fn run(cli: Cli) -> Result<()> {
    check_environment()?;
    match cli.command {
        TopCommand::Data { command: DataCommand::ImportIdx(args) } => import::run(&args),
        TopCommand::Classifier { command } => match command {
            ClassifierCommand::TrainRandseq { data, cfg, weights, clear, options } => {
                if clear && weights.is_none() {
                    bail!("--clear restarts the schedule of the WEIGHTS given after CFG, but none were given: pass WEIGHTS (a copy outside the backup folder), or drop --clear");
                }
                if let Some(w) = &weights {
                    expect_kind(w, FileKind::Weights, "WEIGHTS (the start point of train_randseq)")?;
                }
                train::run(&data, &cfg, weights.as_deref(), clear, &options)
            }
            ClassifierCommand::Valid { data, cfg, weights, options, report } => {
                if report {
                    bail!("--report applies to INT8 validation, and valid runs FP32 weights: use valid_int8 DATA CFG QWEIGHTS QPARAMS --report");
                }
                expect_kind(&weights, FileKind::Weights, "WEIGHTS of valid")?;
                valid::run_fp32(&data, &cfg, &weights, &options)
            }
            ClassifierCommand::QatInt8 { data, cfg, weights, qparams, train, valid, int8 } => match qparams {
                Some(qparams) => {
                    expect_kind(&weights, FileKind::QWeights, "QWEIGHTS of qat_int8 DATA CFG QWEIGHTS QPARAMS")?;
                    expect_kind(&qparams, FileKind::QParams, "QPARAMS of qat_int8 DATA CFG QWEIGHTS QPARAMS")?;
                    valid::run_int8(&data, &cfg, &weights, &qparams, &valid, &int8)
                }
                None => {
                    if int8.report {
                        bail!("--report applies to INT8 validation: qat_int8 DATA CFG QWEIGHTS QPARAMS --report");
                    }
                    expect_kind(&weights, FileKind::Weights, "WEIGHTS of qat_int8 training")?;
                    qat::run(&data, &cfg, &weights, &train)
                }
            },
            ClassifierCommand::ValidInt8 { data, cfg, qweights, qparams, options, int8 } => {
                expect_kind(&qweights, FileKind::QWeights, "QWEIGHTS of valid_int8")?;
                expect_kind(&qparams, FileKind::QParams, "QPARAMS of valid_int8")?;
                valid::run_int8(&data, &cfg, &qweights, &qparams, &options, &int8)
            }
            ClassifierCommand::Predict { data, cfg, files } => predict::run(&data, &cfg, &files),
        },
    }
}

/// Checks the environment variables that tune the run, so a typo stops the
/// command with a message before any work instead of a panic later.
fn check_environment() -> Result<()> {
    use crate::data::loader::cache_megabytes_from_env;
    use crate::kernels::gemm_i8::{kernel_from_env, threads_from_env};
    kernel_from_env().map_err(anyhow::Error::msg)?;
    threads_from_env().map_err(anyhow::Error::msg)?;
    cache_megabytes_from_env().map_err(anyhow::Error::msg)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> NetworkConfig {
        NetworkConfig::parse(text, Path::new("t.cfg")).unwrap()
    }

    #[test]
    fn size_estimate_follows_conv_and_pool_shapes() {
        // 1x8x8 -> conv 4 filters 3x3 pad 1 -> 4x8x8 -> maxpool 2/2 -> 4x4x4 -> connected 2.
        let cfg = parse("[net]\nbatch=1\nwidth=8\nheight=8\nchannels=1\n[convolutional]\nfilters=4\nsize=3\npad=1\n[maxpool]\nsize=2\nstride=2\n[connected]\noutput=2\n[softmax]\n");
        let input = 2 * 64;
        let conv = 3 * 36 + 9 * 64 + 16 + 3 * 256;
        let pool = 3 * 64;
        let connected = 3 * 64 * 2 + 8 + 3 * 2;
        let softmax = 3 * 2;
        assert_eq!(estimated_values(&cfg, 1), Some(input + conv + pool + connected + softmax));
    }

    #[test]
    fn size_check_rejects_huge_network() {
        let cfg = parse("[net]\nbatch=1\nwidth=1000\nheight=1000\nchannels=3\n[connected]\noutput=1000000000\n[softmax]\n");
        let err = check_network_size(&cfg, 128).unwrap_err().to_string();
        assert!(err.contains("t.cfg"), "{err}");
        assert!(err.contains("output="), "{err}");
    }
}
