//! QAT of networks with batch norm, convolutional and connected: the
//! exported `.qweights`/`.qparams` (batch norm folded in) run by the
//! integer-only network must reproduce the fake-quantized FP32 forward pass
//! that QAT trained, up to the rounding the two paths do differently.

use darknet::config::cfg::NetworkConfig;
use darknet::formats::qfiles::{write_qparams, write_qweights};
use darknet::network::Network;
use darknet::quant::int8_network::Int8Network;
use darknet::quant::qat::QatState;
use darknet::commands::valid::Classifier;
use darknet::report::quant_report::{Saturation, SaturationProbe};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

const CFG: &str = "[net]\nbatch=8\nheight=10\nwidth=10\nchannels=3\n\
[convolutional]\nfilters=6\nsize=3\nstride=1\npad=1\nbatch_normalize=1\nactivation=relu\n\
[maxpool]\nsize=2\nstride=2\n\
[convolutional]\nfilters=8\nsize=3\nstride=2\npad=1\nbatch_normalize=1\nactivation=relu\n\
[avgpool]\n\
[connected]\noutput=5\nactivation=linear\n\
[softmax]\n";

/// Batch-normalized connected layers over 3x4x4 inputs.
const CONNECTED_CFG: &str = "[net]\nbatch=8\nheight=4\nwidth=4\nchannels=3\n\
[connected]\noutput=12\nbatch_normalize=1\nactivation=relu\n\
[connected]\noutput=5\nbatch_normalize=1\nactivation=linear\n\
[softmax]\n";

#[test]
fn conv_int8_reproduces_fake_quantized_forward() {
    check_int8_against_qat(CFG, "conv");
}

#[test]
fn connected_int8_reproduces_fake_quantized_forward() {
    check_int8_against_qat(CONNECTED_CFG, "connected");
}

/// Runs two QAT steps on `text` (the last parameter layer has 5 outputs,
/// followed by the softmax), exports, and compares the int8 network's
/// output codes with the fake-quantized FP32 ones.
fn check_int8_against_qat(text: &str, name: &str) {
    let batch = 8;
    let cfg = NetworkConfig::parse(text, Path::new("qat.cfg")).unwrap();
    let mut net = Network::build(&cfg, batch, 21).unwrap();
    let mut rng = StdRng::seed_from_u64(4);
    // Batch-norm statistics far from the identity, so folding matters.
    for layer in net.layers.iter_mut() {
        if let Some(p) = layer.params_mut() {
            for b in p.biases.iter_mut() {
                *b = rng.gen_range(-0.2..0.4);
            }
            if let Some(bn) = p.batch_norm.as_mut() {
                for i in 0..bn.scales.len() {
                    bn.scales[i] = rng.gen_range(0.5..2.0);
                    bn.rolling_mean[i] = rng.gen_range(-0.5..0.5);
                    bn.rolling_variance[i] = rng.gen_range(0.2..3.0);
                }
            }
        }
    }
    let inputs = net.inputs();
    let x: Vec<f32> = (0..batch * inputs).map(|_| rng.gen_range(0.0f32..1.0)).collect();

    // Step 1 calibrates the ranges, step 2 fake-quantizes with them.
    let mut qat = QatState::new(&net, &cfg.net, 2).unwrap();
    for step in 1..=2 {
        qat.begin_step(step);
        let mut input = x.clone();
        qat.prepare(&mut net, &mut input);
        net.forward_with_hook(&input, batch, true, &mut |i, layer, rows| qat.after_layer(i, layer, rows));
    }
    let connected = net.layers.len() - 2;
    let simulated: Vec<f32> = net.layers[connected].output()[..batch * 5].to_vec();
    QatState::release(&mut net);
    let (qparams, qweights) = qat.export(&net).unwrap();

    let dir = std::env::temp_dir().join(format!("darknet-{name}-qat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (qw_path, qp_path) = (dir.join("qat.qweights"), dir.join("qat.qparams"));
    write_qweights(&qw_path, &qweights).unwrap();
    write_qparams(&qp_path, &qparams).unwrap();
    let mut int8 = Int8Network::load(&cfg, &qw_path, &qp_path, batch).unwrap();
    int8.predict(&x, batch);
    check_observed_stages(&mut int8, &x, batch);

    let output = qparams.last().unwrap().output;
    let mut total_steps = 0usize;
    for (i, (&q, &real)) in int8.last_q[..batch * 5].iter().zip(&simulated).enumerate() {
        let expected = output.quantize(real);
        let steps = (q as i32 - expected as i32).abs();
        assert!(steps <= 2, "output {i}: int8 code {q}, fake-quantized FP32 code {expected}");
        total_steps += steps as usize;
    }
    // Most outputs agree exactly; rounding differences are rare.
    assert!(total_steps * 4 < batch * 5, "{total_steps} code steps of difference over {} outputs", batch * 5);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Checks that `predict_observed` shows the quantized input and every
/// stage's output, the last equal to `last_q`, and that the saturation probe
/// of `--report` counts each of them.
fn check_observed_stages(int8: &mut Int8Network, x: &[f32], batch: usize) {
    let last_q = int8.last_q.clone();
    let lengths: Vec<usize> = int8.stages.iter().map(|s| s.output_len()).collect();
    let mut observed: Vec<(Option<usize>, Vec<i8>)> = Vec::new();
    int8.predict_observed(x, batch, &mut |stage, values| observed.push((stage, values.to_vec())));
    assert_eq!(observed.len(), lengths.len() + 1);
    assert_eq!(observed[0].0, None);
    assert_eq!(observed[0].1.len(), x.len());
    for (i, length) in lengths.iter().enumerate() {
        assert_eq!(observed[i + 1].0, Some(i));
        assert_eq!(observed[i + 1].1.len(), batch * length, "stage {i}");
    }
    let last = &observed.last().unwrap().1;
    assert_eq!(last[..], last_q[..last.len()]);

    let expected = |values: &[i8]| Saturation {
        low: values.iter().filter(|&&v| v == i8::MIN).count() as u64,
        high: values.iter().filter(|&&v| v == i8::MAX).count() as u64,
        total: values.len() as u64,
    };
    let mut probe = SaturationProbe::new(int8);
    probe.classify(x, batch);
    assert_eq!(probe.input, expected(&observed[0].1));
    assert_eq!(probe.stages.len(), lengths.len());
    for (i, counts) in probe.stages.iter().enumerate() {
        assert_eq!(*counts, expected(&observed[i + 1].1), "stage {i}");
    }
    // Some ReLU outputs are at their floor of -128, so the counts are not
    // all zero.
    assert!(probe.stages.iter().any(|c| c.low > 0));
}
