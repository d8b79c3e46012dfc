//! `classifier qat_int8 DATA CFG WEIGHTS`: QAT fine-tuning from FP32 weights,
//! writing `.qat.int8.weights`, `.qat.int8.qweights` and `.qat.int8.qparams`.

use super::train::{check_classes, load_training_set, run_record, train_loop, LoopControl};
use super::Setup;
use crate::cli::TrainOptions;
use crate::formats::qfiles::{write_qparams, write_qweights};
use crate::formats::weights::{load_weights, save_weights};
use crate::formats::ensure_not_an_input;
use crate::log::RunLog;
use crate::network::Network;
use crate::quant::qat::QatState;
use anyhow::{Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};

/// `classifier qat_int8 DATA CFG WEIGHTS`. Unlike `train_randseq`, QAT
/// writes no checkpoint, and an interrupt ends it without output.
pub fn run(data_path: &Path, cfg_path: &Path, weights: &Path, options: &TrainOptions) -> Result<()> {
    let setup = Setup::load(data_path, cfg_path)?;
    let mut net = setup.build_network(setup.cfg.net.mini_batch(), options.seed)?;
    check_classes(&net, &setup)?;
    load_weights(&mut net, weights, cfg_path)?;
    net.seen = 0;

    let out_weights = setup.output_path(".qat.int8.weights");
    let out_qweights = setup.output_path(".qat.int8.qweights");
    let out_qparams = setup.output_path(".qat.int8.qparams");
    let text_inputs = setup.text_inputs();
    let mut inputs: Vec<&Path> = text_inputs.iter().map(PathBuf::as_path).collect();
    inputs.push(weights);
    for out in [&out_weights, &out_qweights, &out_qparams] {
        ensure_not_an_input(out, &inputs)?;
    }

    let data = load_training_set(&setup, options)?;
    let batch = setup.cfg.net.batch;
    let epochs = setup.cfg.net.qat_end_epoch.max(1);
    let steps = (epochs * data.len()).div_ceil(batch);
    let mut qat = QatState::new(&net, &setup.cfg.net, steps)?;
    let mut log = RunLog::open(&setup.cfg.base_name())?;
    log.record("run", run_record("qat_int8", data_path, cfg_path, Some(weights), options.seed, &setup))?;
    crate::note!(
        "QAT of {}: {epochs} epoch(s) of {} images = {steps} batches, fake quantization from batch {}, ema_smooth {}",
        weights.display(),
        data.len(),
        setup.cfg.net.qat_init_step,
        setup.cfg.net.ema_smooth
    );

    let mut no_checkpoint = |_: &Network| Ok(());
    let summary = train_loop(&mut net, data, setup.data.classes, steps, options.seed, &mut log, Some(&mut qat), LoopControl::none(&mut no_checkpoint))
        .context("QAT stopped, and no output file was written")?;
    QatState::release(&mut net);
    let (qparams, qweights) = qat.export(&net)?;

    save_weights(&net, &out_weights)?;
    write_qweights(&out_qweights, &qweights)?;
    write_qparams(&out_qparams, &qparams)?;

    let mut ranges = Vec::new();
    for (i, q) in qparams.iter().enumerate() {
        crate::note!(
            "layer {i}: S1 {:.9} Z1 {:4}  S2 {:.9} Z2 {:4}  S3 {:.9} Z3 {:4}",
            q.input.scale, q.input.zero_point, q.weight.scale, q.weight.zero_point, q.output.scale, q.output.zero_point
        );
        ranges.push(json!({"layer": i, "S1": q.input.scale, "Z1": q.input.zero_point, "S2": q.weight.scale,
                           "Z2": q.weight.zero_point, "S3": q.output.scale, "Z3": q.output.zero_point}));
    }
    crate::note!(
        "Saved {}, {} and {} after {} QAT batches in {:.1} s",
        out_weights.display(),
        out_qweights.display(),
        out_qparams.display(),
        summary.batches,
        summary.seconds
    );
    log.record(
        "qat_end",
        json!({"weights": out_weights, "qweights": out_qweights, "qparams": out_qparams, "batches": summary.batches,
               "seconds": summary.seconds, "ranges": ranges}),
    )?;
    Ok(())
}
