//! Readers for IDX files, the format that MNIST and Fashion-MNIST ship in.
//!
//! An IDX file starts with a big-endian `u32` magic number: two zero bytes,
//! a type code (0x08 is unsigned byte, the only type read here) and the
//! number of dimensions. Then come one big-endian `u32` per dimension and the
//! data, one byte per value, in row-major order.
//!
//! - images: magic 2051 (0x00000803), then `count rows cols`, then
//!   `count * rows * cols` pixels (0 is background);
//! - labels: magic 2049 (0x00000801), then `count`, then `count` labels.
//!
//! A file may be gzip-compressed. Compression is detected from the gzip magic
//! bytes 0x1f 0x8b, so the file name need not end in `.gz`.

use anyhow::{bail, Context, Result};
use flate2::read::MultiGzDecoder;
use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

/// Magic number of an IDX images file (unsigned bytes, 3 dimensions).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;

/// Magic number of an IDX labels file (unsigned bytes, 1 dimension).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Images of one IDX file: `pixels` is `[count][rows][cols]`, 8 bits each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Returns the `rows * cols` pixels of image `index` (row-major).
    pub fn image(&self, index: usize) -> &[u8] {
        let size = self.rows * self.cols;
        &self.pixels[index * size..(index + 1) * size]
    }
}

/// Reads an IDX images file, gzip-compressed or raw.
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let bytes = read_file(path, "images")?;
    parse_images(&bytes, path)
}

/// Reads an IDX labels file, gzip-compressed or raw.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_file(path, "labels")?;
    parse_labels(&bytes, path)
}

/// Parses the bytes of an IDX images file (gzip-compressed or raw).
/// `path` only names the file in error messages.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<IdxImages> {
    let bytes = decompress_if_gzip(bytes, path)?;
    check_magic(&bytes, path, IMAGES_MAGIC)?;
    let count = header_field(&bytes, path, 1, "image count")?;
    let rows = header_field(&bytes, path, 2, "rows")?;
    let cols = header_field(&bytes, path, 3, "columns")?;
    let header = 16;

    for (value, field) in [(count, "image count"), (rows, "rows"), (cols, "columns")] {
        if value == 0 {
            bail!(
                "IDX images file {}: the header gives {field} = 0, so the file contains no pixels; use an images file with at least one image of at least 1x1 pixels",
                path.display()
            );
        }
    }
    let expected = count
        .checked_mul(rows)
        .and_then(|n| n.checked_mul(cols))
        .with_context(|| {
            format!(
                "IDX images file {}: the header gives {count} images of {rows}x{cols} pixels, which is too large to address; the header is damaged, so copy the file again",
                path.display()
            )
        })?;
    check_data_length(&bytes, path, header, expected, &format!("{count} images of {rows}x{cols} pixels"))?;

    Ok(IdxImages { count, rows, cols, pixels: bytes[header..].to_vec() })
}

/// Parses the bytes of an IDX labels file (gzip-compressed or raw).
/// `path` only names the file in error messages.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let bytes = decompress_if_gzip(bytes, path)?;
    check_magic(&bytes, path, LABELS_MAGIC)?;
    let count = header_field(&bytes, path, 1, "label count")?;
    let header = 8;

    if count == 0 {
        bail!(
            "IDX labels file {}: the header gives label count = 0, so the file contains no labels; use a labels file with at least one label",
            path.display()
        );
    }
    check_data_length(&bytes, path, header, count, &format!("{count} labels"))?;

    Ok(bytes[header..].to_vec())
}

/// Fails unless the images file and the labels file contain the same number
/// of entries, because the i-th label belongs to the i-th image.
pub fn check_same_count(images: &IdxImages, images_path: &Path, labels: &[u8], labels_path: &Path) -> Result<()> {
    if images.count != labels.len() {
        bail!(
            "{} contains {} images but {} contains {} labels; each image needs exactly one label, so use the labels file that belongs to these images",
            images_path.display(),
            images.count,
            labels_path.display(),
            labels.len()
        );
    }
    Ok(())
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read IDX {what} file {}", path.display()))
}

/// Returns the data of a gzip stream (all members), or `bytes` unchanged when
/// they do not start with the gzip magic.
fn decompress_if_gzip<'a>(bytes: &'a [u8], path: &Path) -> Result<Cow<'a, [u8]>> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut data = Vec::new();
    MultiGzDecoder::new(bytes).read_to_end(&mut data).with_context(|| {
        format!(
            "cannot decompress {}: it starts like a gzip file but its gzip data is invalid or truncated; copy the file again (gzip -t {} checks it)",
            path.display(),
            path.display()
        )
    })?;
    Ok(Cow::Owned(data))
}

fn check_magic(bytes: &[u8], path: &Path, expected: u32) -> Result<()> {
    let (what, dimensions) = if expected == IMAGES_MAGIC { ("images", 3) } else { ("labels", 1) };
    if bytes.is_empty() {
        bail!("IDX {what} file {} is empty (0 bytes); copy the file again", path.display());
    }
    let found = header_field(bytes, path, 0, "magic number")?;
    if found == expected as usize {
        return Ok(());
    }

    let hint = match found as u32 {
        IMAGES_MAGIC => "it is an IDX images file; pass it as the images file and give the matching labels file here",
        LABELS_MAGIC => "it is an IDX labels file; pass it as the labels file and give the matching images file here",
        magic if magic >> 16 == 0 && (magic >> 8) & 0xff != 0x08 => {
            "its data type is not unsigned byte (type code 0x08), which is the only type supported; convert the data to 8-bit values"
        }
        _ => "the file is not an IDX file or is damaged; check that it is the right file and copy it again",
    };
    bail!(
        "IDX {what} file {}: invalid magic number {found} (0x{found:08x}), expected {expected} (0x{expected:08x}: unsigned bytes, {dimensions} dimension{}); {hint}",
        path.display(),
        if dimensions == 1 { "" } else { "s" }
    )
}

/// Reads the big-endian `u32` at header position `index` (0 is the magic).
fn header_field(bytes: &[u8], path: &Path, index: usize, field: &str) -> Result<usize> {
    let start = index * 4;
    let Some(chunk) = bytes.get(start..start + 4) else {
        bail!(
            "IDX file {} is truncated: it has {} bytes, too short for the header field '{field}' at bytes {}..{}; copy the file again",
            path.display(),
            bytes.len(),
            start,
            start + 4
        );
    };
    let mut word = [0u8; 4];
    word.copy_from_slice(chunk);
    Ok(u32::from_be_bytes(word) as usize)
}

/// Fails unless exactly `expected` data bytes follow the `header` bytes.
fn check_data_length(bytes: &[u8], path: &Path, header: usize, expected: usize, described: &str) -> Result<()> {
    let found = bytes.len() - header;
    if found < expected {
        bail!(
            "IDX file {} is truncated: its header gives {described} ({expected} data bytes), but only {found} bytes follow the {header}-byte header; copy the file again",
            path.display()
        );
    }
    if found > expected {
        bail!(
            "IDX file {}: its header gives {described} ({expected} data bytes), but {found} bytes follow the {header}-byte header; the header count is wrong or another file was appended, so copy the file again",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    fn images_file(magic: u32, count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [magic, count, rows, cols] {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        bytes.extend_from_slice(pixels);
        bytes
    }

    fn labels_file(magic: u32, count: u32, labels: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&magic.to_be_bytes());
        bytes.extend_from_slice(&count.to_be_bytes());
        bytes.extend_from_slice(labels);
        bytes
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// Two 2x3 images with distinct pixel values.
    fn two_images() -> Vec<u8> {
        let pixels: Vec<u8> = (0..12).map(|i| i * 20).collect();
        images_file(IMAGES_MAGIC, 2, 2, 3, &pixels)
    }

    fn error_of<T: std::fmt::Debug>(result: Result<T>) -> String {
        format!("{:#}", result.unwrap_err())
    }

    #[test]
    fn raw_images_parse() {
        let images = parse_images(&two_images(), Path::new("a-idx3-ubyte")).unwrap();
        assert_eq!((images.count, images.rows, images.cols), (2, 2, 3));
        assert_eq!(images.image(0), &[0, 20, 40, 60, 80, 100]);
        assert_eq!(images.image(1), &[120, 140, 160, 180, 200, 220]);
    }

    #[test]
    fn gzip_images_parse() {
        let raw = parse_images(&two_images(), Path::new("a")).unwrap();
        let compressed = parse_images(&gzip(&two_images()), Path::new("a.gz")).unwrap();
        assert_eq!(raw, compressed);
    }

    #[test]
    fn gzip_detected_without_gz_name() {
        let images = parse_images(&gzip(&two_images()), Path::new("train-images-idx3-ubyte")).unwrap();
        assert_eq!(images.count, 2);
    }

    #[test]
    fn multi_member_gzip_parses() {
        let bytes = two_images();
        let mut joined = gzip(&bytes[..10]);
        joined.extend(gzip(&bytes[10..]));
        let images = parse_images(&joined, Path::new("a.gz")).unwrap();
        assert_eq!(images.image(1)[5], 220);
    }

    #[test]
    fn raw_and_gzip_labels_parse() {
        let bytes = labels_file(LABELS_MAGIC, 3, &[7, 0, 9]);
        assert_eq!(parse_labels(&bytes, Path::new("l")).unwrap(), vec![7, 0, 9]);
        assert_eq!(parse_labels(&gzip(&bytes), Path::new("l.gz")).unwrap(), vec![7, 0, 9]);
    }

    #[test]
    fn labels_file_as_images_is_error() {
        let bytes = labels_file(LABELS_MAGIC, 3, &[7, 0, 9]);
        let err = error_of(parse_images(&bytes, Path::new("/d/train-labels-idx1-ubyte")));
        assert!(err.contains("/d/train-labels-idx1-ubyte"), "{err}");
        assert!(err.contains("invalid magic number 2049"), "{err}");
        assert!(err.contains("it is an IDX labels file"), "{err}");
    }

    #[test]
    fn images_file_as_labels_is_error() {
        let err = error_of(parse_labels(&two_images(), Path::new("x-idx3")));
        assert!(err.contains("invalid magic number 2051"), "{err}");
        assert!(err.contains("it is an IDX images file"), "{err}");
    }

    #[test]
    fn unknown_magic_is_error() {
        let bytes = images_file(0x1234_5678, 2, 2, 3, &[0; 12]);
        let err = error_of(parse_images(&bytes, Path::new("junk.bin")));
        assert!(err.contains("junk.bin"), "{err}");
        assert!(err.contains("0x12345678"), "{err}");
        assert!(err.contains("not an IDX file"), "{err}");
    }

    #[test]
    fn float_idx_type_is_error() {
        let bytes = images_file(0x0000_0D03, 1, 1, 1, &[0; 4]);
        let err = error_of(parse_images(&bytes, Path::new("f.idx")));
        assert!(err.contains("not unsigned byte"), "{err}");
    }

    #[test]
    fn empty_file_is_error() {
        let err = error_of(parse_images(&[], Path::new("empty-idx3")));
        assert!(err.contains("empty-idx3 is empty"), "{err}");
    }

    #[test]
    fn truncated_header_is_error() {
        let err = error_of(parse_images(&two_images()[..10], Path::new("short")));
        assert!(err.contains("short is truncated"), "{err}");
        assert!(err.contains("has 10 bytes"), "{err}");
        assert!(err.contains("'rows'"), "{err}");
    }

    #[test]
    fn truncated_pixels_are_error() {
        let bytes = two_images();
        let err = error_of(parse_images(&bytes[..bytes.len() - 1], Path::new("cut.gz")));
        assert!(err.contains("cut.gz is truncated"), "{err}");
        assert!(err.contains("2 images of 2x3 pixels (12 data bytes)"), "{err}");
        assert!(err.contains("only 11 bytes"), "{err}");
    }

    #[test]
    fn truncated_labels_are_error() {
        let bytes = labels_file(LABELS_MAGIC, 4, &[1, 2, 3]);
        let err = error_of(parse_labels(&bytes, Path::new("l4")));
        assert!(err.contains("l4 is truncated"), "{err}");
        assert!(err.contains("4 labels"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_error() {
        let mut bytes = two_images();
        bytes.push(0);
        let err = error_of(parse_images(&bytes, Path::new("long")));
        assert!(err.contains("but 13 bytes follow"), "{err}");
    }

    #[test]
    fn truncated_gzip_is_error() {
        let compressed = gzip(&two_images());
        let err = error_of(parse_images(&compressed[..compressed.len() / 2], Path::new("half.gz")));
        assert!(err.contains("cannot decompress half.gz"), "{err}");
    }

    #[test]
    fn zero_sizes_are_errors() {
        let err = error_of(parse_images(&images_file(IMAGES_MAGIC, 0, 28, 28, &[]), Path::new("z")));
        assert!(err.contains("image count = 0"), "{err}");
        let err = error_of(parse_images(&images_file(IMAGES_MAGIC, 2, 0, 28, &[]), Path::new("z")));
        assert!(err.contains("rows = 0"), "{err}");
        let err = error_of(parse_images(&images_file(IMAGES_MAGIC, 2, 28, 0, &[]), Path::new("z")));
        assert!(err.contains("columns = 0"), "{err}");
        let err = error_of(parse_labels(&labels_file(LABELS_MAGIC, 0, &[]), Path::new("z")));
        assert!(err.contains("label count = 0"), "{err}");
    }

    #[test]
    fn oversized_header_is_error() {
        let bytes = images_file(IMAGES_MAGIC, u32::MAX, u32::MAX, u32::MAX, &[0; 4]);
        assert!(parse_images(&bytes, Path::new("huge")).is_err());
    }

    #[test]
    fn count_mismatch_is_error() {
        let images = parse_images(&two_images(), Path::new("i")).unwrap();
        let labels = vec![1, 2, 3];
        let err = error_of(check_same_count(&images, Path::new("/s/img"), &labels, Path::new("/s/lab")));
        assert!(err.contains("/s/img contains 2 images"), "{err}");
        assert!(err.contains("/s/lab contains 3 labels"), "{err}");
        assert!(check_same_count(&images, Path::new("i"), &labels[..2], Path::new("l")).is_ok());
    }

    #[test]
    fn read_files_by_content_not_name() {
        let dir = std::env::temp_dir().join(format!("darknet-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let raw_named_gz = dir.join("raw-idx3-ubyte.gz");
        std::fs::write(&raw_named_gz, two_images()).unwrap();
        let labels_path = dir.join("labels-idx1-ubyte");
        std::fs::write(&labels_path, gzip(&labels_file(LABELS_MAGIC, 2, &[3, 4]))).unwrap();

        assert_eq!(read_images(&raw_named_gz).unwrap().count, 2);
        assert_eq!(read_labels(&labels_path).unwrap(), vec![3, 4]);
        let missing = dir.join("missing-idx3-ubyte");
        let err = error_of(read_images(&missing));
        assert!(err.contains("cannot read IDX images file"), "{err}");
        assert!(err.contains("missing-idx3-ubyte"), "{err}");

        std::fs::remove_dir_all(&dir).unwrap();
    }
}
