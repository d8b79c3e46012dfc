//! `classifier valid` (FP32) and `valid_int8` / `qat_int8 ... QWEIGHTS QPARAMS`
//! (integer-only): one validation loop over a [`Classifier`].

use super::Setup;
use crate::cli::{Int8Options, ValidOptions};
use crate::data::lists::read_image_list;
use crate::data::loader::{check_channels, Dataset, UnreadablePolicy};
use crate::formats::weights::load_weights;
use crate::log::RunLog;
use crate::network::Network;
use crate::quant::int8_network::Int8Network;
use crate::report::charts::{write_confusion_chart, ConfusionMatrix};
use crate::report::progress::ValidProgress;
use crate::report::quant_report::{input_record, layer_records, print_report, SaturationProbe};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Context of a failed write of results, e.g. into a closed pipe.
const STDOUT_FAILED: &str = "cannot write the results to standard output";

/// Images per forward pass during validation.
const VALID_BATCH: usize = 128;

/// A network that maps a batch of input rows to class probabilities.
pub trait Classifier {
    fn max_batch(&self) -> usize;
    /// Returns `[rows][classes]` probabilities for `input[..rows * inputs]`.
    fn classify(&mut self, input: &[f32], rows: usize) -> &[f32];
}

impl Classifier for Network {
    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn classify(&mut self, input: &[f32], rows: usize) -> &[f32] {
        self.forward(input, rows, false);
        &self.output()[..rows * self.outputs()]
    }
}

impl Classifier for Int8Network {
    fn max_batch(&self) -> usize {
        Int8Network::max_batch(self)
    }

    fn classify(&mut self, input: &[f32], rows: usize) -> &[f32] {
        self.predict(input, rows)
    }
}

/// Class indices sorted by probability, highest first; equal probabilities
/// keep the lower index first.
pub fn ranked(probabilities: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]).then(a.cmp(&b)));
    order
}

/// Result of one validation run.
#[derive(Debug, Clone)]
pub struct Accuracy {
    pub images: usize,
    pub top1: f64,
    pub top_k: f64,
    pub k: usize,
    pub skipped: usize,
    pub seconds: f64,
}

/// Validates `model` on the `valid` list of `setup`.
pub fn validate(model: &mut dyn Classifier, setup: &Setup, options: &ValidOptions, mut per_image: impl FnMut(&Path, usize, &[f32])) -> Result<Accuracy> {
    let started = Instant::now();
    let list = setup.data.require(&setup.data.valid, "valid")?;
    check_channels(&setup.cfg.net, &list)?;
    let paths = read_image_list(&list)?;
    let data = Dataset::load(&paths, &setup.labels, setup.cfg.net.channels, setup.cfg.net.inputs, UnreadablePolicy::Skip)?;
    for (_, reason) in &data.skipped {
        crate::note!("warning: not validated: {reason}");
    }

    let k = setup.data.top;
    let classes = setup.data.classes;
    let inputs = setup.cfg.net.inputs;
    let rows_max = model.max_batch().clamp(1, VALID_BATCH);
    let mut input = vec![0.0f32; rows_max * inputs];
    let mut stdout = std::io::stdout().lock();
    let (mut top1, mut top_k) = (0usize, 0usize);
    let progress = ValidProgress::new(data.len());
    for start in (0..data.len()).step_by(rows_max) {
        let rows = rows_max.min(data.len() - start);
        for r in 0..rows {
            data.write_input(start + r, &setup.cfg.net, &mut input[r * inputs..(r + 1) * inputs])?;
        }
        let probabilities = model.classify(&input, rows);
        for r in 0..rows {
            let p = &probabilities[r * classes..(r + 1) * classes];
            let order = ranked(p);
            let truth = data.labels[start + r];
            top1 += (order[0] == truth) as usize;
            top_k += order[..k].contains(&truth) as usize;
            if options.per_image {
                writeln!(
                    stdout,
                    "{}: label {} ({}), top-1 {} ({}) p={:.6}",
                    data.paths[start + r].display(),
                    truth,
                    setup.labels[truth],
                    order[0],
                    setup.labels[order[0]],
                    p[order[0]]
                )
                .context(STDOUT_FAILED)?;
            }
            per_image(&data.paths[start + r], truth, p);
        }
        progress.advance(rows, top1, start + rows);
    }
    progress.finish();
    let n = data.len();
    let accuracy = Accuracy {
        images: n,
        top1: if n > 0 { top1 as f64 / n as f64 } else { 0.0 },
        top_k: if n > 0 { top_k as f64 / n as f64 } else { 0.0 },
        k,
        skipped: data.skipped.len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    writeln!(
        stdout,
        "{}: top 1: {:.6}, top {}: {:.6}, {:.3} seconds",
        accuracy.images, accuracy.top1, k, accuracy.top_k, accuracy.seconds
    )
    .and_then(|()| stdout.flush())
    .context(STDOUT_FAILED)?;
    Ok(accuracy)
}

fn finish(accuracy: &Accuracy, log: &mut RunLog, event: &str, fields: serde_json::Value) -> Result<()> {
    let mut record = json!({"images": accuracy.images, "top1": accuracy.top1, "top_k": accuracy.top_k, "k": accuracy.k,
                            "skipped": accuracy.skipped, "seconds": accuracy.seconds});
    if let (Some(map), serde_json::Value::Object(extra)) = (record.as_object_mut(), fields) {
        map.extend(extra);
    }
    log.record(event, record)?;
    if accuracy.skipped > 0 {
        bail!(
            "{} listed images could not be read (named above); the accuracy covers the other {} only. Fix or remove them from the list",
            accuracy.skipped,
            accuracy.images
        );
    }
    if accuracy.images == 0 {
        bail!("no image could be validated");
    }
    Ok(())
}

/// `classifier valid DATA CFG WEIGHTS`.
pub fn run_fp32(data_path: &Path, cfg_path: &Path, weights: &Path, options: &ValidOptions) -> Result<()> {
    let setup = Setup::load(data_path, cfg_path)?;
    let mut net = setup.build_network(VALID_BATCH, 0)?;
    super::train::check_classes(&net, &setup)?;
    load_weights(&mut net, weights, cfg_path)?;
    let mut confusion = ConfusionMatrix::new(setup.data.classes);
    let accuracy = validate(&mut net, &setup, options, |_, truth, p| confusion.add(truth, ranked(p)[0]))?;
    let mut log = RunLog::open(&setup.cfg.base_name())?;
    let chart = write_confusion(&setup, &confusion, &mut log, "", &format!("FP32 {}", weights.display()))?;
    finish(&accuracy, &mut log, "valid", json!({"mode": "fp32", "weights": weights, "data": data_path, "cfg": cfg_path, "chart": chart}))
}

/// Draws `log/<cfg base>_confusion<suffix>.png` beside the log and logs the
/// matrix. Returns the PNG's path, or `None` when drawing failed (reported
/// on stderr, because the chart is secondary to the accuracy).
fn write_confusion(setup: &Setup, confusion: &ConfusionMatrix, log: &mut RunLog, suffix: &str, title: &str) -> Result<Option<PathBuf>> {
    let path = log.path().with_file_name(format!("{}_confusion{suffix}.png", setup.cfg.base_name()));
    let rows: Vec<&[u64]> = confusion.counts.chunks(confusion.classes.max(1)).collect();
    log.record("confusion", json!({"labels": setup.labels, "counts": rows, "chart": path}))?;
    match write_confusion_chart(confusion, &setup.labels, title, &path) {
        Ok(()) => {
            crate::note!("Confusion matrix: {}", path.display());
            Ok(Some(path))
        }
        Err(error) => {
            crate::note!("warning: {error:#}");
            Ok(None)
        }
    }
}

/// `classifier valid_int8 DATA CFG QWEIGHTS QPARAMS`.
pub fn run_int8(data_path: &Path, cfg_path: &Path, qweights: &Path, qparams: &Path, options: &ValidOptions, int8: &Int8Options) -> Result<()> {
    let setup = Setup::load(data_path, cfg_path)?;
    let mut net = Int8Network::load(&setup.cfg, qweights, qparams, VALID_BATCH)?;
    if net.outputs() != setup.data.classes {
        bail!(
            "{} ends with {} outputs but {} has classes = {}; use the cfg and .data files that the .qweights file was made with",
            cfg_path.display(),
            net.outputs(),
            data_path.display(),
            setup.data.classes
        );
    }
    if net.clamped_biases > 0 {
        crate::note!("warning: {} int32 biases were clamped so the accumulators fit in int32", net.clamped_biases);
    }
    let mut confusion = ConfusionMatrix::new(setup.data.classes);
    let mut count = |_: &Path, truth: usize, p: &[f32]| confusion.add(truth, ranked(p)[0]);
    let mut report = None;
    let accuracy = if int8.report {
        let mut probe = SaturationProbe::new(&mut net);
        let accuracy = validate(&mut probe, &setup, options, &mut count)?;
        let layers = layer_records(&probe);
        print_report(&mut std::io::stdout().lock(), &probe, &layers).context(STDOUT_FAILED)?;
        report = Some((input_record(&probe), layers));
        accuracy
    } else {
        validate(&mut net, &setup, options, &mut count)?
    };
    let mut log = RunLog::open(&setup.cfg.base_name())?;
    if let Some((input, layers)) = report {
        log.record("quant_report", json!({"qweights": qweights, "qparams": qparams, "input": input, "layers": layers}))?;
    }
    let chart = write_confusion(&setup, &confusion, &mut log, "_int8", &format!("INT8 {}", qweights.display()))?;
    finish(
        &accuracy,
        &mut log,
        "valid",
        json!({"mode": "int8", "qweights": qweights, "qparams": qparams, "data": data_path, "cfg": cfg_path, "chart": chart}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_puts_lower_index_first_on_ties() {
        assert_eq!(ranked(&[0.1, 0.4, 0.4, 0.1]), vec![1, 2, 0, 3]);
    }
}
