//! Conformance with the C Darknet fork: its weights, `.qweights` and
//! `.qparams` for the workshop cfg, run on its 1996 PNG test images, must give
//! its per-image outputs (the TSV files beside them).

use darknet::config::cfg::NetworkConfig;
use darknet::data::image::{load_image, to_chw};
use darknet::formats::weights::load_weights;
use darknet::network::Network;
use darknet::quant::int8_network::Int8Network;
use std::path::{Path, PathBuf};

fn fixture_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/cref-mnist");
    if dir.join("test.list").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: C fork fixtures not found at {}", dir.display());
        None
    }
}

struct Row {
    path: String,
    top1: usize,
    p: Vec<f32>,
    q: Vec<i8>,
}

fn read_tsv(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            Row {
                path: cols[0].to_string(),
                top1: cols[2].parse().unwrap(),
                p: cols[3..13].iter().map(|v| v.parse().unwrap()).collect(),
                q: cols.get(13..23).map(|c| c.iter().map(|v| v.parse().unwrap()).collect()).unwrap_or_default(),
            }
        })
        .collect()
}

/// Loads every fixture image as the workshop cfg's input rows.
fn inputs(dir: &Path, rows: &[Row], cfg: &NetworkConfig) -> Vec<f32> {
    let n = cfg.net.inputs;
    let mut all = vec![0.0f32; rows.len() * n];
    for (i, row) in rows.iter().enumerate() {
        let img = load_image(&dir.join(&row.path), cfg.net.channels).unwrap();
        to_chw(&img, cfg.net.height, cfg.net.width, None, &mut all[i * n..(i + 1) * n]);
    }
    all
}

fn argmax_lowest(values: &[f32]) -> usize {
    darknet::commands::valid::ranked(values)[0]
}

fn check_fp32(weights: &str, expected: &str) {
    let Some(dir) = fixture_dir() else { return };
    let cfg = NetworkConfig::load(&dir.join("mnist_fc4.cfg")).unwrap();
    let rows = read_tsv(&dir.join(expected));
    assert_eq!(rows.len(), 1996);
    let x = inputs(&dir, &rows, &cfg);
    let mut net = Network::build(&cfg, 128, 0).unwrap();
    let header = load_weights(&mut net, &dir.join(weights), &dir.join("mnist_fc4.cfg")).unwrap();
    assert_eq!((header.major, header.minor, header.revision), (0, 2, 0));

    let mut worst = 0.0f32;
    for (start, chunk) in rows.chunks(128).enumerate() {
        let s = start * 128;
        net.forward(&x[s * cfg.net.inputs..], chunk.len(), false);
        for (r, row) in chunk.iter().enumerate() {
            let p = &net.output()[r * 10..(r + 1) * 10];
            assert_eq!(argmax_lowest(p), row.top1, "top-1 of {}", row.path);
            for (a, b) in p.iter().zip(&row.p) {
                worst = worst.max((a - b).abs());
            }
        }
    }
    assert!(worst < 1e-4, "largest softmax difference {worst}");
}

#[test]
fn fp32_weights_match_c_fork() {
    check_fp32("mnist_fc4.weights", "expected_fp.tsv");
}

#[test]
fn fp32_after_qat_matches_c_fork() {
    check_fp32("mnist_fc4.qat.int8.weights", "expected_fp_qat.tsv");
}

#[test]
fn int8_outputs_match_c_fork_bit_for_bit() {
    let Some(dir) = fixture_dir() else { return };
    let cfg = NetworkConfig::load(&dir.join("mnist_fc4.cfg")).unwrap();
    let rows = read_tsv(&dir.join("expected_int8.tsv"));
    let x = inputs(&dir, &rows, &cfg);
    let mut net = Int8Network::load(
        &cfg,
        &dir.join("mnist_fc4.qat.int8.qweights"),
        &dir.join("mnist_fc4.qat.int8.qparams"),
        128,
    )
    .unwrap();
    assert_eq!(net.input_params.scale, 1.0 / 255.0);
    assert_eq!(net.input_params.zero_point, -128);

    let mut worst = 0.0f32;
    let mut correct = 0;
    for (start, chunk) in rows.chunks(128).enumerate() {
        let s = start * 128;
        let p = net.predict(&x[s * cfg.net.inputs..], chunk.len()).to_vec();
        for (r, row) in chunk.iter().enumerate() {
            assert_eq!(&net.last_q[r * 10..(r + 1) * 10], row.q.as_slice(), "int8 outputs of {}", row.path);
            let probs = &p[r * 10..(r + 1) * 10];
            assert_eq!(argmax_lowest(probs), row.top1, "top-1 of {}", row.path);
            for (a, b) in probs.iter().zip(&row.p) {
                worst = worst.max((a - b).abs());
            }
            correct += (row.top1 == label_index(&row.path)) as usize;
        }
    }
    assert!(worst < 2e-6, "largest softmax difference {worst}");
    // The fixture README gives 1922 correct for this file.
    assert_eq!(correct, 1922);
}

fn label_index(path: &str) -> usize {
    let names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    let labels: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    darknet::data::lists::label_of(Path::new(path), &labels).unwrap()
}
