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
        bail!(
            "{slot} is {}, but {} was given: {}; {}",
            expected.describe(),
            found.describe(),
            path.display(),
            match (expected, found) {
                (FileKind::Weights, FileKind::QWeights | FileKind::QParams) =>
                    "to validate with integer-only arithmetic pass both files: qat_int8 DATA CFG QWEIGHTS QPARAMS",
                (FileKind::QWeights, _) => "pass the .qat.int8.qweights file first, then the .qat.int8.qparams file",
                (FileKind::QParams, _) => "pass the .qat.int8.qparams file after the .qweights file",
                _ => "check the order of the arguments",
            }
        );
    }
    Ok(())
}

/// Fails if `output` is the same file as one of `inputs`, so a run never
/// overwrites what it reads.
pub fn ensure_not_an_input(output: &Path, inputs: &[&Path]) -> Result<()> {
    let out = output.canonicalize().ok();
    for input in inputs {
        let same = match (&out, input.canonicalize().ok()) {
            (Some(a), Some(b)) => *a == b,
            _ => false,
        };
        if same {
            bail!(
                "refusing to write {}: it is also an input of this run; copy the input elsewhere or change 'backup' in the .data file",
                output.display()
            );
        }
    }
    Ok(())
}
