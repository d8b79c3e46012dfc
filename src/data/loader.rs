//! The image set of a list file, decoded once into memory, and the batches
//! of training (shuffled epochs, augmentation, prepared on another thread)
//! and validation (in list order).

use super::image::{load_image, to_chw, to_chw_distorted, Distortion, Image8};
use super::lists::label_of;
use crate::config::cfg::NetOptions;
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

/// Policy for a list entry that cannot be read or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnreadablePolicy {
    /// Stop with an error naming the file (training's default).
    Fail,
    /// Leave it out, report it, and go on (validation, or training with `--skip-bad-images`).
    Skip,
}

/// Source of the pixels of a [`Dataset`].
enum Pixels {
    /// Every image decoded once at load time.
    Cached(Vec<Image8>),
    /// Decoded again each time it is used, because the set would not fit
    /// the memory budget; `channels` is the decode mode.
    Streamed { channels: usize },
}

/// The images of a list with their classes, in list order.
pub struct Dataset {
    pub paths: Vec<PathBuf>,
    pub labels: Vec<usize>,
    pixels: Pixels,
    /// Entries left out under [`UnreadablePolicy::Skip`], with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Bytes the decoded-image cache may use: `DARKNET_CACHE_MB` if set, else
/// half of the memory the kernel reports as available (1 GiB if unknown).
pub fn cache_budget_bytes() -> u64 {
    if let Ok(Some(mb)) = cache_megabytes_from_env() {
        return mb << 20;
    }
    let available_kb = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    });
    available_kb.map(|kb| kb * 1024 / 2).unwrap_or(1 << 30)
}

/// The environment variable with the decoded-image cache budget in MiB.
pub const CACHE_ENV: &str = "DARKNET_CACHE_MB";

/// Reads [`CACHE_ENV`]: `None` when it is unset, an error when it is not a
/// whole number of MiB. The command line checks it before any work.
pub fn cache_megabytes_from_env() -> Result<Option<u64>, String> {
    let Ok(value) = std::env::var(CACHE_ENV) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(mb) if mb <= u64::MAX >> 20 => Ok(Some(mb)),
        _ => Err(format!("invalid {CACHE_ENV}={value:?}: expected a whole number of MiB such as 512; unset it for half the available memory")),
    }
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// True when the images were decoded into memory at load time.
    pub fn is_cached(&self) -> bool {
        matches!(self.pixels, Pixels::Cached(_))
    }

    /// Resolves labels, then decodes every image of `paths` on all cores.
    /// The decoded pixels are kept when `paths.len() * image_bytes` fits
    /// [`cache_budget_bytes`]; otherwise only the paths are, and images are
    /// decoded again on use. A label that matches nothing, or ties, is
    /// always an error.
    pub fn load(paths: &[PathBuf], label_names: &[String], channels: usize, image_bytes: usize, policy: UnreadablePolicy) -> Result<Dataset> {
        let labels = paths.iter().map(|p| label_of(p, label_names)).collect::<Result<Vec<_>>>()?;

        let needed = paths.len() as u64 * image_bytes as u64;
        let budget = cache_budget_bytes();
        let cache = needed <= budget;
        if !cache {
            crate::note!(
                "The {} images need about {} MB decoded, more than the cache budget of {} MB, so they are decoded on every use (set DARKNET_CACHE_MB to change the budget)",
                paths.len(),
                needed >> 20,
                budget >> 20
            );
        }

        // Decode everything once on all cores: to fill the cache, or only to
        // find unreadable entries before the run starts.
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
        let chunk = paths.len().div_ceil(threads).max(1);
        let decoded: Vec<Result<Option<Image8>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = paths
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().map(|p| load_image(p, channels).map(|img| cache.then_some(img))).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("image decoder thread panicked")).collect()
        });

        let mut data = Dataset { paths: Vec::new(), labels: Vec::new(), pixels: Pixels::Streamed { channels }, skipped: Vec::new() };
        let mut images = Vec::with_capacity(if cache { paths.len() } else { 0 });
        for ((path, label), image) in paths.iter().zip(labels).zip(decoded) {
            match image {
                Ok(img) => {
                    data.paths.push(path.clone());
                    data.labels.push(label);
                    images.extend(img);
                }
                Err(e) if policy == UnreadablePolicy::Skip => data.skipped.push((path.clone(), format!("{e:#}"))),
                Err(e) => {
                    return Err(e.context(format!(
                        "stopping: every training image must be readable; fix or remove {} from the list, or pass --skip-bad-images",
                        path.display()
                    )))
                }
            }
        }
        if cache {
            data.pixels = Pixels::Cached(images);
        }
        Ok(data)
    }

    /// Returns image `index`, from the cache or freshly decoded.
    pub fn image(&self, index: usize) -> Result<std::borrow::Cow<'_, Image8>> {
        match &self.pixels {
            Pixels::Cached(images) => Ok(std::borrow::Cow::Borrowed(&images[index])),
            Pixels::Streamed { channels } => Ok(std::borrow::Cow::Owned(load_image(&self.paths[index], *channels)?)),
        }
    }

    /// Writes image `index` as CHW floats without augmentation (center crop).
    pub fn write_input(&self, index: usize, options: &NetOptions, out: &mut [f32]) -> Result<()> {
        to_chw(&*self.image(index)?, options.height, options.width, None, out);
        Ok(())
    }
}

/// The order of training samples: a permutation of the set per epoch, each
/// drawn from the run's seed and the epoch number, so any position can be
/// recomputed (resuming from `seen` continues the same order).
pub struct SampleOrder {
    count: usize,
    seed: u64,
    epoch: usize,
    permutation: Vec<usize>,
}

impl SampleOrder {
    pub fn new(count: usize, seed: u64) -> Self {
        let mut order = SampleOrder { count, seed, epoch: usize::MAX, permutation: Vec::new() };
        order.shuffle_for(0);
        order
    }

    fn shuffle_for(&mut self, epoch: usize) {
        let mut rng = StdRng::seed_from_u64(self.seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        self.permutation = (0..self.count).collect();
        self.permutation.shuffle(&mut rng);
        self.epoch = epoch;
    }

    /// Returns the image index of sample number `sample` (counting from 0 over all epochs).
    pub fn image_at(&mut self, sample: u64) -> usize {
        let epoch = (sample / self.count as u64) as usize;
        if epoch != self.epoch {
            self.shuffle_for(epoch);
        }
        self.permutation[(sample % self.count as u64) as usize]
    }
}

/// One prepared training batch.
pub struct Batch {
    /// Number of the first sample in it.
    pub first_sample: u64,
    pub rows: usize,
    /// `[rows][inputs]`, CHW per row.
    pub input: Vec<f32>,
    /// `[rows][classes]`, one-hot.
    pub truth: Vec<f32>,
}

/// Fills one augmented training batch starting at `first_sample`.
pub fn make_batch(data: &Dataset, order: &mut SampleOrder, options: &NetOptions, classes: usize, first_sample: u64, rows: usize, seed: u64) -> Result<Batch> {
    let inputs = options.inputs;
    let mut input = vec![0.0f32; rows * inputs];
    let mut truth = vec![0.0f32; rows * classes];
    // One generator per batch, from the seed and the batch position, so the
    // augmentation does not depend on threads or on where a run resumed.
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(first_sample.wrapping_mul(0x2545_f491_4f6c_dd1d)));
    for r in 0..rows {
        let index = order.image_at(first_sample + r as u64);
        let img = data.image(index)?;
        let out = &mut input[r * inputs..(r + 1) * inputs];
        let offset = if img.width > options.width || img.height > options.height {
            Some((rng.gen_range(0..=img.height - options.height.min(img.height)), rng.gen_range(0..=img.width - options.width.min(img.width))))
        } else {
            None
        };
        let d = Distortion::random(&mut rng, options.hue, options.saturation, options.exposure);
        to_chw_distorted(&img, options.height, options.width, offset, d, out);
        truth[r * classes + data.labels[index]] = 1.0;
    }
    Ok(Batch { first_sample, rows, input, truth })
}

/// Training batches prepared on a background thread, one ahead of use.
pub struct BatchStream {
    receiver: Receiver<Result<Batch>>,
    worker: Option<JoinHandle<()>>,
}

impl BatchStream {
    /// Starts preparing `count` batches of `rows` images from sample `first_sample` on.
    pub fn start(data: std::sync::Arc<Dataset>, options: NetOptions, classes: usize, first_sample: u64, rows: usize, count: usize, seed: u64) -> BatchStream {
        let (sender, receiver) = sync_channel(2);
        let worker = std::thread::spawn(move || {
            let mut order = SampleOrder::new(data.len(), seed);
            for b in 0..count {
                let start = first_sample + (b * rows) as u64;
                let batch = make_batch(&data, &mut order, &options, classes, start, rows, seed);
                let failed = batch.is_err();
                if sender.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        BatchStream { receiver, worker: Some(worker) }
    }

    /// Returns the next batch, or the error that stopped the loader.
    pub fn next_batch(&mut self) -> Result<Batch> {
        self.receiver.recv().map_err(|_| anyhow::anyhow!("the batch loader stopped before the last batch"))?
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        // Dropping the receiver first makes the worker's next send fail.
        let (_, dummy) = sync_channel(0);
        drop(std::mem::replace(&mut self.receiver, dummy));
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Checks that the images fit the network input.
pub fn check_channels(options: &NetOptions, list: &Path) -> Result<()> {
    if options.channels != 1 && options.channels != 3 {
        bail!(
            "the cfg has channels={} but images from {} can only be loaded as 1 (gray) or 3 (RGB) channels",
            options.channels,
            list.display()
        );
    }
    if options.height * options.width * options.channels != options.inputs {
        bail!("the cfg sets inputs={} which differs from height*width*channels; image lists need the latter", options.inputs);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_order_is_a_permutation_per_epoch() {
        let mut order = SampleOrder::new(10, 3);
        let mut first: Vec<usize> = (0..10).map(|s| order.image_at(s)).collect();
        let second: Vec<usize> = (10..20).map(|s| order.image_at(s)).collect();
        assert_ne!(first, second, "epochs are reshuffled");
        first.sort();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
        // Recomputing an earlier position gives the same image.
        let again = SampleOrder::new(10, 3).image_at(13);
        assert_eq!(again, second[3]);
    }
}
