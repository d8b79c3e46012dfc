//! `classifier predict DATA CFG WEIGHTS [IMAGE]` and
//! `classifier predict DATA CFG QWEIGHTS QPARAMS [IMAGE]`: the top-k classes
//! of single images, printed as Darknet's predict does (`NN.NN%: label`).

use super::valid::{ranked, Classifier};
use super::Setup;
use crate::data::image::{load_image, to_chw};
use crate::formats::weights::load_weights;
use crate::formats::{expect_kind, FileKind};
use crate::quant::int8_network::Int8Network;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The parameter files and the optional image of a predict command line,
/// distinguished by file kind: a `.qweights` file first means the INT8 path,
/// followed by its `.qparams` file.
#[derive(Debug, PartialEq)]
pub struct PredictFiles {
    pub model: Model,
    pub image: Option<PathBuf>,
}

#[derive(Debug, PartialEq)]
pub enum Model {
    Fp32 { weights: PathBuf },
    Int8 { qweights: PathBuf, qparams: PathBuf },
}

impl PredictFiles {
    /// Splits the arguments after CFG: `WEIGHTS [IMAGE]` or
    /// `QWEIGHTS QPARAMS [IMAGE]`.
    pub fn parse(files: &[PathBuf]) -> Result<PredictFiles> {
        let Some(first) = files.first() else {
            bail!("predict needs WEIGHTS, or QWEIGHTS and QPARAMS, after CFG");
        };
        let (model, rest) = match FileKind::of(first) {
            FileKind::QWeights => {
                let Some(qparams) = files.get(1) else {
                    bail!("{} is an int8 .qweights file, so predict needs its .qparams file next", first.display());
                };
                expect_kind(qparams, FileKind::QParams, "QPARAMS of predict DATA CFG QWEIGHTS QPARAMS")?;
                (Model::Int8 { qweights: first.clone(), qparams: qparams.clone() }, &files[2..])
            }
            FileKind::QParams => bail!("{} is a .qparams file; give the .qweights file before it", first.display()),
            FileKind::Weights => (Model::Fp32 { weights: first.clone() }, &files[1..]),
        };
        match rest {
            [] => Ok(PredictFiles { model, image: None }),
            [image] => Ok(PredictFiles { model, image: Some(image.clone()) }),
            _ => bail!("predict takes one IMAGE at most, but {} more arguments were given; pass several images on standard input, one per line", rest.len()),
        }
    }
}

/// Runs the classifier on one image and returns its `[classes]` probabilities.
fn classify_image(model: &mut dyn Classifier, setup: &Setup, path: &Path, input: &mut [f32]) -> Result<Vec<f32>> {
    let net = &setup.cfg.net;
    let image = load_image(path, net.channels).with_context(|| format!("cannot predict {}", path.display()))?;
    to_chw(&image, net.height, net.width, None, input);
    Ok(model.classify(input, 1).to_vec())
}

/// Prints Darknet's predict output for one image: the path, then the top-k
/// classes as `NN.NN%: label`, then the time taken.
fn print_prediction(out: &mut impl Write, path: &Path, probabilities: &[f32], labels: &[String], k: usize, seconds: f64) -> Result<()> {
    writeln!(out, "{}: Predicted in {seconds:.6} seconds.", path.display())?;
    for &class in ranked(probabilities).iter().take(k) {
        writeln!(out, "{:5.2}%: {}", probabilities[class] * 100.0, labels[class])?;
    }
    out.flush()?;
    Ok(())
}

/// `classifier predict DATA CFG WEIGHTS [IMAGE]` (or with QWEIGHTS QPARAMS).
/// Without IMAGE it reads image paths from standard input, one per line. An
/// unreadable image is reported and the next line is read, and the command
/// fails at the end when any image failed.
pub fn run(data_path: &Path, cfg_path: &Path, files: &[PathBuf]) -> Result<()> {
    let files = PredictFiles::parse(files)?;
    let setup = Setup::load(data_path, cfg_path)?;
    let mut model: Box<dyn Classifier> = match &files.model {
        Model::Fp32 { weights } => {
            let mut net = setup.build_network(1, 0)?;
            super::train::check_classes(&net, &setup)?;
            load_weights(&mut net, weights, cfg_path)?;
            Box::new(net)
        }
        Model::Int8 { qweights, qparams } => {
            let net = Int8Network::load(&setup.cfg, qweights, qparams, 1)?;
            if net.outputs() != setup.data.classes {
                bail!(
                    "{} ends with {} outputs but {} has classes = {}; use the cfg and .data files that the .qweights file was made with",
                    cfg_path.display(),
                    net.outputs(),
                    data_path.display(),
                    setup.data.classes
                );
            }
            Box::new(net)
        }
    };
    let k = setup.data.top.min(setup.data.classes).max(1);
    let mut input = vec![0.0f32; setup.cfg.net.inputs];
    let mut stdout = std::io::stdout().lock();
    let write_failed = "cannot write the predictions to standard output";

    if let Some(image) = &files.image {
        let started = Instant::now();
        let probabilities = classify_image(model.as_mut(), &setup, image, &mut input)?;
        return print_prediction(&mut stdout, image, &probabilities, &setup.labels, k, started.elapsed().as_secs_f64()).context(write_failed);
    }

    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut failed = 0usize;
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("Enter Image Path: ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("cannot read image paths from standard input")?;
        let path = line.trim();
        if path.is_empty() {
            continue;
        }
        let started = Instant::now();
        match classify_image(model.as_mut(), &setup, Path::new(path), &mut input) {
            Ok(probabilities) => {
                print_prediction(&mut stdout, Path::new(path), &probabilities, &setup.labels, k, started.elapsed().as_secs_f64())
                    .context(write_failed)?;
            }
            Err(error) => {
                crate::note!("error: {error:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} image(s) could not be predicted (named above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(names: &[&str]) -> Vec<PathBuf> {
        names.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn files_fp32_with_image() {
        let files = PredictFiles::parse(&paths(&["a.weights", "x.jpg"])).unwrap();
        assert_eq!(files.model, Model::Fp32 { weights: "a.weights".into() });
        assert_eq!(files.image, Some("x.jpg".into()));
    }

    #[test]
    fn files_int8_without_image() {
        let files = PredictFiles::parse(&paths(&["a.qweights", "a.qparams"])).unwrap();
        assert_eq!(files.model, Model::Int8 { qweights: "a.qweights".into(), qparams: "a.qparams".into() });
        assert_eq!(files.image, None);
    }

    #[test]
    fn files_reject_bad_orders() {
        assert!(PredictFiles::parse(&paths(&["a.qweights"])).is_err());
        assert!(PredictFiles::parse(&paths(&["a.qweights", "x.jpg"])).is_err());
        assert!(PredictFiles::parse(&paths(&["a.qparams", "a.qweights"])).is_err());
        assert!(PredictFiles::parse(&paths(&["a.weights", "x.jpg", "y.jpg"])).is_err());
    }
}
