//! `classifier train_randseq`, and the training loop that QAT shares.

use super::{Interrupted, Setup};
use crate::cli::TrainOptions;
use crate::data::lists::read_image_list;
use crate::data::loader::{check_channels, BatchStream, Dataset, UnreadablePolicy};
use crate::formats::ensure_not_an_input;
use crate::formats::weights::{load_weights, network_is_finite, save_weights};
use crate::log::RunLog;
use crate::network::layers::UpdateArgs;
use crate::network::schedule::current_rate;
use crate::network::Network;
use crate::quant::qat::QatState;
use crate::report::charts::{read_last_run, write_training_chart};
use crate::report::progress::{BatchProgress, TrainProgress};
use anyhow::{anyhow, bail, Result};
use rand::Rng;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Loads the training list of `setup` into memory, reporting skipped entries.
pub fn load_training_set(setup: &Setup, options: &TrainOptions) -> Result<Arc<Dataset>> {
    let list = setup.data.require(&setup.data.train, "train")?;
    check_channels(&setup.cfg.net, &list)?;
    let paths = read_image_list(&list)?;
    let policy = if options.skip_bad_images { UnreadablePolicy::Skip } else { UnreadablePolicy::Fail };
    let started = Instant::now();
    let data = Dataset::load(&paths, &setup.labels, setup.cfg.net.channels, setup.cfg.net.inputs, policy)?;
    for (_, reason) in &data.skipped {
        crate::note!("warning: skipped (--skip-bad-images): {reason}");
    }
    if data.is_empty() {
        bail!("no readable image in {}; check the paths in the list", list.display());
    }
    if !data.skipped.is_empty() {
        crate::note!(
            "warning: training on {} of {} listed images; the sample order depends on this set, so resume with the same images readable",
            data.len(),
            paths.len()
        );
    }
    if data.is_cached() {
        crate::note!(
            "Loaded {} training images from {} into memory in {:.2} s",
            data.len(),
            list.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(Arc::new(data))
}

/// The outcome of [`train_loop`].
pub struct TrainSummary {
    pub batches: usize,
    pub last_loss: f32,
    pub average_loss: f32,
    pub seconds: f64,
    /// True when the loop stopped early because `stop` was set.
    pub interrupted: bool,
}

/// When the training loop saves checkpoints and whether it should stop early.
pub struct LoopControl<'a> {
    /// Calls `checkpoint` after every batch whose number (counted from 1
    /// over all runs, as `seen / batch`) is a multiple of this; 0: never.
    pub checkpoint_every: usize,
    pub checkpoint: &'a mut dyn FnMut(&Network) -> Result<()>,
    /// Checked after each completed batch: when set, the loop returns with
    /// `interrupted` set instead of starting the next batch.
    pub stop: Option<&'a AtomicBool>,
}

impl LoopControl<'_> {
    /// Control for a run with no checkpoints and no early stop (QAT).
    pub fn none(no_checkpoint: &mut dyn FnMut(&Network) -> Result<()>) -> LoopControl<'_> {
        LoopControl { checkpoint_every: 0, checkpoint: no_checkpoint, stop: None }
    }
}

const DIVERGENCE_FIX: &str = "Lower learning_rate or add burn_in in the [net] section of the cfg";

/// A copy of the batch-norm statistics from after the last good update.
/// Training's forward pass changes them before the update is checked. The
/// other parameters need no copy, because [`Network::update_if_finite`]
/// leaves them untouched when a step would make them non-finite.
struct LastGoodStatistics {
    rolling: Vec<(Vec<f32>, Vec<f32>)>,
}

impl LastGoodStatistics {
    fn capture(net: &Network) -> LastGoodStatistics {
        let rolling = net
            .layers
            .iter()
            .filter_map(|l| l.params()?.batch_norm.as_ref())
            .map(|bn| (bn.rolling_mean.clone(), bn.rolling_variance.clone()))
            .collect();
        LastGoodStatistics { rolling }
    }

    fn store(&mut self, net: &Network) {
        let current = net.layers.iter().filter_map(|l| l.params()?.batch_norm.as_ref());
        for ((mean, variance), bn) in self.rolling.iter_mut().zip(current) {
            mean.copy_from_slice(&bn.rolling_mean);
            variance.copy_from_slice(&bn.rolling_variance);
        }
    }

    /// Puts the statistics of the last good update back into `net`.
    fn restore(&self, net: &mut Network) {
        let current = net.layers.iter_mut().filter_map(|l| l.params_mut()?.batch_norm.as_mut());
        for ((mean, variance), bn) in self.rolling.iter().zip(current) {
            bn.rolling_mean.copy_from_slice(mean);
            bn.rolling_variance.copy_from_slice(variance);
        }
    }
}

/// Runs `steps` SGD updates of `batch` images each (`subdivisions`
/// mini-batches per update), starting at `net.seen`. Prints one line per
/// update, logs it, saves checkpoints and stops early as `control` sets, and
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
    control: LoopControl,
) -> Result<TrainSummary> {
    let options = net.options.clone();
    let batch = options.batch;
    let rows = options.mini_batch();
    let first_sample = net.seen;
    let passes = steps * options.subdivisions;
    let mut stream = BatchStream::start(data.clone(), options.clone(), classes, first_sample, rows, passes, seed);
    let started = Instant::now();
    let mut last_good_statistics = LastGoodStatistics::capture(net);
    let mut summary = TrainSummary { batches: 0, last_loss: 0.0, average_loss: -1.0, seconds: 0.0, interrupted: false };
    let first_batch = (first_sample / batch as u64) as usize + 1;
    let mut progress = TrainProgress::new(first_batch, first_batch + steps - 1, batch);
    let mut epoch_tracker = EpochTracker::new(first_sample, data.len());

    for step in 1..=steps {
        let step_started = Instant::now();
        let mut loss_sum = 0.0f32;
        if let Some(q) = qat.as_deref_mut() {
            q.begin_step(step);
        }
        for _ in 0..options.subdivisions {
            let mut mini = stream.next_batch()?;
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
            last_good_statistics.restore(net);
            bail!(
                "the loss became {loss} at batch {batch_number}, so training stopped; the weights are those after batch {}. {DIVERGENCE_FIX}",
                net.seen / batch as u64
            );
        }
        let rate = {
            let batch_num = (net.seen / batch as u64) as usize;
            let options = net.options.clone();
            current_rate(&options, batch_num, || net.rng().gen::<f32>())
        };
        // The softmax loss saturates instead of becoming infinite, so weights
        // that overflow show only here.
        if !net.update_if_finite(&UpdateArgs { learning_rate: rate, momentum: options.momentum, decay: options.decay, batch }) {
            last_good_statistics.restore(net);
            bail!(
                "the update of batch {batch_number} (loss {loss}) would make some weights NaN or infinite, so training stopped; the weights are those after batch {}. {DIVERGENCE_FIX}",
                net.seen / batch as u64
            );
        }
        last_good_statistics.store(net);
        net.seen += batch as u64;
        summary.average_loss = if summary.average_loss < 0.0 { loss } else { 0.9 * summary.average_loss + 0.1 * loss };
        summary.last_loss = loss;
        summary.batches = step;

        let epoch = net.seen as f64 / data.len() as f64;
        let seconds = step_started.elapsed().as_secs_f64();
        progress.batch(&BatchProgress { batch: batch_number, epoch, loss, average_loss: summary.average_loss, rate, seconds, seen: net.seen });
        log.record(
            "batch",
            json!({"batch": batch_number, "epoch": epoch, "loss": loss, "avg_loss": summary.average_loss, "rate": rate, "seconds": seconds, "seen": net.seen}),
        )?;
        if let Some(record) = epoch_tracker.after_batch(batch_number, loss, summary.average_loss, net.seen) {
            log.record("epoch", record)?;
        }
        if control.stop.is_some_and(|stop| stop.load(Ordering::SeqCst)) && step < steps {
            summary.interrupted = true;
            break;
        }
        let checkpoint_due = control.checkpoint_every > 0 && batch_number.is_multiple_of(control.checkpoint_every);
        if checkpoint_due && step < steps {
            (control.checkpoint)(net)?;
        }
    }
    progress.finish();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Sums the losses of the current epoch and returns an `epoch` log record
/// each time `seen` crosses a whole multiple of the training set's size.
struct EpochTracker {
    images: u64,
    epoch: u64,
    loss_sum: f64,
    batches: usize,
    started: Instant,
}

impl EpochTracker {
    fn new(seen: u64, images: usize) -> EpochTracker {
        let images = images.max(1) as u64;
        EpochTracker { images, epoch: seen / images, loss_sum: 0.0, batches: 0, started: Instant::now() }
    }

    fn after_batch(&mut self, batch: usize, loss: f32, average_loss: f32, seen: u64) -> Option<serde_json::Value> {
        self.loss_sum += loss as f64;
        self.batches += 1;
        let epoch = seen / self.images;
        if epoch == self.epoch {
            return None;
        }
        let record = json!({"epoch": epoch, "batch": batch, "seen": seen, "batches": self.batches,
                            "mean_loss": self.loss_sum / self.batches as f64, "avg_loss": average_loss,
                            "seconds": self.started.elapsed().as_secs_f64()});
        *self = EpochTracker { images: self.images, epoch, loss_sum: 0.0, batches: 0, started: Instant::now() };
        Some(record)
    }
}

/// Returns the program as the user started it (`./darknet`, say), for
/// commands that the user may paste back, or `darknet` if it is unknown.
fn program_name() -> String {
    std::env::args().next().filter(|p| !p.is_empty()).unwrap_or_else(|| "darknet".to_string())
}

/// Set by the signal handler of `train_randseq`; read by the training loop.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Installs, once per process, a handler for SIGINT, SIGTERM and SIGHUP that
/// requests that the training loop stop after the current batch. A second signal
/// ends the process at once with status 130; the checkpoint on disk is then
/// the previous one, which the atomic writer keeps intact.
fn install_stop_handler() -> Result<&'static AtomicBool> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        ctrlc::set_handler(|| {
            if STOP_REQUESTED.swap(true, Ordering::SeqCst) {
                crate::note!("second interrupt: exiting now without saving");
                std::process::exit(130);
            }
            crate::note!("interrupt: finishing the current batch, then saving the checkpoint (interrupt again to exit at once)");
        })
        .map_err(|e| e.to_string())
    });
    if let Err(e) = installed {
        bail!("cannot install the Ctrl-C handler: {e}");
    }
    STOP_REQUESTED.store(false, Ordering::SeqCst);
    Ok(&STOP_REQUESTED)
}

/// Writes `net` to `path` unless a parameter is NaN or infinite, so that a
/// checkpoint on disk is always loadable.
fn save_finite(net: &Network, path: &Path) -> Result<()> {
    if !network_is_finite(net) {
        bail!("{} was not written: the weights contain NaN or infinite values", path.display());
    }
    save_weights(net, path)
}

/// `classifier train_randseq DATA CFG [WEIGHTS]`.
///
/// Resuming: WEIGHTS may be the checkpoint `BACKUP/<cfg base>.backup` (or any
/// `.weights`). Training then continues from its `seen` (images trained on)
/// up to `max_batches`. Each of the following is a pure function of `seen`,
/// the seed and the training list, so it is restored exactly: the batch
/// number, the learning rate of every later batch (`policy`, `burn_in`), the
/// epoch, the order of the samples (one shuffle per epoch from the seed) and
/// the augmentation of each batch. Not restored, because the Darknet format does
/// not store them: the momentum buffers (`updates`, which start at zero
/// again, so the first batches after a resume step differently than the
/// uninterrupted run would), the generator of dropout and `policy=random`
/// (restarted from the seed), and the running average loss (restarted at
/// the first resumed batch). The same `--seed` and the same readable
/// training images must be given, or the sample order differs.
///
/// The checkpoint is the one output that may be the WEIGHTS input: resuming
/// from it replaces it with later checkpoints of the same run, and the
/// atomic writer keeps the previous one intact until each replacement is
/// complete. The final `.weights` must not be an input.
pub fn run(data_path: &Path, cfg_path: &Path, weights: Option<&Path>, clear: bool, options: &TrainOptions) -> Result<()> {
    let setup = Setup::load(data_path, cfg_path)?;
    let mut net = setup.build_network(setup.cfg.net.mini_batch(), options.seed)?;
    check_classes(&net, &setup)?;
    if let Some(w) = weights {
        let header = load_weights(&mut net, w, cfg_path)?;
        crate::note!("Loaded {} (seen {} images)", w.display(), header.seen);
        if clear {
            net.seen = 0;
            crate::note!("--clear: training starts at batch 1 with these weights");
        }
    }
    let output = setup.output_path(".weights");
    let backup = setup.output_path(".backup");
    let text_inputs = setup.text_inputs();
    let mut inputs: Vec<&Path> = text_inputs.iter().map(PathBuf::as_path).collect();
    ensure_not_an_input(&backup, &inputs)?;
    inputs.extend(weights);
    ensure_not_an_input(&output, &inputs)?;

    let batch = setup.cfg.net.batch as u64;
    let done = (net.seen / batch) as usize;
    let max_batches = setup.cfg.net.max_batches;
    if done >= max_batches {
        bail!(
            "nothing to train: the weights have seen {} images ({done} batches of {batch}) and max_batches is {max_batches}; raise max_batches in {}, or add --clear (Darknet's -clear) to train max_batches batches from these weights",
            net.seen,
            cfg_path.display()
        );
    }
    let data = load_training_set(&setup, options)?;
    let mut log = RunLog::open(&setup.cfg.base_name())?;
    log.record("run", run_record("train_randseq", data_path, cfg_path, weights, options.seed, &setup))?;

    let steps = max_batches - done;
    crate::note!(
        "Training {} from batch {} to {max_batches}: learning rate {}, momentum {}, decay {}, {} images per batch, checkpoint {} every {} batches",
        cfg_path.display(),
        done + 1,
        setup.cfg.net.learning_rate,
        setup.cfg.net.momentum,
        setup.cfg.net.decay,
        batch,
        backup.display(),
        options.checkpoint_every
    );
    let stop = install_stop_handler()?;
    let mut save_checkpoint = |n: &Network| save_finite(n, &backup);
    let control = LoopControl { checkpoint_every: options.checkpoint_every, checkpoint: &mut save_checkpoint, stop: Some(stop) };
    let summary = match train_loop(&mut net, data.clone(), setup.data.classes, steps, options.seed, &mut log, None, control) {
        Ok(summary) => summary,
        Err(error) => {
            let saved = match save_finite(&net, &backup) {
                Ok(()) => format!("The last good weights (seen {} images) were saved to {}", net.seen, backup.display()),
                Err(e) => format!("{e:#}; the last checkpoint on disk, if any, is unchanged"),
            };
            log.record("train_error", json!({"error": format!("{error:#}"), "seen": net.seen, "backup": backup}))?;
            return Err(anyhow!("{error:#}. {saved}"));
        }
    };
    if summary.interrupted {
        save_finite(&net, &backup)?;
        log.record("interrupted", json!({"seen": net.seen, "batches": net.seen / batch, "backup": backup}))?;
        return Err(Interrupted {
            message: format!(
                "interrupted after batch {} of {max_batches}; saved the checkpoint {} (seen {} images). Resume with: {} classifier train_randseq {} {} {} --seed {}",
                net.seen / batch,
                backup.display(),
                net.seen,
                program_name(),
                data_path.display(),
                cfg_path.display(),
                backup.display(),
                options.seed
            ),
        }
        .into());
    }
    save_finite(&net, &output)?;
    let images_per_second = (summary.batches as f64 * batch as f64) / summary.seconds;
    crate::note!(
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
    let chart = log.path().with_file_name(format!("{}_chart.png", setup.cfg.base_name()));
    let title = format!("{} batches {}-{}", setup.cfg.base_name(), done + 1, net.seen / batch);
    let drawn = read_last_run(log.path()).and_then(|points| write_training_chart(&points, &title, &chart));
    let mut files = vec![output.clone()];
    match drawn {
        Ok(()) => {
            crate::note!("Loss and learning rate chart: {}", chart.display());
            files.push(chart);
        }
        Err(error) => crate::note!("warning: {error:#}"),
    }
    log.record("files", json!({"command": "train_randseq", "written": files}))?;
    setup.repeat_warnings();
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

/// Returns the first log record of a run.
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
