//! `darknet data import-idx`: IDX files (MNIST, Fashion-MNIST) to Darknet's
//! image-tree layout.
//!
//! From SOURCE it reads `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` (each raw or `.gz`)
//! and writes under OUT:
//! - `train/<index>_<label>.jpg` and `test/<index>_<label>.jpg`, one grayscale
//!   image per IDX entry, `<index>` counting from 0 within the split;
//! - `labels.txt`, one class name per line in class order;
//! - `train.list` and `test.list`, the absolute image paths, one per line.
//!
//! Every file name must resolve to its own class under Darknet's label rule
//! ([`label_of`]), so the command checks all names before it writes anything.
//!
//! The default JPEG quality is 90. It was measured on 10,000 real MNIST
//! digits (8,004 train, 1,996 test) by decoding every image again with the
//! `image` crate 0.25 and comparing it to the IDX bytes. The absolute pixel
//! error is 1.14 on average and 22 at most (of 255). The zip of that
//! `mnist/` tree without list files (Info-ZIP 3.0, `zip -X`) is 7,919,585
//! bytes. Quality 75 gives 6.85 MB with errors of 2.5 (mean) and 58 (max),
//! and quality 95 gives 8.88 MB with 0.60 and 11. Quality matters less than
//! it seems because each 28x28 JPEG of about 690 bytes carries 326 bytes of
//! headers and standard Huffman tables. `--format png` is lossless and its
//! zip is smaller (5.2 MB), but Darknet workshops expect `.jpg` files.

use crate::data::idx::{check_same_count, read_images, read_labels, IdxImages};
use crate::data::lists::{label_of, read_lines};
use crate::formats::atomic::write_atomic;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// JPEG quality used when `--quality` is not given.
pub const DEFAULT_QUALITY: u8 = 90;

/// MNIST class names in class order (digit 0 to 9).
pub const MNIST_LABELS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];

/// Fashion-MNIST class names in class order, spelled for file names. The
/// original names are T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal,
/// Shirt, Sneaker, Bag and Ankle boot, and a '/' cannot be part of a file
/// name. `tshirt` contains `shirt`, but the longest label occurring in a file
/// name wins, so both resolve to their own class.
pub const FASHION_LABELS: [&str; 10] =
    ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"];

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Folder with train-images-idx3-ubyte, train-labels-idx1-ubyte,
    /// t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each raw or with
    /// .gz (the raw file is used when both exist).
    pub source: PathBuf,
    /// Output folder. The import writes train/, test/, labels.txt, train.list and test.list inside it.
    pub out: PathBuf,
    /// Class names: `mnist` (zero..nine), `fashion` (tshirt, trouser,
    /// pullover, dress, coat, sandal, shirt, sneaker, bag, ankle_boot) or a
    /// file with one name per line in class order (write ./mnist for a file
    /// of that name).
    #[arg(long, default_value = "mnist", value_name = "mnist|fashion|FILE")]
    pub labels: String,
    /// JPEG quality from 1 to 100 [default: 90]. Only for --format jpg.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: Option<u8>,
    /// Image file format.
    #[arg(long, value_enum, default_value_t = ImageFormat::Jpg)]
    pub format: ImageFormat,
    /// Import only the first N images of each split.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Write into OUT even if OUT/train or OUT/test already contains files,
    /// replacing files of the same name.
    #[arg(long)]
    pub force: bool,
}

/// Image file format of the imported images.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Grayscale JPEG (lossy, see --quality).
    Jpg,
    /// Grayscale PNG (lossless).
    Png,
}

impl ImageFormat {
    fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpg => "jpg",
            ImageFormat::Png => "png",
        }
    }
}

/// One split (train or test) read from its pair of IDX files.
struct Split {
    name: &'static str,
    images: IdxImages,
    /// File names in `<index>_<label>.<ext>` form, one per imported image.
    file_names: Vec<String>,
}

pub fn run(args: &ImportArgs) -> Result<()> {
    let start = Instant::now();
    let quality = match (args.format, args.quality) {
        (ImageFormat::Png, Some(q)) => bail!("--quality {q} applies only to --format jpg; PNG is lossless, so leave out --quality"),
        (_, q) => q.unwrap_or(DEFAULT_QUALITY),
    };
    if args.limit == Some(0) {
        bail!("--limit 0 would import no images; give at least 1, or leave out --limit to import all");
    }
    let class_names = class_names(&args.labels)?;

    // Read and check everything before the first file is written.
    let mut splits = Vec::new();
    for (name, prefix) in [("train", "train"), ("test", "t10k")] {
        let split = read_split(&args.source, name, prefix, &class_names, args.limit, args.format)?;
        splits.push(split);
    }
    let (train, test) = (&splits[0].images, &splits[1].images);
    if (train.rows, train.cols) != (test.rows, test.cols) {
        bail!(
            "the train images in {} are {}x{} pixels but the test images are {}x{}; a classifier needs one input size, so import files of the same data set",
            args.source.display(),
            train.rows,
            train.cols,
            test.rows,
            test.cols
        );
    }
    check_out_folder(&args.out, args.force)?;

    fs::create_dir_all(&args.out).with_context(|| format!("cannot create output folder {}", args.out.display()))?;
    let out =
        args.out.canonicalize().with_context(|| format!("cannot resolve the absolute path of output folder {}", args.out.display()))?;
    let mut written = Vec::new();
    for split in &splits {
        let paths = write_split(&out, split, args.format, quality)?;
        write_lines(&out.join(format!("{}.list", split.name)), paths.iter().map(|p| p.to_string_lossy().into_owned()))?;
        written.push(paths.len());
    }
    write_lines(&out.join("labels.txt"), class_names.iter().cloned())?;

    if args.force {
        for split in &splits {
            warn_about_other_files(&out.join(split.name), &split.file_names)?;
        }
    }
    let (rows, cols) = (train.rows, train.cols);
    let encoding = match args.format {
        ImageFormat::Jpg => format!("jpg, quality {quality}"),
        ImageFormat::Png => "png".to_string(),
    };
    println!(
        "imported {} train and {} test images ({rows}x{cols}, {encoding}, {} classes) into {} in {:.1} s",
        written[0],
        written[1],
        class_names.len(),
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Returns the class names for `--labels`: a built-in set or a labels file.
fn class_names(labels: &str) -> Result<Vec<String>> {
    let names: Vec<String> = match labels {
        "mnist" => MNIST_LABELS.iter().map(|s| s.to_string()).collect(),
        "fashion" => FASHION_LABELS.iter().map(|s| s.to_string()).collect(),
        file => read_lines(Path::new(file), "labels").with_context(|| {
            format!("--labels {file} is neither 'mnist' nor 'fashion', so it must be a labels file with one class name per line")
        })?,
    };
    if names.is_empty() {
        bail!("labels file {labels} contains no labels; write one class name per line, in class order");
    }
    for (index, name) in names.iter().enumerate() {
        if name.contains(['/', '\\']) || name.chars().any(char::is_control) {
            bail!(
                "labels file {labels}: label '{name}' (line {}) contains a path separator or a control character, so it cannot be part of a file name; rename it, e.g. '{}'",
                index + 1,
                name.replace(['/', '\\'], "_").replace(char::is_control, "")
            );
        }
        if names[..index].contains(name) {
            bail!("labels file {labels}: label '{name}' appears twice; each class needs its own name");
        }
    }
    Ok(names)
}

/// Finds `<prefix>-<kind>-idx<n>-ubyte`, raw or `.gz`, preferring the raw file.
fn find_idx_file(source: &Path, base: &str) -> Result<PathBuf> {
    let raw = source.join(base);
    let gz = source.join(format!("{base}.gz"));
    if raw.is_file() {
        return Ok(raw);
    }
    if gz.is_file() {
        return Ok(gz);
    }
    bail!(
        "IDX file not found: neither {} nor {} exists; SOURCE must be the folder with the four MNIST-style files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each raw or .gz)",
        raw.display(),
        gz.display()
    )
}

/// Reads one split, applies `limit`, and makes and checks its file names.
fn read_split(
    source: &Path,
    name: &'static str,
    prefix: &str,
    class_names: &[String],
    limit: Option<usize>,
    format: ImageFormat,
) -> Result<Split> {
    let images_path = find_idx_file(source, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find_idx_file(source, &format!("{prefix}-labels-idx1-ubyte"))?;
    let mut images = read_images(&images_path)?;
    let mut labels = read_labels(&labels_path)?;
    check_same_count(&images, &images_path, &labels, &labels_path)?;

    if let Some(limit) = limit.filter(|&l| l < images.count) {
        images.pixels.truncate(limit * images.rows * images.cols);
        images.count = limit;
        labels.truncate(limit);
    }

    let mut file_names = Vec::with_capacity(labels.len());
    for (index, &label) in labels.iter().enumerate() {
        let Some(class_name) = class_names.get(label as usize) else {
            bail!(
                "{} entry {index} has label {label}, but only {} class names are given (labels 0..{}); pass --labels FILE with a name for every label value",
                labels_path.display(),
                class_names.len(),
                class_names.len() - 1
            );
        };
        let file_name = format!("{index}_{class_name}.{}", format.extension());
        let resolved = label_of(Path::new(&file_name), class_names)
            .with_context(|| format!("the class names cannot label the image files of {}", labels_path.display()))?;
        if resolved != label as usize {
            bail!(
                "file name {file_name} would be read back as class {resolved} ('{}') instead of {label} ('{class_name}'), because the longest label occurring in a file name wins; rename the labels so that no label contains a longer one together with the digits of an index or the extension",
                class_names[resolved]
            );
        }
        file_names.push(file_name);
    }
    Ok(Split { name, images, file_names })
}

/// Fails if OUT/train or OUT/test already contains entries, unless `force`.
fn check_out_folder(out: &Path, force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    for split in ["train", "test"] {
        let dir = out.join(split);
        let Ok(mut entries) = fs::read_dir(&dir) else {
            continue;
        };
        if entries.next().is_some() {
            bail!(
                "output folder {} is not empty; choose another OUT, delete it, or pass --force to write over files of the same name",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Encodes and writes the images of `split` into `out/<split>/`. Returns
/// their absolute paths in index order.
fn write_split(out: &Path, split: &Split, format: ImageFormat, quality: u8) -> Result<Vec<PathBuf>> {
    let dir = out.join(split.name);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    let (width, height) = (split.images.cols as u32, split.images.rows as u32);

    let mut paths = Vec::with_capacity(split.file_names.len());
    let mut encoded = Vec::new();
    for (index, file_name) in split.file_names.iter().enumerate() {
        let path = dir.join(file_name);
        encoded.clear();
        let pixels = split.images.image(index);
        let result = match format {
            ImageFormat::Jpg => JpegEncoder::new_with_quality(&mut encoded, quality).encode(pixels, width, height, ExtendedColorType::L8),
            ImageFormat::Png => PngEncoder::new(&mut encoded).write_image(pixels, width, height, ExtendedColorType::L8),
        };
        result.with_context(|| format!("cannot encode image {} ({width}x{height} pixels)", path.display()))?;
        write_through_temporary(&path, &encoded)?;
        paths.push(path);
    }
    Ok(paths)
}

/// Writes `bytes` to a temporary file next to `target` and renames it to
/// `target`, so an interrupted run never leaves a partial image under the
/// final name.
// NOTE: unlike `write_atomic`, this does not fsync each image (tens of
// thousands of fsyncs would dominate the run time), so after a power loss
// an image may be empty. The list files are written with `write_atomic`.
fn write_through_temporary(target: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = target.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = fs::write(&temporary, bytes).with_context(|| format!("cannot write {}", temporary.display())).and_then(|()| {
        fs::rename(&temporary, target).with_context(|| format!("cannot rename {} to {}", temporary.display(), target.display()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// Writes one line per item (`\n` endings) through `write_atomic`.
fn write_lines(path: &Path, lines: impl Iterator<Item = String>) -> Result<()> {
    write_atomic(path, |writer: &mut dyn Write| {
        for line in lines {
            writeln!(writer, "{line}")?;
        }
        Ok(())
    })
}

/// Warns on stderr about files in `dir` that this run did not write, because
/// a list made with `find` would include them.
fn warn_about_other_files(dir: &Path, written: &[String]) -> Result<()> {
    let written: HashSet<&str> = written.iter().map(String::as_str).collect();
    let mut others = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list folder {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list folder {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !written.contains(name.as_str()) {
            others.push(name);
        }
    }
    if !others.is_empty() {
        others.sort();
        crate::note!(
            "warning: {} contains {} files that this import did not write (e.g. {}); the list files leave them out, but `find` would include them, so delete them if they are from an earlier import",
            dir.display(),
            others.len(),
            others[0]
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fashion_names_resolve_to_own_class() {
        let labels = owned(&FASHION_LABELS);
        for (class, name) in FASHION_LABELS.iter().enumerate() {
            for index in [0, 7, 12, 59999] {
                for ext in ["jpg", "png"] {
                    let path = PathBuf::from(format!("/data/fashion/train/{index}_{name}.{ext}"));
                    assert_eq!(label_of(&path, &labels).unwrap(), class, "{}", path.display());
                }
            }
        }
    }

    #[test]
    fn mnist_names_resolve_to_own_class() {
        let labels = owned(&MNIST_LABELS);
        for (class, name) in MNIST_LABELS.iter().enumerate() {
            let path = PathBuf::from(format!("/data/mnist/test/1234_{name}.jpg"));
            assert_eq!(label_of(&path, &labels).unwrap(), class, "{}", path.display());
        }
    }

    #[test]
    fn built_in_names_are_file_name_safe() {
        for name in MNIST_LABELS.iter().chain(FASHION_LABELS.iter()) {
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
        }
    }
}
