//! Runs `darknet data import-idx` on small IDX files written here, raw and
//! gzip, and checks the image tree, labels.txt, the list files and the
//! errors for broken input.

use flate2::write::GzEncoder;
use flate2::Compression;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROWS: u32 = 4;
const COLS: u32 = 3;
const DIGITS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];

/// Creates a fresh, empty folder under the system temp folder.
fn temp_folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("darknet-import-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Pixel `j` of image `i`: distinct per image, so swapped images show.
fn pixel(i: usize, j: usize) -> u8 {
    ((i * 37 + j * 11) % 256) as u8
}

fn images_idx(count: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for word in [2051, count as u32, ROWS, COLS] {
        bytes.extend_from_slice(&word.to_be_bytes());
    }
    for i in 0..count {
        bytes.extend((0..(ROWS * COLS) as usize).map(|j| pixel(i, j)));
    }
    bytes
}

fn labels_idx(labels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&2049u32.to_be_bytes());
    bytes.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    bytes.extend_from_slice(labels);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Labels of the train split: every class once, then 3, 1.
fn train_labels() -> Vec<u8> {
    vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 1]
}

fn test_labels() -> Vec<u8> {
    vec![9, 0, 5]
}

/// Writes the four IDX files into `dir`, gzip-compressed with `.gz` names or raw.
fn write_source(dir: &Path, compressed: bool) {
    let files = [
        ("train-images-idx3-ubyte", images_idx(train_labels().len())),
        ("train-labels-idx1-ubyte", labels_idx(&train_labels())),
        ("t10k-images-idx3-ubyte", images_idx(test_labels().len())),
        ("t10k-labels-idx1-ubyte", labels_idx(&test_labels())),
    ];
    for (name, bytes) in files {
        if compressed {
            fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
        } else {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

fn import(source: &Path, out: &Path, options: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_darknet"))
        .args(["data", "import-idx"])
        .arg(source)
        .arg(out)
        .args(options)
        .output()
        .expect("cannot start the darknet binary")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_success(output: &Output) {
    assert!(output.status.success(), "import failed: {}", stderr_of(output));
}

fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

/// Names of the files in `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Checks `<out>/<split>/` and `<out>/<split>.list` against `labels`.
fn check_split(out: &Path, split: &str, labels: &[u8], class_names: &[&str], extension: &str) {
    let out = out.canonicalize().unwrap();
    let expected: Vec<String> = labels.iter().enumerate().map(|(i, &l)| format!("{i}_{}.{extension}", class_names[l as usize])).collect();
    let mut sorted = expected.clone();
    sorted.sort();
    assert_eq!(file_names(&out.join(split)), sorted);

    let list = read_lines(&out.join(format!("{split}.list")));
    let listed: Vec<PathBuf> = list.iter().map(PathBuf::from).collect();
    let expected_paths: Vec<PathBuf> = expected.iter().map(|name| out.join(split).join(name)).collect();
    assert_eq!(listed, expected_paths);
    for path in &listed {
        assert!(path.is_absolute(), "{}", path.display());
        assert!(path.is_file(), "{}", path.display());
    }
}

#[test]
fn gzip_source_to_jpg_tree() {
    let dir = temp_folder("gzip");
    let (source, out) = (dir.join("src"), dir.join("out"));
    fs::create_dir_all(&source).unwrap();
    write_source(&source, true);

    let output = import(&source, &out, &[]);
    assert_success(&output);

    assert_eq!(read_lines(&out.join("labels.txt")), DIGITS);
    check_split(&out, "train", &train_labels(), &DIGITS, "jpg");
    check_split(&out, "test", &test_labels(), &DIGITS, "jpg");
    let decoded = image::open(out.join("train/3_three.jpg")).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (COLS, ROWS));
    assert_eq!(decoded.color(), image::ColorType::L8);
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("12 train and 3 test images"), "{summary}");

    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn raw_source_to_exact_png() {
    let dir = temp_folder("raw");
    let (source, out) = (dir.join("src"), dir.join("out"));
    fs::create_dir_all(&source).unwrap();
    write_source(&source, false);

    assert_success(&import(&source, &out, &["--format", "png"]));

    check_split(&out, "train", &train_labels(), &DIGITS, "png");
    check_split(&out, "test", &test_labels(), &DIGITS, "png");
    for (index, name) in [(0, "train/0_zero.png"), (11, "train/11_one.png"), (2, "test/2_five.png")] {
        let decoded = image::open(out.join(name)).unwrap().into_luma8();
        assert_eq!(decoded.dimensions(), (COLS, ROWS));
        let expected: Vec<u8> = (0..(ROWS * COLS) as usize).map(|j| pixel(index, j)).collect();
        assert_eq!(decoded.into_raw(), expected, "{name}");
    }
    let leftovers: Vec<String> = file_names(&out.join("train")).into_iter().filter(|n| n.ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fashion_and_file_labels() {
    let dir = temp_folder("labels");
    let source = dir.join("src");
    fs::create_dir_all(&source).unwrap();
    write_source(&source, true);

    let fashion = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"];
    let out = dir.join("fashion");
    assert_success(&import(&source, &out, &["--labels", "fashion"]));
    assert_eq!(read_lines(&out.join("labels.txt")), fashion);
    check_split(&out, "train", &train_labels(), &fashion, "jpg");

    let names = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"];
    let labels_file = dir.join("names.txt");
    fs::write(&labels_file, names.join("\r\n")).unwrap();
    let out = dir.join("custom");
    assert_success(&import(&source, &out, &["--labels", labels_file.to_str().unwrap()]));
    assert_eq!(read_lines(&out.join("labels.txt")), names);
    check_split(&out, "test", &test_labels(), &names, "jpg");

    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn limit_takes_first_images() {
    let dir = temp_folder("limit");
    let (source, out) = (dir.join("src"), dir.join("out"));
    fs::create_dir_all(&source).unwrap();
    write_source(&source, true);

    assert_success(&import(&source, &out, &["--limit", "2"]));
    check_split(&out, "train", &train_labels()[..2], &DIGITS, "jpg");
    check_split(&out, "test", &test_labels()[..2], &DIGITS, "jpg");

    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn existing_output_needs_force() {
    let dir = temp_folder("force");
    let (source, out) = (dir.join("src"), dir.join("out"));
    fs::create_dir_all(&source).unwrap();
    write_source(&source, true);
    assert_success(&import(&source, &out, &[]));
    fs::write(out.join("train/old_seven.jpg"), b"stale").unwrap();

    let output = import(&source, &out, &[]);
    assert!(!output.status.success());
    let message = stderr_of(&output);
    assert!(message.contains("is not empty"), "{message}");
    assert!(message.contains("--force"), "{message}");

    let output = import(&source, &out, &["--force"]);
    assert_success(&output);
    let message = stderr_of(&output);
    assert!(message.contains("1 files that this import did not write"), "{message}");
    assert_eq!(read_lines(&out.join("train.list")).len(), train_labels().len());

    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_file_is_error() {
    let dir = temp_folder("missing");
    let (source, out) = (dir.join("src"), dir.join("out"));
    fs::create_dir_all(&source).unwrap();
    write_source(&source, true);
    fs::remove_file(source.join("t10k-labels-idx1-ubyte.gz")).unwrap();

    let output = import(&source, &out, &[]);
    assert!(!output.status.success());
    let message = stderr_of(&output);
    assert!(message.contains("t10k-labels-idx1-ubyte.gz"), "{message}");
    assert!(message.contains("not found"), "{message}");
    assert!(!out.join("train").exists(), "no image may be written when an input is missing");

    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_magic_is_error() {
    let dir = temp_folder("magic");
    let (source, out) = (dir.join("src"), dir.join("out"));
    fs::create_dir_all(&source).unwrap();
    write_source(&source, false);
    let mut bytes = images_idx(test_labels().len());
    bytes[3] = 0x04;
    fs::write(source.join("t10k-images-idx3-ubyte"), bytes).unwrap();

    let output = import(&source, &out, &[]);
    assert!(!output.status.success());
    let message = stderr_of(&output);
    assert!(message.contains("t10k-images-idx3-ubyte"), "{message}");
    assert!(message.contains("invalid magic number 2052"), "{message}");
    assert!(!out.join("train").exists());

    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn count_mismatch_is_error() {
    let dir = temp_folder("count");
    let (source, out) = (dir.join("src"), dir.join("out"));
    fs::create_dir_all(&source).unwrap();
    write_source(&source, true);
    fs::write(source.join("train-labels-idx1-ubyte.gz"), gzip(&labels_idx(&[1, 2, 3]))).unwrap();

    let output = import(&source, &out, &[]);
    assert!(!output.status.success());
    let message = stderr_of(&output);
    assert!(message.contains("train-images-idx3-ubyte.gz contains 12 images"), "{message}");
    assert!(message.contains("train-labels-idx1-ubyte.gz contains 3 labels"), "{message}");

    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn label_without_name_is_error() {
    let dir = temp_folder("range");
    let (source, out) = (dir.join("src"), dir.join("out"));
    fs::create_dir_all(&source).unwrap();
    write_source(&source, false);
    fs::write(source.join("t10k-labels-idx1-ubyte"), labels_idx(&[9, 10, 5])).unwrap();

    let output = import(&source, &out, &[]);
    assert!(!output.status.success());
    let message = stderr_of(&output);
    assert!(message.contains("t10k-labels-idx1-ubyte entry 1 has label 10"), "{message}");

    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ambiguous_file_labels_are_error() {
    let dir = temp_folder("ambiguous");
    let (source, out) = (dir.join("src"), dir.join("out"));
    fs::create_dir_all(&source).unwrap();
    write_source(&source, true);
    let labels_file = dir.join("digits.txt");
    fs::write(&labels_file, "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n").unwrap();

    let output = import(&source, &out, &["--labels", labels_file.to_str().unwrap()]);
    assert!(!output.status.success());
    let message = stderr_of(&output);
    assert!(message.contains("train-labels-idx1-ubyte.gz"), "{message}");
    assert!(message.contains("equally"), "{message}");
    assert!(!out.join("train").exists());

    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn quality_with_png_is_error() {
    let dir = temp_folder("quality");
    let output = import(&dir, &dir.join("out"), &["--format", "png", "--quality", "80"]);
    assert!(!output.status.success());
    let message = stderr_of(&output);
    assert!(message.contains("--quality 80 applies only to --format jpg"), "{message}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mnist_subset_with_limit() {
    let source = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist10k"));
    if !source.is_dir() {
        eprintln!("skipped: {} does not exist", source.display());
        return;
    }
    let dir = temp_folder("mnist10k");
    let out = dir.join("mnist");

    let output = import(source, &out, &["--limit", "200"]);
    assert_success(&output);

    assert_eq!(read_lines(&out.join("labels.txt")), DIGITS);
    assert_eq!(file_names(&out.join("train")).len(), 200);
    assert_eq!(file_names(&out.join("test")).len(), 200);
    assert_eq!(read_lines(&out.join("train.list")).len(), 200);
    assert_eq!(read_lines(&out.join("test.list")).len(), 200);
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("200 train and 200 test images (28x28"), "{summary}");

    fs::remove_dir_all(&dir).unwrap();
}
