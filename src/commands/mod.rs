//! One module per command; [`run`] dispatches the parsed command line.

pub mod import;
pub mod qat;
pub mod train;
pub mod valid;

use crate::cli::{ClassifierCommand, Cli, DataCommand, TopCommand};
use crate::config::cfg::NetworkConfig;
use crate::config::data_file::DataConfig;
use crate::data::lists::read_labels;
use crate::formats::{expect_kind, FileKind};
use anyhow::Result;
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
            eprintln!("{warning}");
        }
        let labels_path = data.require(&data.labels, "labels")?;
        let labels = read_labels(&labels_path, data.classes, data_path)?;
        Ok(Setup { data, cfg, labels })
    }

    /// `BACKUP/<cfg base><suffix>`.
    pub fn output_path(&self, suffix: &str) -> PathBuf {
        self.data.backup.join(format!("{}{}", self.cfg.base_name(), suffix))
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        TopCommand::Data { command: DataCommand::ImportIdx(args) } => import::run(&args),
        TopCommand::Classifier { command } => match command {
            ClassifierCommand::TrainRandseq { data, cfg, weights, options } => {
                if let Some(w) = &weights {
                    expect_kind(w, FileKind::Weights, "WEIGHTS (the start point of train_randseq)")?;
                }
                train::run(&data, &cfg, weights.as_deref(), &options)
            }
            ClassifierCommand::Valid { data, cfg, weights, options } => {
                expect_kind(&weights, FileKind::Weights, "WEIGHTS of valid")?;
                valid::run_fp32(&data, &cfg, &weights, &options)
            }
            ClassifierCommand::QatInt8 { data, cfg, weights, qparams, train, valid } => match qparams {
                Some(qparams) => {
                    expect_kind(&weights, FileKind::QWeights, "the third file of qat_int8 with two files (QWEIGHTS)")?;
                    expect_kind(&qparams, FileKind::QParams, "the fourth file of qat_int8 (QPARAMS)")?;
                    valid::run_int8(&data, &cfg, &weights, &qparams, &valid)
                }
                None => {
                    expect_kind(&weights, FileKind::Weights, "WEIGHTS of qat_int8 training")?;
                    qat::run(&data, &cfg, &weights, &train)
                }
            },
            ClassifierCommand::ValidInt8 { data, cfg, qweights, qparams, options } => {
                expect_kind(&qweights, FileKind::QWeights, "QWEIGHTS of valid_int8")?;
                expect_kind(&qparams, FileKind::QParams, "QPARAMS of valid_int8")?;
                valid::run_int8(&data, &cfg, &qweights, &qparams, &options)
            }
        },
    }
}
