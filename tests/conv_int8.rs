//! The INT8 network on convolutional cfgs against a plain reference written
//! here in i64: padding with the input zero point, strides, max and average
//! pools, and a connected layer reading the CHW output. Every int8 output
//! must be equal.

use darknet::config::cfg::NetworkConfig;
use darknet::formats::qfiles::{write_qparams, write_qweights, LayerQParams, LayerQWeights};
use darknet::quant::affine::{quantize_input, QuantParams};
use darknet::quant::fixed_point::{quantize_multiplier, real_multiplier};
use darknet::quant::int8_network::Int8Network;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

/// `round(acc * m0 / 2^31)` then a rounding shift, spelled out step by step.
fn reference_rescale(acc: i64, m0: i64, shift: i32) -> i64 {
    let acc = if shift < 0 { (acc << -shift).clamp(i32::MIN as i64, i32::MAX as i64) } else { acc };
    let product = acc as i128 * m0 as i128;
    let nudge: i128 = if product >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // i128 division truncates toward zero, as the recipe requires.
    let high = (product + nudge) / (1i128 << 31);
    if shift <= 0 {
        return high as i64;
    }
    let divisor = 1i128 << shift;
    let quotient = high.div_euclid(divisor);
    let remainder = high.rem_euclid(divisor);
    let half = divisor / 2;
    let rounds_up = if high >= 0 { remainder >= half } else { remainder > half };
    (quotient + rounds_up as i128) as i64
}

/// A CHW tensor of int8 codes held as i64.
#[derive(Clone, Debug)]
struct Tensor {
    c: usize,
    h: usize,
    w: usize,
    values: Vec<i64>,
}

impl Tensor {
    fn at(&self, c: usize, y: usize, x: usize) -> i64 {
        self.values[(c * self.h + y) * self.w + x]
    }
}

fn requantize(acc: i64, q: &LayerQParams, relu: bool) -> i64 {
    let m = quantize_multiplier(real_multiplier(q.input.scale, q.weight.scale, q.output.scale));
    let z3 = q.output.zero_point as i64;
    let v = (reference_rescale(acc, m.multiplier as i64, m.shift) + z3).clamp(-128, 127);
    if relu {
        v.max(z3)
    } else {
        v
    }
}

/// A layer of a test network with its integer parameters.
enum Layer {
    Conv { filters: usize, size: usize, stride: usize, pad: usize, relu: bool, q: LayerQParams, w: LayerQWeights },
    Connected { outputs: usize, relu: bool, q: LayerQParams, w: LayerQWeights },
    MaxPool { size: usize, stride: usize },
    AvgPool,
}

#[allow(clippy::too_many_arguments)]
fn reference_conv(
    x: &Tensor,
    filters: usize,
    size: usize,
    stride: usize,
    pad: usize,
    relu: bool,
    q: &LayerQParams,
    w: &LayerQWeights,
) -> Tensor {
    let (z1, z2) = (q.input.zero_point as i64, q.weight.zero_point as i64);
    let oh = (x.h + 2 * pad - size) / stride + 1;
    let ow = (x.w + 2 * pad - size) / stride + 1;
    let mut values = Vec::new();
    for f in 0..filters {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = w.biases[f] as i64;
                for c in 0..x.c {
                    for ky in 0..size {
                        for kx in 0..size {
                            let iy = (oy * stride + ky) as i64 - pad as i64;
                            let ix = (ox * stride + kx) as i64 - pad as i64;
                            // Padding is real 0, whose code is Z1.
                            let inside = iy >= 0 && ix >= 0 && iy < x.h as i64 && ix < x.w as i64;
                            let q1 = if inside { x.at(c, iy as usize, ix as usize) } else { z1 };
                            let q2 = w.weights[((f * x.c + c) * size + ky) * size + kx] as i64;
                            acc += (q1 - z1) * (q2 - z2);
                        }
                    }
                }
                values.push(requantize(acc, q, relu));
            }
        }
    }
    Tensor { c: filters, h: oh, w: ow, values }
}

/// Darknet's max pool: total padding `size - 1`, windows start `(size - 1) / 2` before the image.
fn reference_maxpool(x: &Tensor, size: usize, stride: usize) -> Tensor {
    let padding = size - 1;
    let oh = (x.h + padding - size) / stride + 1;
    let ow = (x.w + padding - size) / stride + 1;
    let mut values = Vec::new();
    for c in 0..x.c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = i64::MIN;
                for ky in 0..size {
                    for kx in 0..size {
                        let iy = (oy * stride + ky) as i64 - (padding / 2) as i64;
                        let ix = (ox * stride + kx) as i64 - (padding / 2) as i64;
                        if iy >= 0 && ix >= 0 && iy < x.h as i64 && ix < x.w as i64 {
                            best = best.max(x.at(c, iy as usize, ix as usize));
                        }
                    }
                }
                values.push(best);
            }
        }
    }
    Tensor { c: x.c, h: oh, w: ow, values }
}

fn reference_forward(layers: &[Layer], input: Tensor) -> Vec<i8> {
    let mut x = input;
    for layer in layers {
        x = match layer {
            Layer::Conv { filters, size, stride, pad, relu, q, w } => reference_conv(&x, *filters, *size, *stride, *pad, *relu, q, w),
            Layer::MaxPool { size, stride } => reference_maxpool(&x, *size, *stride),
            Layer::AvgPool => {
                let n = (x.h * x.w) as f64;
                let values = x.values.chunks(x.h * x.w).map(|plane| (plane.iter().sum::<i64>() as f64 / n).round() as i64).collect();
                Tensor { c: x.c, h: 1, w: 1, values }
            }
            Layer::Connected { outputs, relu, q, w } => {
                let (z1, z2) = (q.input.zero_point as i64, q.weight.zero_point as i64);
                let k = x.values.len();
                let values = (0..*outputs)
                    .map(|o| {
                        let dot: i64 = (0..k).map(|i| (x.values[i] - z1) * (w.weights[o * k + i] as i64 - z2)).sum();
                        requantize(dot + w.biases[o] as i64, q, *relu)
                    })
                    .collect();
                Tensor { c: *outputs, h: 1, w: 1, values }
            }
        };
    }
    x.values.into_iter().map(|v| v as i8).collect()
}

fn random_weights(rng: &mut StdRng, n: usize, k: usize) -> (QuantParams, LayerQWeights) {
    let weight = QuantParams { scale: rng.gen_range(0.002f32..0.02), zero_point: rng.gen_range(-5i8..5) };
    let w = LayerQWeights {
        biases: (0..n).map(|_| rng.gen_range(-3000..3000)).collect(),
        weights: (0..n * k).map(|_| rng.gen::<i8>()).collect(),
    };
    (weight, w)
}

/// Draws the output QuantParams of a layer with `k` inputs. Random products of
/// codes sum to about `sqrt(k) * 128 * 74`, so a scale near
/// `S1 * S2 * sqrt(k) * 200` spreads the outputs over the int8 range
/// without saturating most of them.
fn output_params(rng: &mut StdRng, input: QuantParams, weight: QuantParams, k: usize, relu: bool) -> QuantParams {
    let scale = input.scale * weight.scale * (k as f32).sqrt() * rng.gen_range(120.0f32..300.0);
    let zero_point = if relu { rng.gen_range(-128i8..-100) } else { rng.gen_range(-30i8..30) };
    QuantParams { scale, zero_point }
}

struct Case {
    channels: usize,
    height: usize,
    width: usize,
    /// Layer lines of the cfg: `conv:filters,size,stride,pad,relu`, `max:size,stride`, `avg`, `fc:outputs,relu`.
    layers: &'static [&'static str],
}

#[test]
fn int8_conv_network_matches_reference() {
    let cases = [
        // Stride 2 with padding 1, a max pool, a padded conv, a global average.
        Case { channels: 2, height: 9, width: 8, layers: &["conv:3,3,2,1,1", "max:2,2", "conv:4,3,1,1,0", "avg"] },
        // Padding 2 around a 5x5 window, an overlapping 3/2 pool, a connected layer.
        Case { channels: 3, height: 10, width: 11, layers: &["conv:5,5,1,2,1", "max:3,2", "fc:6,0"] },
        // The raw CHW output of a strided conv whose window overhangs the edge.
        Case { channels: 1, height: 7, width: 9, layers: &["conv:4,4,3,2,0"] },
        // LeNet-like: unpadded 5x5 convs, 2/2 pools, connected.
        Case { channels: 3, height: 16, width: 16, layers: &["conv:4,5,1,0,1", "max:2,2", "conv:6,5,1,0,1", "max:2,2", "fc:10,0"] },
    ];
    let dir = std::env::temp_dir().join(format!("darknet-conv-int8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = StdRng::seed_from_u64(17);
    for (index, case) in cases.iter().enumerate() {
        let batch = 3;
        let mut cfg_text = format!("[net]\nbatch={batch}\nheight={}\nwidth={}\nchannels={}\n", case.height, case.width, case.channels);
        // An input range below 0 puts Z1 well away from -128 and from 0, so
        // padding with anything but Z1 changes the result.
        let mut current = QuantParams::from_range(-0.7, 1.0);
        assert_ne!(current.zero_point, 0);
        assert_ne!(current.zero_point, -128);
        let (mut c, mut h, mut w) = (case.channels, case.height, case.width);
        let mut layers = Vec::new();
        for line in case.layers {
            let (kind, args) = line.split_once(':').unwrap_or((line, ""));
            let n: Vec<usize> = args.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
            match kind {
                "conv" => {
                    let (filters, size, stride, pad, relu) = (n[0], n[1], n[2], n[3], n[4] == 1);
                    let k = c * size * size;
                    let (weight, wq) = random_weights(&mut rng, filters, k);
                    let output = output_params(&mut rng, current, weight, k, relu);
                    let q = LayerQParams { input: current, weight, output };
                    cfg_text += &format!(
                        "[convolutional]\nfilters={filters}\nsize={size}\nstride={stride}\npadding={pad}\nactivation={}\n",
                        if relu { "relu" } else { "linear" }
                    );
                    layers.push(Layer::Conv { filters, size, stride, pad, relu, q, w: wq });
                    current = output;
                    (c, h, w) = (filters, (h + 2 * pad - size) / stride + 1, (w + 2 * pad - size) / stride + 1);
                }
                "max" => {
                    let (size, stride) = (n[0], n[1]);
                    cfg_text += &format!("[maxpool]\nsize={size}\nstride={stride}\n");
                    layers.push(Layer::MaxPool { size, stride });
                    (h, w) = ((h + size - 1 - size) / stride + 1, (w + size - 1 - size) / stride + 1);
                }
                "avg" => {
                    cfg_text += "[avgpool]\n";
                    layers.push(Layer::AvgPool);
                    (h, w) = (1, 1);
                }
                "fc" => {
                    let (outputs, relu) = (n[0], n[1] == 1);
                    let k = c * h * w;
                    let (weight, wq) = random_weights(&mut rng, outputs, k);
                    let output = output_params(&mut rng, current, weight, k, relu);
                    let q = LayerQParams { input: current, weight, output };
                    cfg_text += &format!("[connected]\noutput={outputs}\nactivation={}\n", if relu { "relu" } else { "linear" });
                    layers.push(Layer::Connected { outputs, relu, q, w: wq });
                    current = output;
                    (c, h, w) = (outputs, 1, 1);
                }
                other => panic!("unknown test layer {other}"),
            }
        }
        cfg_text += "[softmax]\n";

        let cfg_path: PathBuf = dir.join(format!("case{index}.cfg"));
        std::fs::write(&cfg_path, &cfg_text).unwrap();
        let (qw_path, qp_path) = (dir.join(format!("case{index}.qweights")), dir.join(format!("case{index}.qparams")));
        let mut all_q = Vec::new();
        let mut all_w = Vec::new();
        for layer in &layers {
            if let Layer::Conv { q, w, .. } | Layer::Connected { q, w, .. } = layer {
                all_q.push(*q);
                all_w.push(w.clone());
            }
        }
        write_qweights(&qw_path, &all_w).unwrap();
        write_qparams(&qp_path, &all_q).unwrap();

        let cfg = NetworkConfig::load(&cfg_path).unwrap();
        let mut net = Int8Network::load(&cfg, &qw_path, &qp_path, batch).unwrap();
        assert_eq!(net.clamped_biases, 0, "case {index}");
        let outputs = c * h * w;
        assert_eq!(net.outputs(), outputs, "case {index}: output size");

        let inputs = case.channels * case.height * case.width;
        let x: Vec<f32> = (0..batch * inputs).map(|_| rng.gen_range(0.0f32..1.0)).collect();
        net.predict(&x, batch);
        let mut saturated = 0;
        for r in 0..batch {
            let mut q_in = vec![0i8; inputs];
            quantize_input(&x[r * inputs..(r + 1) * inputs], all_q[0].input, &mut q_in);
            let tensor = Tensor { c: case.channels, h: case.height, w: case.width, values: q_in.iter().map(|&v| v as i64).collect() };
            let expected = reference_forward(&layers, tensor);
            saturated += expected.iter().filter(|&&v| v == 127 || v == -128).count();
            assert_eq!(&net.last_q[r * outputs..(r + 1) * outputs], expected.as_slice(), "case {index} image {r}");
        }
        // Outputs pinned at the clamp would hide arithmetic differences.
        assert!(saturated * 2 < batch * outputs, "case {index}: {saturated} of {} outputs saturate", batch * outputs);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn int8_rejects_leaky_conv() {
    let dir = std::env::temp_dir().join(format!("darknet-conv-leaky-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_path = dir.join("leaky.cfg");
    std::fs::write(
        &cfg_path,
        "[net]\nbatch=1\nheight=4\nwidth=4\nchannels=1\n[convolutional]\nfilters=2\nsize=3\nactivation=leaky\n[softmax]\n",
    )
    .unwrap();
    let cfg = NetworkConfig::load(&cfg_path).unwrap();
    let err = Int8Network::load(&cfg, &dir.join("x.qweights"), &dir.join("x.qparams"), 1).err().expect("leaky has no int8 form");
    let message = format!("{err:#}");
    assert!(message.contains("leaky.cfg:6"), "{message}");
    assert!(message.contains("activation=leaky"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}
