//! The requantization of one accumulator split into the lane operations of
//! the SIMD epilogues, with a scalar model of those operations that the tests
//! compare to [`multiply_by_multiplier`](crate::quant::fixed_point::multiply_by_multiplier).

use super::Requantization;
use crate::quant::fixed_point::FixedMultiplier;

/// The per-layer constants of the lane algorithm in [`RescaleSteps::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RescaleSteps {
    /// The Q31 mantissa `M0`.
    pub multiplier: i32,
    /// Saturating left shift before the high multiply, in `0..=31` (nonzero when `M >= 1`).
    pub left_shift: u32,
    /// Rounding right shift after the high multiply, in `0..=63`.
    pub right_shift: u32,
    /// Lower clamp before the zero point is added: `max(-128 - Z3, i32::MIN)`.
    pub low: i32,
    /// Upper clamp before the zero point is added: `min(127 - Z3, i32::MAX)`.
    pub high: i32,
    pub output_zero_point: i32,
}

impl RescaleSteps {
    /// Splits `multiplier` into the shifts that
    /// [`multiply_by_multiplier`](crate::quant::fixed_point::multiply_by_multiplier)
    /// applies, with the same limits (left shifts stop at 31, right shifts at 63).
    pub fn new(multiplier: FixedMultiplier, output_zero_point: i32) -> RescaleSteps {
        let shift = multiplier.shift;
        let zero_point = output_zero_point as i64;
        RescaleSteps {
            multiplier: multiplier.multiplier,
            left_shift: if shift < 0 { shift.unsigned_abs().min(31) } else { 0 },
            right_shift: if shift > 0 { shift.unsigned_abs().min(63) } else { 0 },
            low: (-128 - zero_point).max(i32::MIN as i64) as i32,
            high: (127 - zero_point).min(i32::MAX as i64) as i32,
            output_zero_point,
        }
    }

    /// Takes the multiplier and output zero point of `rq`.
    pub fn of(rq: &Requantization) -> RescaleSteps {
        RescaleSteps::new(rq.multiplier, rq.output_zero_point)
    }

    /// Checks whether the high multiply can meet `i32::MIN * i32::MIN`, the one
    /// product whose rounded result overflows and saturates to `i32::MAX`.
    pub fn can_overflow(&self) -> bool {
        self.multiplier == i32::MIN
    }

    /// Requantizes one accumulator with the operations the SIMD lanes run:
    /// 1. saturating left shift: `x << left`, or `i32::MAX`/`i32::MIN` when
    ///    `x` lies outside `[i32::MIN >> left, i32::MAX >> left]`;
    /// 2. high multiply `floor((x * M0 + 2^30) / 2^31)` (see the module doc of
    ///    `gemm_i8` for why this equals gemmlowp's nudge and truncation);
    /// 3. rounding right shift with ties away from zero. A shift of 32 or
    ///    more gives 0, because the high multiply never returns `i32::MIN`
    ///    (its most negative product is `i32::MIN * i32::MAX`), and only
    ///    `i32::MIN >> 32` would round to -1;
    /// 4. clamp to `[low, high]`, then add `Z3`. The sum cannot overflow and
    ///    equals `clamp(v + Z3, -128, 127)`.
    pub fn apply(&self, acc: i32) -> i8 {
        let left = self.left_shift;
        let x = if acc > i32::MAX >> left {
            i32::MAX
        } else if acc < i32::MIN >> left {
            i32::MIN
        } else {
            acc << left
        };

        let product = x as i64 * self.multiplier as i64;
        let high =
            if x == i32::MIN && self.multiplier == i32::MIN { i32::MAX } else { ((product + (1 << 30)) >> 31) as i32 };

        let right = self.right_shift;
        let shifted = match right {
            0 => high,
            1..=31 => {
                let mask = ((1i64 << right) - 1) as i32;
                let threshold = (mask >> 1) - (high >> 31);
                (high >> right) + ((high & mask) > threshold) as i32
            }
            _ => 0,
        };

        shifted.clamp(self.low, self.high).wrapping_add(self.output_zero_point) as i8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::fixed_point::multiply_by_multiplier;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn reference(acc: i32, m: FixedMultiplier, zero_point: i32) -> i8 {
        (multiply_by_multiplier(acc, m) as i64 + zero_point as i64).clamp(-128, 127) as i8
    }

    #[test]
    fn lane_steps_match_multiply_by_multiplier() {
        let special =
            [i32::MIN, i32::MIN + 1, -(1 << 30), -65537, -3, -1, 0, 1, 2, 3, 65535, 1 << 30, i32::MAX - 1, i32::MAX];
        let multipliers = [0, 1, -1, 1 << 30, (1 << 30) + 1, i32::MAX - 127, i32::MAX, i32::MIN, i32::MIN + 1];
        let zero_points = [-128, -1, 0, 5, 127, i32::MIN, i32::MIN + 100, i32::MAX - 100, i32::MAX];
        let mut rng = StdRng::seed_from_u64(7);
        for shift in -40..=70 {
            for &multiplier in &multipliers {
                let m = FixedMultiplier { multiplier, shift };
                for &zero_point in &zero_points {
                    let steps = RescaleSteps::new(m, zero_point);
                    for &acc in &special {
                        assert_eq!(
                            steps.apply(acc),
                            reference(acc, m, zero_point),
                            "acc {acc}, {m:?}, zero point {zero_point}"
                        );
                    }
                }
            }
        }
        for _ in 0..1_000_000 {
            let m = FixedMultiplier { multiplier: rng.gen_range(1 << 30..=i32::MAX), shift: rng.gen_range(-35..=66) };
            let zero_point = rng.gen_range(-128..=127);
            let acc = match rng.gen_range(0..3) {
                0 => rng.gen(),
                1 => rng.gen_range(-100_000..=100_000),
                _ => rng.gen_range(-40..=40) + if rng.gen() { i32::MIN + 40 } else { i32::MAX - 40 },
            };
            let steps = RescaleSteps::new(m, zero_point);
            assert_eq!(steps.apply(acc), reference(acc, m, zero_point), "acc {acc}, {m:?}, zero point {zero_point}");
        }
    }
}
