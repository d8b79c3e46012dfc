//! Binary files: `.weights`, `.qweights`, `.qparams`, and the atomic writer
//! they all go through.

pub mod atomic;
pub mod qfiles;
pub mod weights;

use anyhow::{bail, Result};
use std::path::Path;

/// The kind of a parameter file, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Weights,
    QWeights,
    QParams,
}

impl FileKind {
    /// Returns the kind that the file name's extension implies. `.qweights`
    /// and `.qparams` are the quantized files. Everything else counts as
    /// Darknet `.weights`, including the `.backup` checkpoints of
    /// `train_randseq` (same format) and names without an extension.
    pub fn of(path: &Path) -> FileKind {
        match path.extension().and_then(|e| e.to_str()) {
            Some("qweights") => FileKind::QWeights,
            Some("qparams") => FileKind::QParams,
            _ => FileKind::Weights,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            FileKind::Weights => "an FP32 .weights file",
            FileKind::QWeights => "an int8 .qweights file",
            FileKind::QParams => "a .qparams file",
        }
    }
}

/// Fails unless `path` names a file of `expected` kind for argument `slot`.
pub fn expect_kind(path: &Path, expected: FileKind, slot: &str) -> Result<()> {
    let found = FileKind::of(path);
    if found != expected {
        // The message states that the kind comes from the file name alone.
        let named = match found {
            FileKind::Weights => "its name does not end in .qweights or .qparams, so it is read as an FP32 .weights file".to_string(),
            _ => format!("its name makes it {}", found.describe()),
        };
        bail!(
            "{slot} must be {}, but {} was given and {named}; {}",
            expected.describe(),
            path.display(),
            match (expected, found) {
                (FileKind::Weights, FileKind::QWeights | FileKind::QParams) =>
                    "to validate with integer-only arithmetic pass both files: qat_int8 DATA CFG QWEIGHTS QPARAMS",
                (FileKind::QWeights, _) =>
                    "pass the .qat.int8.qweights file first, then the .qat.int8.qparams file (rename a copy whose name lost its .qweights ending)",
                (FileKind::QParams, _) =>
                    "pass the .qat.int8.qparams file after the .qweights file (rename a copy whose name lost its .qparams ending)",
                _ => "check the order of the arguments",
            }
        );
    }
    Ok(())
}

/// Fails if `output` is the same file as one of `inputs` (the same path,
/// a symbolic link to it or a hard link), so a run never overwrites what it
/// reads. An output that does not exist yet cannot be an input.
pub fn ensure_not_an_input(output: &Path, inputs: &[&Path]) -> Result<()> {
    for input in inputs {
        if same_file(output, input) {
            bail!(
                "refusing to write {}: it is also an input of this run ({}); change 'backup' in the .data file or copy the input to another folder",
                output.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// True when both paths exist and name the same file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(meta_a), Ok(meta_b)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta_a.dev() == meta_b.dev() && meta_a.ino() == meta_b.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (meta_a, meta_b);
        matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_counts_as_weights() {
        assert_eq!(FileKind::of(Path::new("backup/mnist_fc4.backup")), FileKind::Weights);
        assert_eq!(FileKind::of(Path::new("backup/mnist_fc4.weights")), FileKind::Weights);
        assert_eq!(FileKind::of(Path::new("b/m.qat.int8.qweights")), FileKind::QWeights);
        assert_eq!(FileKind::of(Path::new("b/m.qat.int8.qparams")), FileKind::QParams);
        assert!(expect_kind(Path::new("b/m.backup"), FileKind::Weights, "WEIGHTS").is_ok());
    }

    #[test]
    fn wrong_kind_names_slot_and_file() {
        let err = expect_kind(Path::new("b/m.qweights"), FileKind::Weights, "WEIGHTS of valid").unwrap_err().to_string();
        assert!(err.contains("WEIGHTS of valid"), "{err}");
        assert!(err.contains("b/m.qweights"), "{err}");
        assert!(err.contains("its name makes it an int8 .qweights file"), "{err}");

        let err = expect_kind(Path::new("q.bin"), FileKind::QWeights, "QWEIGHTS of valid_int8").unwrap_err().to_string();
        assert!(err.contains("must be an int8 .qweights file, but q.bin was given"), "{err}");
        assert!(err.contains("its name does not end in .qweights or .qparams"), "{err}");
    }

    #[test]
    fn same_file_sees_links_and_other_spellings() {
        let dir = std::env::temp_dir().join(format!("darknet-same-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.weights");
        std::fs::write(&file, b"x").unwrap();
        let other_spelling = dir.join(".").join("a.weights");
        assert!(same_file(&file, &other_spelling));
        let hard_link = dir.join("b.weights");
        let _ = std::fs::remove_file(&hard_link);
        std::fs::hard_link(&file, &hard_link).unwrap();
        assert!(ensure_not_an_input(&hard_link, &[&file]).is_err());
        assert!(!same_file(&dir.join("missing.weights"), &file));
        assert!(ensure_not_an_input(&dir.join("missing.weights"), &[&file]).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
