//! Property tests: every SIMD kernel must equal the scalar kernel bit for bit.

use super::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// A random layer and input batch.
struct Case {
    rows: usize,
    k: usize,
    outputs: usize,
    input: Vec<i8>,
    weights: PackedWeights,
    rq: Requantization,
}

impl Case {
    fn random(rng: &mut StdRng, rows: usize, k: usize, outputs: usize) -> Case {
        let input = random_bytes(rng, rows * k);
        let weights = PackedWeights::new(&random_bytes(rng, outputs * k), outputs, k);

        // Biases drawn near the clamp limit of `Requantization::new` push the
        // accumulators toward the int32 limits.
        let limit = (i32::MAX as i64 - k as i64 * 255 * 255).max(0);
        let biases: Vec<i32> = (0..outputs)
            .map(|_| match rng.gen_range(0..4) {
                0 => rng.gen(),
                1 => (limit - rng.gen_range(0..1000)).max(0) as i32,
                2 => -(limit - rng.gen_range(0..1000)).max(0) as i32,
                _ => rng.gen_range(-100_000..=100_000),
            })
            .collect();
        let multiplier =
            FixedMultiplier { multiplier: rng.gen_range(1 << 30..=i32::MAX), shift: rng.gen_range(-3..=40) };
        let (rq, _) = Requantization::new(
            &weights,
            &biases,
            rng.gen_range(-128..=127),
            rng.gen_range(-128..=127),
            multiplier,
            rng.gen_range(-128..=127),
        );
        Case { rows, k, outputs, input, weights, rq }
    }

    fn run(&self, kernel: Kernel, threads: usize) -> Vec<i8> {
        // Bytes past `rows * outputs` must stay untouched.
        let mut output = vec![0x55; self.rows * self.outputs + 17];
        gemm_requantize_with(kernel, threads, &self.input, self.rows, &self.weights, &self.rq, &mut output);
        assert!(
            output[self.rows * self.outputs..].iter().all(|&b| b == 0x55),
            "{} wrote past the output",
            kernel.name()
        );
        output
    }

    /// Compares every supported SIMD kernel with the scalar one.
    fn check(&self, threads: usize) {
        let expected = self.run(Kernel::Scalar, 1);
        for kernel in supported_simd_kernels() {
            let actual = self.run(kernel, threads);
            if let Some(i) = (0..expected.len()).find(|&i| actual[i] != expected[i]) {
                panic!(
                    "{} differs from scalar at row {}, output {}: {} != {} (rows {}, k {}, outputs {}, multiplier {:?}, Z2 {}, Z3 {}, threads {threads})",
                    kernel.name(),
                    i / self.outputs,
                    i % self.outputs,
                    actual[i],
                    expected[i],
                    self.rows,
                    self.k,
                    self.outputs,
                    self.rq.multiplier,
                    self.rq.weight_zero_point,
                    self.rq.output_zero_point,
                );
            }
        }
    }
}

/// Random bytes, a third of them at the ends of the int8 range.
fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<i8> {
    (0..len)
        .map(|_| match rng.gen_range(0..6) {
            0 => -128,
            1 => 127,
            _ => rng.gen(),
        })
        .collect()
}

/// Lists the SIMD kernels this CPU supports and prints a message for each it lacks.
fn supported_simd_kernels() -> Vec<Kernel> {
    [Kernel::Avx2, Kernel::Avx512Vnni]
        .into_iter()
        .filter(|&kernel| {
            let supported = kernel.is_supported();
            if !supported {
                eprintln!("skipping the {} kernel: this CPU does not support it", kernel.name());
            }
            supported
        })
        .collect()
}

#[test]
fn simd_matches_scalar_on_small_shapes() {
    let mut rng = StdRng::seed_from_u64(1);
    for k in 1..=70 {
        for _ in 0..12 {
            let (rows, outputs) = (rng.gen_range(1..=9), rng.gen_range(1..=40));
            Case::random(&mut rng, rows, k, outputs).check(1);
        }
    }
}

#[test]
fn simd_matches_scalar_on_network_shapes() {
    let mut rng = StdRng::seed_from_u64(2);
    for (k, outputs) in [(2352, 1024), (1024, 512), (512, 256), (256, 10)] {
        for rows in [1, 128] {
            Case::random(&mut rng, rows, k, outputs).check(1);
        }
    }
}

#[test]
fn simd_matches_scalar_with_threads() {
    let mut rng = StdRng::seed_from_u64(3);
    for (rows, k, outputs) in [(2, 5, 3), (7, 33, 17), (64, 70, 40), (129, 256, 10)] {
        let case = Case::random(&mut rng, rows, k, outputs);
        for threads in [2, 3, 200] {
            case.check(threads);
            assert_eq!(case.run(Kernel::Scalar, threads), case.run(Kernel::Scalar, 1), "scalar with {threads} threads");
        }
    }
}

#[test]
fn simd_matches_scalar_at_int32_limits() {
    // With w = -128 and Z2 = 127 every weight term is q2 - Z2 = -255. Input
    // -128 with Z1 = 127 makes each product +255^2, so a bias at the clamp
    // limit puts the accumulator at exactly i32::MAX; input 127 with
    // Z1 = -128 and the negative limit give exactly -i32::MAX.
    for (input_value, input_zero_point, bias) in [(-128i8, 127, i32::MAX), (127, -128, i32::MIN)] {
        for (k, outputs, rows) in [(1, 1, 1), (3, 17, 2), (64, 33, 7), (70, 40, 9)] {
            let weights = PackedWeights::new(&vec![-128; outputs * k], outputs, k);
            for shift in -3..=40 {
                for multiplier in [1 << 30, i32::MAX] {
                    let fixed = FixedMultiplier { multiplier, shift };
                    let (rq, clamped) =
                        Requantization::new(&weights, &vec![bias; outputs], input_zero_point, 127, fixed, -7);
                    assert_eq!(clamped, outputs, "every bias should be clamped to the limit");
                    let input = vec![input_value; rows * k];
                    let case = Case { rows, k, outputs, input, weights: weights.clone(), rq };
                    case.check(1);
                }
            }
        }
    }
}

#[test]
fn simd_matches_scalar_for_unusual_multipliers() {
    // Multipliers that `quantize_multiplier` never returns still follow the
    // scalar arithmetic, including the saturating i32::MIN * i32::MIN.
    let mut rng = StdRng::seed_from_u64(4);
    for multiplier in [0, 1, -1, i32::MIN, i32::MIN + 1, -(1 << 30)] {
        for shift in [-31, -5, -1, 0, 1, 31, 32, 33, 63, 100] {
            let mut case = Case::random(&mut rng, 5, 37, 21);
            case.rq.multiplier = FixedMultiplier { multiplier, shift };
            case.check(1);
        }
    }
}

#[test]
fn empty_shapes() {
    let mut rng = StdRng::seed_from_u64(5);
    for (rows, k, outputs) in [(0, 4, 4), (3, 0, 5), (3, 4, 0)] {
        Case::random(&mut rng, rows, k, outputs).check(2);
    }
}

#[test]
fn panel_layout() {
    let (outputs, k) = (19, 6);
    let weights: Vec<i8> = (0..outputs * k).map(|i| (i % 251) as i8).collect();
    let packed = PackedWeights::new(&weights, outputs, k);
    assert_eq!(packed.panels.len(), 2 * 2);
    for p in 0..2 {
        for q in 0..2 {
            for j in 0..PANEL_WIDTH {
                for t in 0..K_GROUP {
                    let (o, i) = (p * PANEL_WIDTH + j, q * K_GROUP + t);
                    let expected = if o < outputs && i < k { weights[o * k + i] } else { 0 };
                    assert_eq!(packed.panels[p * 2 + q].0[j * K_GROUP + t], expected, "output {o}, k {i}");
                }
            }
        }
    }
}

#[test]
fn kernel_names_parse() {
    for kernel in Kernel::ALL {
        assert_eq!(kernel.name().parse::<Kernel>(), Ok(kernel));
    }
    let error = "avx512".parse::<Kernel>().unwrap_err();
    assert!(error.contains("expected scalar, avx2 or vnni"), "{error}");
}
