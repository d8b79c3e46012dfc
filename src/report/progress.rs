//! Progress on stderr: an `indicatif` bar when stderr is a terminal, and
//! otherwise Darknet's plain lines, so that logs and CI output stay readable.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Returns true when stderr is a terminal, the only case where bars are drawn.
pub fn bars_enabled() -> bool {
    std::io::stderr().is_terminal()
}

/// The facts of one training batch, as the plain line prints them.
pub struct BatchProgress {
    pub batch: usize,
    pub epoch: f64,
    pub loss: f32,
    pub average_loss: f32,
    pub rate: f32,
    pub seconds: f64,
    pub seen: u64,
}

/// Progress of a training loop of `steps` batches.
pub struct TrainProgress {
    bar: Option<ProgressBar>,
    images_per_batch: usize,
    started: Instant,
}

impl TrainProgress {
    /// Starts the bar at batch `first_batch - 1` of `last_batch`.
    pub fn new(first_batch: usize, last_batch: usize, images_per_batch: usize) -> TrainProgress {
        let bar = bars_enabled().then(|| {
            let bar = ProgressBar::with_draw_target(Some(last_batch as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{bar:30.cyan/blue} batch {pos}/{len} {msg} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(first_batch.saturating_sub(1) as u64);
            bar.reset_eta();
            bar
        });
        TrainProgress { bar, images_per_batch, started: Instant::now() }
    }

    /// Moves the bar to `p.batch`, or prints Darknet's line for it.
    pub fn batch(&mut self, p: &BatchProgress) {
        match &self.bar {
            Some(bar) => {
                let elapsed = self.started.elapsed().as_secs_f64();
                let images_per_second = if p.seconds > 0.0 { self.images_per_batch as f64 / p.seconds } else { 0.0 };
                bar.set_message(format!(
                    "epoch {:.2} loss {:.4} avg {:.4} rate {:.6} {:.0} images/s ({elapsed:.0} s)",
                    p.epoch, p.loss, p.average_loss, p.rate, images_per_second
                ));
                bar.set_position(p.batch as u64);
            }
            None => {
                // One write per line, so a reader of a pipe never reads half a line.
                let line = format!(
                    "{}, {:.3}: {:.6}, {:.6} avg, {:.6} rate, {:.6} seconds, {} images\n",
                    p.batch, p.epoch, p.loss, p.average_loss, p.rate, p.seconds, p.seen
                );
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    /// Prints `message` above the bar, or as a plain line.
    pub fn println(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None => crate::note!("{message}"),
        }
    }

    /// Removes the bar, leaving the terminal for the summary lines.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for TrainProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Progress of a validation run over `images` images.
pub struct ValidProgress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl ValidProgress {
    pub fn new(images: usize) -> ValidProgress {
        let bar = bars_enabled().then(|| {
            let bar = ProgressBar::with_draw_target(Some(images as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{bar:30.green/blue} {pos}/{len} images {msg} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        ValidProgress { bar, started: Instant::now() }
    }

    /// Adds `rows` validated images, `top1` of the `done` so far correct.
    pub fn advance(&self, rows: usize, top1: usize, done: usize) {
        if let Some(bar) = &self.bar {
            let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("top 1: {:.4}, {:.0} images/s", top1 as f64 / done.max(1) as f64, done as f64 / seconds));
            bar.inc(rows as u64);
        }
    }

    /// Removes the bar before the summary line goes to stdout.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for ValidProgress {
    fn drop(&mut self) {
        self.finish();
    }
}
