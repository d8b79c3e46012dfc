//! The shipped convolutional and batch-normalized cfgs parse without
//! warnings and run forward in FP32 and, with parameters exported by a short
//! QAT pass, in INT8.

use darknet::config::cfg::NetworkConfig;
use darknet::formats::qfiles::{write_qparams, write_qweights};
use darknet::network::Network;
use darknet::quant::int8_network::Int8Network;
use darknet::quant::qat::QatState;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

fn run_both(cfg_path: &str, expected_shapes: &[(usize, usize, usize)]) {
    let cfg = NetworkConfig::load(Path::new(cfg_path)).unwrap();
    assert!(cfg.warnings.is_empty(), "{cfg_path}: {:?}", cfg.warnings);
    let batch = 4;
    let mut net = Network::build(&cfg, batch, 1).unwrap();
    let shapes: Vec<(usize, usize, usize)> = net.layers.iter().map(|l| l.output_shape()).map(|s| (s.c, s.h, s.w)).collect();
    assert_eq!(shapes, expected_shapes, "{cfg_path}: layer output shapes");
    assert_eq!(net.outputs(), 10, "{cfg_path}");

    let mut rng = StdRng::seed_from_u64(9);
    let x: Vec<f32> = (0..batch * net.inputs()).map(|_| rng.gen_range(0.0f32..1.0)).collect();
    net.forward(&x, batch, false);
    for row in net.output()[..batch * 10].chunks(10) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "{cfg_path}: FP32 probabilities sum to {sum}");
    }

    // Two QAT steps (calibrate, then fake-quantize) give a consistent set of
    // integer parameters for the untrained weights.
    let mut qat = QatState::new(&net, &cfg.net, 2).unwrap();
    for step in 1..=2 {
        qat.begin_step(step);
        let mut input = x.clone();
        qat.prepare(&mut net, &mut input);
        net.forward_with_hook(&input, batch, true, &mut |i, layer, rows| qat.after_layer(i, layer, rows));
    }
    QatState::release(&mut net);
    let (qparams, qweights) = qat.export(&net).unwrap();
    let dir = std::env::temp_dir().join(format!("darknet-conv-cfgs-{}-{}", cfg.base_name(), std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (qw, qp) = (dir.join("x.qweights"), dir.join("x.qparams"));
    write_qweights(&qw, &qweights).unwrap();
    write_qparams(&qp, &qparams).unwrap();

    let mut int8 = Int8Network::load(&cfg, &qw, &qp, batch).unwrap();
    assert_eq!(int8.outputs(), 10, "{cfg_path}");
    let probabilities = int8.predict(&x, batch).to_vec();
    for row in probabilities.chunks(10) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "{cfg_path}: INT8 probabilities sum to {sum}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mnist_lenet_runs_fp32_and_int8() {
    run_both("cfg/mnist_lenet.cfg", &[(32, 24, 24), (32, 12, 12), (64, 8, 8), (64, 4, 4), (64, 4, 4), (10, 1, 1), (10, 1, 1)]);
}

#[test]
fn darknet_small_runs_fp32_and_int8() {
    run_both(
        "cfg/darknet_small.cfg",
        &[(16, 28, 28), (16, 14, 14), (32, 14, 14), (32, 7, 7), (64, 7, 7), (64, 4, 4), (128, 4, 4), (10, 4, 4), (10, 1, 1), (10, 1, 1)],
    );
}

#[test]
fn mnist_fc4_bn_runs_fp32_and_int8() {
    let cfg = NetworkConfig::load(Path::new("cfg/mnist_fc4_bn.cfg")).unwrap();
    let normalized = Network::build(&cfg, 1, 1).unwrap().layers.iter().filter(|l| l.params().is_some_and(|p| p.batch_norm.is_some())).count();
    assert_eq!(normalized, 3, "the three hidden layers have batch norm");
    run_both("cfg/mnist_fc4_bn.cfg", &[(1024, 1, 1), (512, 1, 1), (256, 1, 1), (10, 1, 1), (10, 1, 1)]);
}
