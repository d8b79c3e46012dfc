//! The fixed-point rescale: a real multiplier as a Q31 mantissa and a shift,
//! the rounding doubling high multiply and the rounding right shift
//! (gemmlowp/TFLite semantics, with the exact rounding the C fork uses).

/// `M ≈ multiplier * 2^(-31 - shift)` with `multiplier` in `[2^30, 2^31)`.
/// A negative `shift` is a left shift (`M >= 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedMultiplier {
    pub multiplier: i32,
    pub shift: i32,
}

/// Splits a real multiplier into a Q31 mantissa and a shift (the workshop
/// exercise "compute the real M"): normalize to `[0.5, 1)` by doubling (or
/// halving when `M >= 1`), then round `M * 2^31`. A non-positive or non-finite
/// `M` gives multiplier 0, which maps every accumulator to 0.
pub fn quantize_multiplier(real: f32) -> FixedMultiplier {
    if !(real > 0.0) || !real.is_finite() {
        return FixedMultiplier { multiplier: 0, shift: 0 };
    }
    let mut m = real;
    let mut shift = 0i32;
    while m < 0.5 {
        m *= 2.0;
        shift += 1;
    }
    while m >= 1.0 {
        m *= 0.5;
        shift -= 1;
    }
    let mut q = (m as f64 * 2f64.powi(31)).round() as i64;
    if q == 1i64 << 31 {
        q /= 2;
        shift -= 1;
    }
    FixedMultiplier { multiplier: q as i32, shift }
}

/// Computes the real multiplier `M = (S1 * S2) / S3` in f32, as two operations.
pub fn real_multiplier(input_scale: f32, weight_scale: f32, output_scale: f32) -> f32 {
    (input_scale * weight_scale) / output_scale
}

/// Computes `a * b / 2^31` rounded as gemmlowp does: ties of positive
/// products go up, ties of negative products toward zero. The product is
/// formed in i64 so it cannot overflow. The single overflowing result
/// (`i32::MIN * i32::MIN`) saturates to `i32::MAX`.
#[inline]
pub fn rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let product = a as i64 * b as i64;
    let nudge: i64 = if product >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Division truncates toward zero, which with the nudge above rounds half
    // away from zero; an arithmetic shift would floor instead.
    ((product + nudge) / (1i64 << 31)) as i32
}

/// `round(value / 2^shift)` with ties away from zero, for `shift` in `0..=63`.
#[inline]
pub fn rounding_shift_right(value: i32, shift: i32) -> i32 {
    if shift <= 0 {
        return value;
    }
    let shift = shift.min(63) as u32;
    let v = value as i64;
    let mask = (1i64 << shift) - 1;
    let remainder = v & mask;
    let threshold = (mask >> 1) + (v < 0) as i64;
    ((v >> shift) + (remainder > threshold) as i64) as i32
}

/// Multiplies an accumulator by `M` in fixed point.
#[inline]
pub fn multiply_by_multiplier(acc: i32, m: FixedMultiplier) -> i32 {
    if m.shift < 0 {
        let left = (-m.shift).min(31) as u32;
        let shifted = ((acc as i64) << left).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        rounding_doubling_high_mul(shifted, m.multiplier)
    } else {
        rounding_shift_right(rounding_doubling_high_mul(acc, m.multiplier), m.shift)
    }
}

/// Adds the int32 bias to the accumulator (both in units of `S1 * S2`, the
/// workshop's last exercise), rescales by `M` and applies the output zero
/// point and the int8 clamp.
#[inline]
pub fn requantize(acc: i32, bias: i32, m: FixedMultiplier, output_zero_point: i32) -> i8 {
    let scaled = multiply_by_multiplier(acc.saturating_add(bias), m);
    (scaled as i64 + output_zero_point as i64).clamp(-128, 127) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplier_by_hand() {
        // 0.25 = 0.5 * 2^-1: mantissa 2^30, shift 1.
        assert_eq!(quantize_multiplier(0.25), FixedMultiplier { multiplier: 1 << 30, shift: 1 });
        // 0.75 needs no shift: round(0.75 * 2^31) = 1610612736.
        assert_eq!(quantize_multiplier(0.75), FixedMultiplier { multiplier: 1610612736, shift: 0 });
        // 3.0 = 0.75 * 2^2: a left shift of 2.
        assert_eq!(quantize_multiplier(3.0), FixedMultiplier { multiplier: 1610612736, shift: -2 });
        assert_eq!(quantize_multiplier(0.0).multiplier, 0);
        assert_eq!(quantize_multiplier(f32::NAN).multiplier, 0);
    }

    #[test]
    fn multiplier_just_below_one() {
        // 1 - 2^-24 is the largest f32 below 1: its Q31 form is exact, 2^31 - 128.
        let m = quantize_multiplier(0.99999994);
        assert_eq!(m, FixedMultiplier { multiplier: i32::MAX - 127, shift: 0 });
    }

    #[test]
    fn high_mul_by_hand() {
        // 10 * 2^30 / 2^31 = 5 exactly.
        assert_eq!(rounding_doubling_high_mul(10, 1 << 30), 5);
        // 3 * 2^30 / 2^31 = 1.5 -> 2. For a negative product the nudge is
        // 1 - 2^30 and the division truncates, so -1.5 -> -1 (gemmlowp's rule).
        assert_eq!(rounding_doubling_high_mul(3, 1 << 30), 2);
        assert_eq!(rounding_doubling_high_mul(-3, 1 << 30), -1);
        assert_eq!(rounding_doubling_high_mul(-5, 1 << 30), -2); // -2.5 -> -2
        assert_eq!(rounding_doubling_high_mul(-7, 1 << 30), -3); // -3.5 -> -3
        assert_eq!(rounding_doubling_high_mul(i32::MIN, i32::MIN), i32::MAX);
        assert_eq!(rounding_doubling_high_mul(i32::MAX, i32::MAX), i32::MAX - 1);
    }

    #[test]
    fn rounding_shift_ties_both_signs() {
        assert_eq!(rounding_shift_right(5, 1), 3); // 2.5 -> 3
        assert_eq!(rounding_shift_right(-5, 1), -3); // -2.5 -> -3
        assert_eq!(rounding_shift_right(6, 2), 2); // 1.5 -> 2
        assert_eq!(rounding_shift_right(-6, 2), -2); // -1.5 -> -2
        assert_eq!(rounding_shift_right(-7, 2), -2); // -1.75 -> -2
        assert_eq!(rounding_shift_right(-5, 2), -1); // -1.25 -> -1
        assert_eq!(rounding_shift_right(i32::MIN, 31), -1);
        assert_eq!(rounding_shift_right(i32::MIN, 32), -1); // -0.5 -> -1
        assert_eq!(rounding_shift_right(i32::MAX, 40), 0);
    }

    #[test]
    fn acc_10000_times_0_00097656_is_10() {
        let m = quantize_multiplier(0.00097656);
        assert_eq!(multiply_by_multiplier(10000, m), 10);
        assert_eq!(multiply_by_multiplier(-10000, m), -10);
    }

    #[test]
    fn multiplier_at_least_one() {
        let m = quantize_multiplier(3.0);
        assert_eq!(multiply_by_multiplier(7, m), 21);
        assert_eq!(multiply_by_multiplier(-7, m), -21);
        let m = quantize_multiplier(1.0);
        assert_eq!(multiply_by_multiplier(123, m), 123);
        // The left shift saturates instead of wrapping, so a huge accumulator
        // still maps to the top of the int8 range.
        assert!(multiply_by_multiplier(i32::MAX, quantize_multiplier(4.0)) > 0);
        assert_eq!(requantize(i32::MAX, 0, quantize_multiplier(4.0), 0), 127);
        assert_eq!(requantize(i32::MIN + 1, 0, quantize_multiplier(4.0), 0), -128);
    }

    #[test]
    fn accumulators_near_i32_limits() {
        let m = quantize_multiplier(0.5);
        assert_eq!(multiply_by_multiplier(i32::MAX, m), 1 << 30);
        assert_eq!(multiply_by_multiplier(i32::MIN, m), -(1 << 30));
        assert_eq!(requantize(i32::MAX, 0, quantize_multiplier(0.001), 0), 127);
        assert_eq!(requantize(i32::MIN, 0, quantize_multiplier(0.001), 0), -128);
    }

    #[test]
    fn bias_added_before_rescale() {
        // acc 100 + bias 60 = 160, times 0.25 = 40, plus Z3 -10 = 30.
        assert_eq!(requantize(100, 60, quantize_multiplier(0.25), -10), 30);
        // Adding after the multiply would give 25 + 60 - 10 = 75.
        assert_eq!(requantize(-1000, 0, quantize_multiplier(0.25), 0), -128);
    }
}
