//! Helpers shared by the tests that run the `darknet` binary on small files
//! they write themselves: a temporary working folder, PNG/JPEG digits of
//! two or more synthetic classes, `.data`/`.cfg`/list files, and checks on
//! the exit status and the messages.

#![allow(dead_code)]

use image::{GrayImage, Luma};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BINARY: &str = env!("CARGO_BIN_EXE_darknet");

/// A fresh folder under the system temp folder; commands run inside it, so
/// the relative paths of `.data` files resolve there.
pub struct Workspace {
    pub dir: PathBuf,
}

impl Workspace {
    pub fn new(name: &str) -> Workspace {
        let dir = std::env::temp_dir().join(format!("darknet-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Workspace { dir }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    /// Writes `contents` to `relative`, creating folders as needed.
    pub fn write(&self, relative: &str, contents: impl AsRef<[u8]>) {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, contents).unwrap();
    }

    pub fn read(&self, relative: &str) -> Vec<u8> {
        fs::read(self.path(relative)).unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
    }

    pub fn exists(&self, relative: &str) -> bool {
        self.path(relative).exists()
    }

    /// Returns a `darknet` command with this folder as its working directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command.args(args).current_dir(&self.dir);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// How clearly the synthetic images show their class: the band is
/// `128 + signal` and the background `128 - signal`, plus uniform noise in
/// `[-noise, noise]`.
#[derive(Clone, Copy)]
pub struct Contrast {
    pub signal: i32,
    pub noise: i32,
}

/// Bands far above the noise: every model learns them.
pub const CLEAR: Contrast = Contrast { signal: 80, noise: 30 };

/// Draws a `size x size` gray image of class `class` out of `classes`: a bright
/// vertical band whose position encodes the class, on a noisy background.
pub fn digit_image(class: usize, classes: usize, size: u32, contrast: Contrast, rng: &mut StdRng) -> GrayImage {
    let band = size / classes as u32;
    GrayImage::from_fn(size, size, |x, _| {
        let inside = x / band.max(1) == class as u32;
        let base = if inside { 128 + contrast.signal } else { 128 - contrast.signal };
        Luma([(base + rng.gen_range(-contrast.noise..=contrast.noise)).clamp(0, 255) as u8])
    })
}

/// The class names of the synthetic sets: none is a substring of another or
/// of the folder names used here.
pub const LABELS: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];

/// Writes `count` PNG images per class into `folder` and returns their
/// paths relative to the workspace, class by class.
pub fn write_images(ws: &Workspace, folder: &str, classes: usize, count: usize, size: u32, contrast: Contrast, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut paths = Vec::new();
    fs::create_dir_all(ws.path(folder)).unwrap();
    for i in 0..count {
        for (class, label) in LABELS.iter().enumerate().take(classes) {
            let relative = format!("{folder}/{i}_{label}.png");
            digit_image(class, classes, size, contrast, &mut rng).save(ws.path(&relative)).unwrap();
            paths.push(relative);
        }
    }
    paths
}

/// The files of a small working set: `t.data`, `t.cfg`, `labels.txt`,
/// `train.list`, `valid.list` and their images, with outputs in `backup/`.
pub struct SetOptions {
    pub classes: usize,
    pub size: u32,
    pub train_per_class: usize,
    pub valid_per_class: usize,
    pub batch: usize,
    pub max_batches: usize,
    pub learning_rate: f32,
    pub hidden: usize,
    /// Side of the images on disk; larger than `size` means random crops.
    pub image_size: u32,
    /// Extra `key=value` lines for `[net]`, such as augmentation.
    pub extra_net: String,
    pub contrast: Contrast,
}

impl Default for SetOptions {
    fn default() -> Self {
        SetOptions {
            classes: 2,
            size: 4,
            train_per_class: 8,
            valid_per_class: 4,
            batch: 4,
            max_batches: 10,
            learning_rate: 0.1,
            hidden: 0,
            image_size: 0,
            extra_net: String::new(),
            contrast: CLEAR,
        }
    }
}

/// Returns the `.cfg` text for `options`: `[connected]` layers on gray images,
/// an optional ReLU hidden layer, then `[softmax]`.
pub fn cfg_text(options: &SetOptions) -> String {
    let mut text = format!(
        "[net]\nbatch={}\nsubdivisions=1\nheight={}\nwidth={}\nchannels=1\nmax_batches={}\nlearning_rate={}\nmomentum=0.9\ndecay=0.0005\n\n",
        options.batch, options.size, options.size, options.max_batches, options.learning_rate
    );
    if !options.extra_net.is_empty() {
        text.insert_str(text.len() - 1, &format!("{}\n", options.extra_net.trim_end()));
    }
    if options.hidden > 0 {
        text.push_str(&format!("[connected]\noutput={}\nactivation=relu\n\n", options.hidden));
    }
    text.push_str(&format!("[connected]\noutput={}\nactivation=linear\n\n[softmax]\n", options.classes));
    text
}

pub fn write_set(ws: &Workspace, options: &SetOptions) {
    let image_size = if options.image_size > 0 { options.image_size } else { options.size };
    let train = write_images(ws, "images/train", options.classes, options.train_per_class, image_size, options.contrast, 1);
    let valid = write_images(ws, "images/valid", options.classes, options.valid_per_class, image_size, options.contrast, 2);
    ws.write("train.list", train.join("\n") + "\n");
    ws.write("valid.list", valid.join("\n") + "\n");
    ws.write("labels.txt", LABELS[..options.classes].join("\n") + "\n");
    ws.write(
        "t.data",
        format!("classes = {}\ntrain = train.list\nvalid = valid.list\nlabels = labels.txt\nbackup = backup\n", options.classes),
    );
    ws.write("t.cfg", cfg_text(options));
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that the run failed with one `error:` line containing every
/// needle, and did not panic.
pub fn assert_fails(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected a failure, but the run succeeded\nstderr:\n{err}");
    assert!(!err.contains("panicked"), "the run panicked:\n{err}");
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(error_lines.len(), 1, "expected one error line\nstderr:\n{err}");
    for needle in needles {
        assert!(error_lines[0].contains(needle), "the error does not mention {needle:?}:\n{}", error_lines[0]);
    }
}

/// Asserts that the run succeeded without panicking.
pub fn assert_succeeds(out: &Output) {
    let err = stderr(out);
    assert!(out.status.success(), "expected success, got {:?}\nstderr:\n{err}", out.status);
    assert!(!err.contains("panicked"), "the run panicked:\n{err}");
}

/// Parses `top 1: X` from the summary line of a validation run.
pub fn top1(out: &Output) -> f64 {
    let text = stdout(out);
    let line = text.lines().find(|l| l.contains("top 1:")).unwrap_or_else(|| panic!("no summary line in:\n{text}"));
    let after = line.split("top 1:").nth(1).unwrap();
    after.split(',').next().unwrap().trim().parse().unwrap()
}

/// Reads the `seen` field of a `.weights` header (version 0.2: bytes 12..20).
pub fn seen_of(path: &Path) -> u64 {
    let bytes = fs::read(path).unwrap();
    u64::from_le_bytes(bytes[12..20].try_into().unwrap())
}

/// Returns the mnist10k IDX folder beside the repository, or prints a skip
/// message and returns `None` when it is missing.
pub fn mnist10k() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist10k");
    if dir.join("train-images-idx3-ubyte.gz").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: mnist10k not found at {}", dir.display());
        None
    }
}

/// Makes a fresh temporary folder `darknet-<name>-<pid>` with the first
/// `limit` images of mnist10k imported into `mnist/`, a `mnist.data` that
/// points there with `backup=backup`, and `cfg` written as `cfg_file`.
/// Returns `None`, after mnist10k's skip message, when the set is missing.
pub fn mnist_folder(name: &str, limit: usize, cfg_file: &str, cfg: &str) -> Option<PathBuf> {
    let source = mnist10k()?;
    let dir = std::env::temp_dir().join(format!("darknet-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let limit = limit.to_string();
    darknet_in(&dir, &["data", "import-idx", source.to_str().unwrap(), "mnist", "--limit", &limit]);
    fs::write(dir.join(cfg_file), cfg).unwrap();
    fs::write(
        dir.join("mnist.data"),
        "classes=10\ntrain=mnist/train.list\nvalid=mnist/test.list\nlabels=mnist/labels.txt\nbackup=backup\ntop=2\n",
    )
    .unwrap();
    Some(dir)
}

/// Runs the binary with `args` inside `dir` and asserts that it succeeded.
pub fn darknet_in(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(BINARY).args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "darknet {args:?} failed:\n{}\n{}", stdout(&out), stderr(&out));
    out
}
