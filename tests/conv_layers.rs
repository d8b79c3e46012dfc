//! The FP32 convolutional, max-pool and average-pool layers: forward against
//! a direct convolution written here, and finite-difference checks of the
//! gradients of a whole network, with batch statistics and with batch norm
//! folded as QAT runs it.

use darknet::config::cfg::NetworkConfig;
use darknet::network::layers::batch_norm::fold_batch_norm;
use darknet::network::layers::Params;
use darknet::network::Network;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

fn build(text: &str, batch: usize) -> Network {
    let cfg = NetworkConfig::parse(text, Path::new("test.cfg")).unwrap();
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    Network::build(&cfg, batch, 11).unwrap()
}

/// `out[b][f][oy][ox] = bias[f] + Σ w[f][c][ky][kx] * x[b][c][iy][ix]`, zero outside the image.
#[allow(clippy::too_many_arguments)]
fn direct_convolution(
    x: &[f32],
    batch: usize,
    (c, h, w): (usize, usize, usize),
    weights: &[f32],
    biases: &[f32],
    size: usize,
    stride: usize,
    pad: usize,
) -> Vec<f32> {
    let filters = biases.len();
    let oh = (h + 2 * pad - size) / stride + 1;
    let ow = (w + 2 * pad - size) / stride + 1;
    let mut out = Vec::with_capacity(batch * filters * oh * ow);
    for b in 0..batch {
        for f in 0..filters {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = biases[f] as f64;
                    for ch in 0..c {
                        for ky in 0..size {
                            for kx in 0..size {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[((b * c + ch) * h + iy as usize) * w + ix as usize];
                                let wv = weights[((f * c + ch) * size + ky) * size + kx];
                                sum += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out.push(sum as f32);
                }
            }
        }
    }
    out
}

#[test]
fn conv_forward_matches_direct() {
    let mut rng = StdRng::seed_from_u64(3);
    // (channels, height, width, filters, size, stride, pad)
    let cases = [(1, 6, 6, 2, 3, 1, 1), (3, 7, 5, 4, 3, 2, 1), (2, 9, 9, 3, 5, 1, 0), (2, 8, 7, 5, 1, 1, 0), (3, 6, 8, 2, 4, 3, 2)];
    for &(c, h, w, filters, size, stride, pad) in &cases {
        let batch = 3;
        let text = format!(
            "[net]\nbatch={batch}\nheight={h}\nwidth={w}\nchannels={c}\n[convolutional]\nfilters={filters}\nsize={size}\nstride={stride}\npadding={pad}\nactivation=linear\n"
        );
        let mut net = build(&text, batch);
        let params = net.layers[0].params_mut().unwrap();
        for b in params.biases.iter_mut() {
            *b = rng.gen_range(-1.0..1.0);
        }
        let (weights, biases) = (params.weights.clone(), params.biases.clone());
        let x: Vec<f32> = (0..batch * c * h * w).map(|_| rng.gen_range(-1.0..1.0)).collect();
        net.forward(&x, batch, false);
        let expected = direct_convolution(&x, batch, (c, h, w), &weights, &biases, size, stride, pad);
        let got = &net.output()[..expected.len()];
        assert_eq!(net.outputs() * batch, expected.len(), "output size of case {c}x{h}x{w} size {size} stride {stride} pad {pad}");
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!((g - e).abs() < 1e-4, "case {c}x{h}x{w} size {size} stride {stride} pad {pad}, value {i}: {g} vs {e}");
        }
    }
}

#[test]
fn conv_batch_norm_inference_matches_formula() {
    let batch = 2;
    let text =
        "[net]\nbatch=2\nheight=5\nwidth=5\nchannels=2\n[convolutional]\nfilters=3\nsize=3\npad=1\nbatch_normalize=1\nactivation=relu\n";
    let mut net = build(text, batch);
    let params = net.layers[0].params_mut().unwrap();
    let bn = params.batch_norm.as_mut().unwrap();
    bn.scales.copy_from_slice(&[0.5, 2.0, -1.0]);
    bn.rolling_mean.copy_from_slice(&[0.1, -0.3, 0.7]);
    bn.rolling_variance.copy_from_slice(&[0.25, 4.0, 1.5]);
    params.biases.copy_from_slice(&[0.2, -0.1, 0.05]);
    let p = params.clone();
    let x: Vec<f32> = (0..batch * 50).map(|i| ((i * 13 % 17) as f32 / 8.0) - 1.0).collect();
    net.forward(&x, batch, false);
    let zero_bias = vec![0.0; 3];
    let raw = direct_convolution(&x, batch, (2, 5, 5), &p.weights, &zero_bias, 3, 1, 1);
    let bn = p.batch_norm.as_ref().unwrap();
    for (i, (&got, &conv)) in net.output().iter().zip(&raw).enumerate() {
        let f = (i / 25) % 3;
        let normalized = (conv - bn.rolling_mean[f]) / (bn.rolling_variance[f].sqrt() + 1e-6);
        let expected = (normalized * bn.scales[f] + p.biases[f]).max(0.0);
        assert!((got - expected).abs() < 1e-4, "value {i}: {got} vs {expected}");
    }

    // The folded form gives the same outputs.
    let (weights, biases) = fold_batch_norm(&p);
    let folded = direct_convolution(&x, batch, (2, 5, 5), &weights, &biases, 3, 1, 1);
    for (i, (&got, &f)) in net.output().iter().zip(&folded).enumerate() {
        assert!((got - f.max(0.0)).abs() < 1e-4, "folded value {i}: {got} vs {}", f.max(0.0));
    }
}

/// Conv with batch norm, max pool, strided padded conv, average pool,
/// connected and softmax over 2x7x6 images.
const NETWORK: &str = "[net]\nbatch=3\nheight=7\nwidth=6\nchannels=2\n\
[convolutional]\nfilters=3\nsize=3\nstride=1\npad=1\nbatch_normalize=1\nactivation=tanh\n\
[maxpool]\nsize=2\nstride=2\n\
[convolutional]\nfilters=4\nsize=3\nstride=2\npad=1\nactivation=logistic\n\
[avgpool]\n\
[connected]\noutput=3\nactivation=linear\n\
[softmax]\n";

/// Two batch-normalized connected layers, then a plain one, over 2x3x3 inputs.
const CONNECTED_BN: &str = "[net]\nbatch=3\nheight=3\nwidth=3\nchannels=2\n\
[connected]\noutput=5\nbatch_normalize=1\nactivation=leaky\n\
[connected]\noutput=4\nbatch_normalize=1\nactivation=tanh\n\
[connected]\noutput=3\nactivation=linear\n\
[softmax]\n";

/// Which parameter of a layer to perturb.
#[derive(Clone, Copy, Debug)]
enum Field {
    Weight,
    Bias,
    Scale,
}

fn value(p: &mut Params, field: Field, i: usize) -> &mut f32 {
    match field {
        Field::Weight => &mut p.weights[i],
        Field::Bias => &mut p.biases[i],
        Field::Scale => &mut p.batch_norm.as_mut().unwrap().scales[i],
    }
}

/// Returns the summed negative gradient the backward pass stored for a parameter.
fn update(p: &Params, field: Field, i: usize) -> f32 {
    match field {
        Field::Weight => p.weight_updates[i],
        Field::Bias => p.bias_updates[i],
        Field::Scale => p.batch_norm.as_ref().unwrap().scale_updates[i],
    }
}

/// Sets every batch-normalized layer's forward weights to its folded
/// weights, as QAT does (without the fake quantization).
fn set_folded(net: &mut Network) {
    for layer in net.layers.iter_mut() {
        if let Some(p) = layer.params_mut() {
            if p.batch_norm.is_some() {
                p.forward_weights = Some(fold_batch_norm(p).0);
            }
        }
    }
}

fn loss(net: &mut Network, x: &[f32], truth: &[f32], batch: usize, folded: bool) -> f64 {
    if folded {
        set_folded(net);
    }
    net.forward(x, batch, true);
    net.apply_truth(truth, batch) as f64
}

fn check_gradients(text: &str, folded: bool) {
    let batch = 3;
    let mut net = build(text, batch);
    let mut rng = StdRng::seed_from_u64(5);
    for layer in net.layers.iter_mut() {
        if let Some(p) = layer.params_mut() {
            for b in p.biases.iter_mut() {
                *b = rng.gen_range(-0.3..0.3);
            }
            if let Some(bn) = p.batch_norm.as_mut() {
                for i in 0..bn.scales.len() {
                    bn.scales[i] = rng.gen_range(0.5..1.5);
                    bn.rolling_mean[i] = rng.gen_range(-0.5..0.5);
                    bn.rolling_variance[i] = rng.gen_range(0.5..2.0);
                }
            }
        }
    }
    let x: Vec<f32> = (0..batch * net.inputs()).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut truth = vec![0.0f32; batch * 3];
    for b in 0..batch {
        truth[b * 3 + b % 3] = 1.0;
    }

    if folded {
        set_folded(&mut net);
    }
    net.train_pass(&x, &truth, batch, &mut |_, _, _| {});
    let analytic_net: Vec<Params> = net.layers.iter().filter_map(|l| l.params().cloned()).collect();
    let eps = 1e-3f32;
    let mut checked = 0;
    for (pi, li) in net.parameter_layers().into_iter().enumerate() {
        let analytic_params = &analytic_net[pi];
        let mut fields = vec![(Field::Weight, analytic_params.weights.len()), (Field::Bias, analytic_params.biases.len())];
        if analytic_params.batch_norm.is_some() {
            fields.push((Field::Scale, analytic_params.biases.len()));
        }
        for (field, count) in fields {
            for i in (0..count).step_by(2) {
                let analytic = -(update(analytic_params, field, i) as f64);
                let original = *value(net.layers[li].params_mut().unwrap(), field, i);
                *value(net.layers[li].params_mut().unwrap(), field, i) = original + eps;
                let plus = loss(&mut net, &x, &truth, batch, folded);
                *value(net.layers[li].params_mut().unwrap(), field, i) = original - eps;
                let minus = loss(&mut net, &x, &truth, batch, folded);
                *value(net.layers[li].params_mut().unwrap(), field, i) = original;
                let numeric = (plus - minus) / (2.0 * eps as f64);
                let tolerance = 2e-3 + 2e-2 * numeric.abs();
                assert!(
                    (numeric - analytic).abs() < tolerance,
                    "layer {li} {field:?} {i} (folded: {folded}): numeric {numeric} vs analytic {analytic}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 50, "only {checked} values checked");
}

#[test]
fn network_gradients_batch_statistics() {
    check_gradients(NETWORK, false);
}

#[test]
fn network_gradients_folded_batch_norm() {
    check_gradients(NETWORK, true);
}

#[test]
fn connected_gradients_batch_statistics() {
    check_gradients(CONNECTED_BN, false);
}

#[test]
fn connected_gradients_folded_batch_norm() {
    check_gradients(CONNECTED_BN, true);
}

#[test]
fn shapes_follow_darknet() {
    let net = build(NETWORK, 3);
    let shapes: Vec<(usize, usize, usize)> = net.layers.iter().map(|l| l.output_shape()).map(|s| (s.c, s.h, s.w)).collect();
    // conv 3x3 pad 1: 7x6; maxpool 2/2 with padding 1: 4x3; conv stride 2 pad 1: 2x2.
    assert_eq!(shapes, vec![(3, 7, 6), (3, 4, 3), (4, 2, 2), (4, 1, 1), (3, 1, 1), (3, 1, 1)]);
}

#[test]
fn window_larger_than_input_is_error() {
    let text = "[net]\nbatch=1\nheight=3\nwidth=3\nchannels=1\n[convolutional]\nfilters=1\nsize=5\nactivation=linear\n";
    let cfg = NetworkConfig::parse(text, Path::new("small.cfg")).unwrap();
    let err = format!("{:#}", Network::build(&cfg, 1, 0).err().expect("a 5x5 window cannot fit 3x3"));
    assert!(err.contains("small.cfg:6"), "{err}");
    assert!(err.contains("does not fit"), "{err}");
}
