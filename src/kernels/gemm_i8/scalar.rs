//! The portable int8 GEMM; the reference every SIMD path must equal bit for bit.

use super::{PackedWeights, Requantization};
use crate::quant::fixed_point::multiply_by_multiplier;

pub fn gemm_requantize(input: &[i8], rows: usize, weights: &PackedWeights, rq: &Requantization, output: &mut [i8]) {
    let (k, n) = (weights.k, weights.outputs);
    for r in 0..rows {
        let a = &input[r * k..(r + 1) * k];
        let a_sum: i32 = a.iter().map(|&v| v as i32).sum();
        let row_term = rq.weight_zero_point.wrapping_mul(a_sum);
        for o in 0..n {
            let w = &weights.rows[o * k..(o + 1) * k];
            let dot = a.iter().zip(w).fold(0i32, |acc, (&x, &y)| acc.wrapping_add(x as i32 * y as i32));
            let acc = rq.offsets[o].wrapping_sub(row_term).wrapping_add(dot);
            let scaled = multiply_by_multiplier(acc, rq.multiplier);
            output[r * n + o] = (scaled as i64 + rq.output_zero_point as i64).clamp(-128, 127) as i8;
        }
    }
}
