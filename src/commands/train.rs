//! `classifier train_randseq`, and the training loop that QAT shares.

use super::Setup;
use crate::cli::TrainOptions;
use crate::data::lists::read_image_list;
use crate::data::loader::{check_channels, BatchStream, Dataset, UnreadablePolicy};
use crate::formats::weights::{load_weights, save_weights};
use crate::formats::ensure_not_an_input;
use crate::log::RunLog;
use crate::network::layers::UpdateArgs;
use crate::network::schedule::current_rate;
use crate::network::Network;
use crate::quant::qat::QatState;
use anyhow::{bail, Result};
use rand::Rng;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Loads the training list of `setup` into memory, reporting skipped entries.
pub fn load_training_set(setup: &Setup, options: &TrainOptions) -> Result<Arc<Dataset>> {
    let list = setup.data.require(&setup.data.train, "train")?;
    check_channels(&setup.cfg.net, &list)?;
    let paths = read_image_list(&list)?;
    let policy = if options.skip_bad_images { UnreadablePolicy::Skip } else { UnreadablePolicy::Fail };
    let started = Instant::now();
    let data = Dataset::load(&paths, &setup.labels, setup.cfg.net.channels, setup.cfg.net.inputs, policy)?;
    for (path, reason) in &data.skipped {
        eprintln!("warning: skipped {}: {reason}", path.display());
    }
    if data.is_empty() {
        bail!("no readable image in {}; check the paths in the list", list.display());
    }
    if data.is_cached() {
        eprintln!(
            "Loaded {} training images from {} into memory in {:.2} s",
            data.len(),
            list.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(Arc::new(data))
}

/// What the loop reports at the end.
pub struct TrainSummary {
    pub batches: usize,
    pub last_loss: f32,
    pub average_loss: f32,
    pub seconds: f64,
}

/// Runs `steps` SGD updates of `batch` images each (`subdivisions`
/// mini-batches per update), starting at `net.seen`. Prints one line per
/// update, logs it, calls `checkpoint` every `checkpoint_every` updates, and
/// applies QAT when `qat` is given. Stops with an error, leaving the weights
/// of the last good update in `net`, when the loss is not finite.
#[allow(clippy::too_many_arguments)]
pub fn train_loop(
    net: &mut Network,
    data: Arc<Dataset>,
    classes: usize,
    steps: usize,
    seed: u64,
    log: &mut RunLog,
    mut qat: Option<&mut QatState>,
    checkpoint_every: usize,
    checkpoint: &mut dyn FnMut(&Network) -> Result<()>,
) -> Result<TrainSummary> {
    let options = net.options.clone();
    let batch = options.batch;
    let rows = options.mini_batch();
    let first_sample = net.seen;
    let passes = steps * options.subdivisions;
    let mut stream = BatchStream::start(data.clone(), options.clone(), classes, first_sample, rows, passes, seed);
    let started = Instant::now();
    let mut average_loss = -1.0f32;
    let mut last_loss = 0.0;
    let mut done = 0;

    for step in 1..=steps {
        let step_started = Instant::now();
        let mut loss_sum = 0.0f32;
        if let Some(q) = qat.as_deref_mut() {
            q.begin_step(step);
        }
        for _ in 0..options.subdivisions {
            let mut mini = stream.next()?;
            loss_sum += match qat.as_deref_mut() {
                Some(q) => {
                    q.prepare(net, &mut mini.input);
                    net.train_pass(&mini.input, &mini.truth, mini.rows, &mut |i, layer, r| q.after_layer(i, layer, r))
                }
                None => net.train_pass(&mini.input, &mini.truth, mini.rows, &mut |_, _, _| {}),
            };
        }
        let loss = loss_sum / batch as f32;
        let batch_number = (net.seen / batch as u64) as usize + 1;
        if !loss.is_finite() {
            bail!(
                "the loss became {loss} at batch {batch_number}; stopped before updating, so the weights are those after batch {}. Lower learning_rate or add burn_in",
                batch_number - 1
            );
        }
        let rate = {
            let batch_num = (net.seen / batch as u64) as usize;
            let options = net.options.clone();
            current_rate(&options, batch_num, || net.rng().gen::<f32>())
        };
        net.update(&UpdateArgs { learning_rate: rate, momentum: options.momentum, decay: options.decay, batch });
        net.seen += batch as u64;
        average_loss = if average_loss < 0.0 { loss } else { 0.9 * average_loss + 0.1 * loss };
        last_loss = loss;
        done = step;

        let epoch = net.seen as f64 / data.len() as f64;
        let seconds = step_started.elapsed().as_secs_f64();
        eprintln!(
            "{batch_number}, {epoch:.3}: {loss:.6}, {average_loss:.6} avg, {rate:.6} rate, {seconds:.6} seconds, {} images",
            net.seen
        );
        log.record(
            "batch",
            json!({"batch": batch_number, "epoch": epoch, "loss": loss, "avg_loss": average_loss, "rate": rate, "seconds": seconds, "seen": net.seen}),
        )?;
        if checkpoint_every > 0 && step % checkpoint_every == 0 && step < steps {
            checkpoint(net)?;
        }
    }
    Ok(TrainSummary { batches: done, last_loss, average_loss, seconds: started.elapsed().as_secs_f64() })
}

/// `classifier train_randseq DATA CFG [WEIGHTS]`.
pub fn run(data_path: &Path, cfg_path: &Path, weights: Option<&Path>, options: &TrainOptions) -> Result<()> {
    let setup = Setup::load(data_path, cfg_path)?;
    let mut net = Network::build(&setup.cfg, setup.cfg.net.mini_batch(), options.seed)?;
    check_classes(&net, &setup)?;
    if let Some(w) = weights {
        let header = load_weights(&mut net, w, cfg_path)?;
        eprintln!("Loaded {} (seen {} images)", w.display(), header.seen);
    }
    let output = setup.output_path(".weights");
    let backup = setup.output_path(".backup");
    let mut inputs: Vec<&Path> = vec![data_path, cfg_path];
    inputs.extend(weights);
    ensure_not_an_input(&output, &inputs)?;

    let batch = setup.cfg.net.batch as u64;
    let done = (net.seen / batch) as usize;
    let max_batches = setup.cfg.net.max_batches;
    if done >= max_batches {
        bail!(
            "nothing to train: the weights have seen {} images ({done} batches) and max_batches is {max_batches}; raise max_batches in {}",
            net.seen,
            cfg_path.display()
        );
    }
    let data = load_training_set(&setup, options)?;
    let mut log = RunLog::open(&setup.cfg.base_name())?;
    log.record("run", run_record("train_randseq", data_path, cfg_path, weights, options.seed, &setup))?;

    let steps = max_batches - done;
    eprintln!(
        "Training {} from batch {} to {max_batches}: learning rate {}, momentum {}, decay {}, {} images per batch",
        cfg_path.display(),
        done + 1,
        setup.cfg.net.learning_rate,
        setup.cfg.net.momentum,
        setup.cfg.net.decay,
        batch
    );
    let backup_for_checkpoint: PathBuf = backup.clone();
    let summary = train_loop(
        &mut net,
        data.clone(),
        setup.data.classes,
        steps,
        options.seed,
        &mut log,
        None,
        options.checkpoint_every,
        &mut |n| save_weights(n, &backup_for_checkpoint),
    );
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            save_weights(&net, &backup)?;
            return Err(e.context(format!("the last good weights were saved to {}", backup.display())));
        }
    };
    save_weights(&net, &output)?;
    let images_per_second = (summary.batches as f64 * batch as f64) / summary.seconds;
    eprintln!(
        "Saved {} after {} batches ({} images seen) in {:.1} s, {:.0} images/s",
        output.display(),
        net.seen / batch,
        net.seen,
        summary.seconds,
        images_per_second
    );
    log.record(
        "train_end",
        json!({"weights": output, "batches": net.seen / batch, "seen": net.seen, "seconds": summary.seconds,
               "images_per_second": images_per_second, "loss": summary.last_loss, "avg_loss": summary.average_loss}),
    )?;
    Ok(())
}

/// Fails unless the network's output size equals `classes` of the `.data` file.
pub fn check_classes(net: &Network, setup: &Setup) -> Result<()> {
    if net.outputs() != setup.data.classes {
        bail!(
            "{} ends with {} outputs but {} has classes = {}; set output={} in the last [connected] layer",
            setup.cfg.path.display(),
            net.outputs(),
            setup.data.path.display(),
            setup.data.classes,
            setup.data.classes
        );
    }
    Ok(())
}

/// The first log record of a run.
pub fn run_record(command: &str, data: &Path, cfg: &Path, weights: Option<&Path>, seed: u64, setup: &Setup) -> serde_json::Value {
    let n = &setup.cfg.net;
    json!({
        "command": command, "data": data, "cfg": cfg, "weights": weights, "seed": seed,
        "version": env!("CARGO_PKG_VERSION"),
        "batch": n.batch, "subdivisions": n.subdivisions, "max_batches": n.max_batches,
        "learning_rate": n.learning_rate, "momentum": n.momentum, "decay": n.decay,
        "policy": format!("{:?}", n.policy),
    })
}
