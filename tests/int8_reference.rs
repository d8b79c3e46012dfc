//! The production INT8 network against a plain reference written here with
//! i64/i128 arithmetic, on random layers, ranges and inputs: every int8
//! output must be equal.

use darknet::config::cfg::NetworkConfig;
use darknet::formats::qfiles::{write_qparams, write_qweights, LayerQParams, LayerQWeights};
use darknet::quant::affine::QuantParams;
use darknet::quant::fixed_point::{quantize_multiplier, real_multiplier};
use darknet::quant::int8_network::Int8Network;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

/// `round(acc * m0 / 2^31)` then a rounding shift, spelled out step by step.
fn reference_rescale(acc: i64, m0: i64, shift: i32) -> i64 {
    let acc = if shift < 0 { (acc << -shift).clamp(i32::MIN as i64, i32::MAX as i64) } else { acc };
    let product = acc as i128 * m0 as i128;
    let high = if acc == i32::MIN as i64 && m0 == i32::MIN as i64 {
        i32::MAX as i128
    } else {
        let nudge: i128 = if product >= 0 { 1 << 30 } else { 1 - (1 << 30) };
        // i128 division truncates toward zero, as the recipe requires.
        (product + nudge) / (1i128 << 31)
    };
    if shift <= 0 {
        return high as i64;
    }
    // Round half away from zero: compare |remainder| with half of 2^shift.
    let divisor = 1i128 << shift;
    let quotient = high.div_euclid(divisor);
    let remainder = high.rem_euclid(divisor);
    let half = divisor / 2;
    let rounds_up = if high >= 0 { remainder >= half } else { remainder > half };
    (quotient + rounds_up as i128) as i64
}

struct Layer {
    k: usize,
    n: usize,
    relu: bool,
    q: LayerQParams,
    w: LayerQWeights,
}

fn reference_forward(layers: &[Layer], input: &[i8]) -> Vec<i8> {
    let mut x: Vec<i64> = input.iter().map(|&v| v as i64).collect();
    for layer in layers {
        let z1 = layer.q.input.zero_point as i64;
        let z2 = layer.q.weight.zero_point as i64;
        let m = quantize_multiplier(real_multiplier(layer.q.input.scale, layer.q.weight.scale, layer.q.output.scale));
        let mut out = Vec::with_capacity(layer.n);
        for o in 0..layer.n {
            let mut acc: i64 = layer.w.biases[o] as i64;
            for kk in 0..layer.k {
                acc += (x[kk] - z1) * (layer.w.weights[o * layer.k + kk] as i64 - z2);
            }
            let mut q = (reference_rescale(acc, m.multiplier as i64, m.shift) + layer.q.output.zero_point as i64).clamp(-128, 127);
            if layer.relu {
                q = q.max(layer.q.output.zero_point as i64);
            }
            out.push(q);
        }
        x = out;
    }
    x.into_iter().map(|v| v as i8).collect()
}

fn random_params(rng: &mut StdRng) -> QuantParams {
    let lo = -rng.gen_range(0.0f32..3.0);
    let hi = rng.gen_range(0.01f32..3.0);
    QuantParams::from_range(lo, hi)
}

#[test]
fn int8_network_matches_reference() {
    let dir = std::env::temp_dir().join(format!("darknet-int8-ref-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    for case in 0..40 {
        let inputs = rng.gen_range(1..80);
        let depth = rng.gen_range(1..4);
        let mut sizes = vec![inputs];
        for _ in 0..depth {
            sizes.push(rng.gen_range(1..50));
        }
        let mut cfg_text = format!("[net]\nbatch=8\nheight=1\nwidth={inputs}\nchannels=1\n");
        let mut layers = Vec::new();
        let mut input_params = QuantParams::from_range(0.0, 1.0);
        for d in 0..depth {
            let (k, n) = (sizes[d], sizes[d + 1]);
            let relu = d + 1 < depth && rng.gen_bool(0.7);
            cfg_text += &format!("[connected]\noutput={n}\nactivation={}\n", if relu { "relu" } else { "linear" });
            let mut weight = random_params(&mut rng);
            weight.scale *= rng.gen_range(0.001f32..0.1);
            let mut output = if relu { QuantParams::from_range(0.0, rng.gen_range(0.1f32..8.0)) } else { random_params(&mut rng) };
            if case % 7 == 0 {
                // A multiplier >= 1: output scale smaller than S1*S2.
                output.scale = input_params.scale * weight.scale / rng.gen_range(1.0f32..6.0);
            }
            if relu && rng.gen_bool(0.3) {
                output.zero_point = rng.gen_range(-100i8..20);
            }
            let bias_span = if case % 5 == 0 { i32::MAX / 2 } else { 5000 };
            let w = LayerQWeights {
                biases: (0..n).map(|_| rng.gen_range(-bias_span..bias_span)).collect(),
                weights: (0..n * k).map(|_| rng.gen::<i8>()).collect(),
            };
            let q = LayerQParams { input: input_params, weight, output };
            layers.push(Layer { k, n, relu, q, w });
            input_params = output;
        }
        cfg_text += "[softmax]\n";
        let cfg_path: PathBuf = dir.join(format!("case{case}.cfg"));
        std::fs::write(&cfg_path, &cfg_text).unwrap();
        let qw = dir.join(format!("case{case}.qweights"));
        let qp = dir.join(format!("case{case}.qparams"));
        write_qweights(&qw, &layers.iter().map(|l| l.w.clone()).collect::<Vec<_>>()).unwrap();
        write_qparams(&qp, &layers.iter().map(|l| l.q).collect::<Vec<_>>()).unwrap();

        let cfg = NetworkConfig::load(&cfg_path).unwrap();
        let mut net = Int8Network::load(&cfg, &qw, &qp, 8).unwrap();
        assert_eq!(net.clamped_biases, 0, "case {case}: no bias needs clamping at these sizes");
        let rows = rng.gen_range(1..=8);
        let x: Vec<f32> = (0..rows * inputs).map(|_| rng.gen_range(0.0f32..1.0)).collect();
        net.predict(&x, rows);
        let n_out = *sizes.last().unwrap();
        for r in 0..rows {
            let mut q_in = vec![0i8; inputs];
            darknet::quant::affine::quantize_input(&x[r * inputs..(r + 1) * inputs], layers[0].q.input, &mut q_in);
            let expected = reference_forward(&layers, &q_in);
            assert_eq!(&net.last_q[r * n_out..(r + 1) * n_out], expected.as_slice(), "case {case} row {r}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reference_rescale_by_hand() {
    // acc 10000 with M = 0.00097656 gives 10 (a 64-bit overflow gave -10 in one runtime).
    let m = quantize_multiplier(0.00097656);
    assert_eq!(reference_rescale(10000, m.multiplier as i64, m.shift), 10);
    // 5 * 2^30 / 2^31 = 2.5 rounds up to 3 in the high multiply.
    assert_eq!(reference_rescale(5, 1 << 30, 0), 3);
}
