//! Finite-difference checks of the analytic gradients.

use super::*;
use crate::config::cfg::NetworkConfig;
use std::path::Path;

fn network(layers: &str, batch: usize) -> Network {
    let text = format!("[net]\nbatch={batch}\nwidth=3\nheight=1\nchannels=1\n{layers}");
    let cfg = NetworkConfig::parse(&text, Path::new("check.cfg")).unwrap();
    Network::build(&cfg, batch, 7).unwrap()
}

/// Loss as a function of the current parameters, in f64 for the difference.
fn loss_of(net: &mut Network, input: &[f32], truth: &[f32], batch: usize) -> f64 {
    net.forward(input, batch, true);
    net.apply_truth(truth, batch) as f64
}

fn check(layers: &str) {
    let batch = 4;
    let mut net = network(layers, batch);
    let input: Vec<f32> = (0..batch * 3).map(|i| ((i * 37 % 11) as f32 / 11.0) - 0.4).collect();
    let mut truth = vec![0.0f32; batch * 4];
    for b in 0..batch {
        truth[b * 4 + (b * 3) % 4] = 1.0;
    }
    for layer in net.layers.iter_mut() {
        if let Some(p) = layer.params_mut() {
            for (i, b) in p.biases.iter_mut().enumerate() {
                *b = 0.05 * i as f32 - 0.02;
            }
        }
    }

    net.train_pass(&input, &truth, batch, &mut |_, _, _| {});
    let eps = 1e-2f32;
    for li in net.parameter_layers() {
        let count = net.layers[li].params().unwrap().weights.len();
        for wi in (0..count).step_by(3) {
            // weight_updates hold -dL/dw summed over the batch.
            let analytic = -(net.layers[li].params().unwrap().weight_updates[wi]) as f64;
            let original = net.layers[li].params().unwrap().weights[wi];
            net.layers[li].params_mut().unwrap().weights[wi] = original + eps;
            let plus = loss_of(&mut net, &input, &truth, batch);
            net.layers[li].params_mut().unwrap().weights[wi] = original - eps;
            let minus = loss_of(&mut net, &input, &truth, batch);
            net.layers[li].params_mut().unwrap().weights[wi] = original;
            let numeric = (plus - minus) / (2.0 * eps as f64);
            let tolerance = 2e-3 + 2e-2 * numeric.abs();
            assert!(
                (numeric - analytic).abs() < tolerance,
                "layer {li} weight {wi}: numeric {numeric} vs analytic {analytic}"
            );
        }
    }
}

#[test]
fn connected_softmax_gradients() {
    check("[connected]\noutput=5\nactivation=tanh\n[connected]\noutput=4\nactivation=linear\n[softmax]\n");
}

#[test]
fn connected_leaky_logistic_gradients() {
    check("[connected]\noutput=6\nactivation=logistic\n[connected]\noutput=5\nactivation=leaky\n[connected]\noutput=4\nactivation=linear\n[softmax]\n");
}

#[test]
fn batch_norm_gradients() {
    check("[connected]\noutput=5\nactivation=tanh\nbatch_normalize=1\n[connected]\noutput=4\nactivation=linear\n[softmax]\n");
}
