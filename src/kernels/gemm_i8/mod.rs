//! The int8 GEMM with its requantization epilogue:
//!
//! `out[r][o] = clamp(Z3 + M * acc[r][o], -128, 127)` where
//! `acc[r][o] = offset[o] - Z2 * Σ_k a[r][k] + Σ_k a[r][k] * w[o][k]`
//! and `offset[o] = bias[o] + K*Z1*Z2 - Z1 * Σ_k w[o][k]` is built once at load time.
//!
//! All sums are int32 with wrapping arithmetic. The caller guarantees at load
//! time that the exact accumulator fits in int32 (see
//! [`Requantization::new`]), so wrapping never changes a result.

pub mod scalar;

use crate::quant::fixed_point::FixedMultiplier;

/// Weights `[outputs][k]` as loaded, kept for the scalar path.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    pub outputs: usize,
    pub k: usize,
    /// Row-major `[outputs][k]`.
    pub rows: Vec<i8>,
    /// `Σ_k w[o][k]` per output.
    pub row_sums: Vec<i32>,
}

impl PackedWeights {
    /// Packs row-major `[outputs][k]` weights.
    pub fn new(weights: &[i8], outputs: usize, k: usize) -> Self {
        assert_eq!(weights.len(), outputs * k, "weights are not outputs x k");
        let row_sums = weights.chunks_exact(k.max(1)).take(outputs).map(|r| r.iter().map(|&w| w as i32).sum()).collect();
        PackedWeights { outputs, k, rows: weights.to_vec(), row_sums }
    }
}

/// The per-layer constants of the epilogue.
#[derive(Debug, Clone)]
pub struct Requantization {
    /// `bias + K*Z1*Z2 - Z1*Σw` per output.
    pub offsets: Vec<i32>,
    pub weight_zero_point: i32,
    pub multiplier: FixedMultiplier,
    pub output_zero_point: i32,
}

impl Requantization {
    /// Folds the zero points and the bias into per-output offsets. Biases are
    /// clamped so that `|acc| <= K * 255 * 255 + |bias|` stays inside int32;
    /// returns how many were clamped.
    pub fn new(
        weights: &PackedWeights,
        biases: &[i32],
        input_zero_point: i32,
        weight_zero_point: i32,
        multiplier: FixedMultiplier,
        output_zero_point: i32,
    ) -> (Requantization, usize) {
        let k = weights.k as i64;
        let bias_limit = (i32::MAX as i64 - k * 255 * 255).max(0);
        let mut clamped = 0;
        let offsets = weights
            .row_sums
            .iter()
            .zip(biases)
            .map(|(&sum, &bias)| {
                let b = (bias as i64).clamp(-bias_limit, bias_limit);
                clamped += (b != bias as i64) as usize;
                let z1 = input_zero_point as i64;
                let z2 = weight_zero_point as i64;
                // Wrapping is harmless: the final accumulator is exact in int32.
                (b + k * z1 * z2 - z1 * sum as i64) as i32
            })
            .collect();
        (Requantization { offsets, weight_zero_point, multiplier, output_zero_point }, clamped)
    }
}

/// Computes `output[rows][outputs]` from `input[rows][k]`.
pub fn gemm_requantize(input: &[i8], rows: usize, weights: &PackedWeights, rq: &Requantization, output: &mut [i8]) {
    assert!(input.len() >= rows * weights.k, "input shorter than rows x k");
    assert!(output.len() >= rows * weights.outputs, "output shorter than rows x outputs");
    scalar::gemm_requantize(input, rows, weights, rq, output);
}
