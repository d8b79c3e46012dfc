//! `darknet data import-idx`: IDX files to Darknet's image-tree layout.

use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Folder with train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), t10k-... files.
    pub source: PathBuf,
    /// Output folder.
    pub out: PathBuf,
}

pub fn run(args: &ImportArgs) -> Result<()> {
    bail!("import-idx of {} is not built yet", args.source.display())
}
