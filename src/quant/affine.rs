//! Scale and zero point, quantize, dequantize and fake quantization.

/// Rounds half away from zero, as C's `roundf`.
#[inline]
pub fn round_half_away(x: f32) -> f32 {
    x.round()
}

/// Scale and zero point of one tensor: `real = scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantParams {
    pub scale: f32,
    pub zero_point: i8,
}

impl QuantParams {
    /// Computes `S` and `Z` for the range `[min, max]` widened to contain 0
    /// (workshop exercise `cal_qsz`). A range of width 0 (all values 0, such
    /// as a dead ReLU output) gets `S = 1`, `Z = -128`: every value is 0,
    /// which is exact, and no division by zero happens.
    pub fn from_range(min: f32, max: f32) -> QuantParams {
        let min = min.min(0.0);
        let max = max.max(0.0);
        let scale = (max - min) / 255.0;
        if !(scale > 0.0) || !scale.is_finite() {
            return QuantParams { scale: 1.0, zero_point: -128 };
        }
        let zero_point = round_half_away(-128.0 - min / scale).clamp(-128.0, 127.0) as i8;
        QuantParams { scale, zero_point }
    }

    /// `q = clamp(round(x / S + Z), -128, 127)`.
    #[inline]
    pub fn quantize(&self, x: f32) -> i8 {
        round_half_away(x / self.scale + self.zero_point as f32).clamp(-128.0, 127.0) as i8
    }

    /// `x = S * (q - Z)`.
    #[inline]
    pub fn dequantize(&self, q: i8) -> f32 {
        self.scale * (q as i32 - self.zero_point as i32) as f32
    }
}

/// Quantizes then dequantizes each value in place (workshop exercise
/// `fake_quantize_int8_cpu`).
pub fn fake_quantize(values: &mut [f32], params: QuantParams) {
    for v in values.iter_mut() {
        *v = params.dequantize(params.quantize(*v));
    }
}

/// Quantizes the float network input before integer inference (the step the
/// workshop inserts into `network_predict_int8`), in f32 exactly as the C
/// fork: `q = round(clamp(Z1 + x / S1, -128, 127))`.
pub fn quantize_input(input: &[f32], params: QuantParams, out: &mut [i8]) {
    let z = params.zero_point as f32;
    for (q, &x) in out.iter_mut().zip(input) {
        *q = round_half_away((z + x / params.scale).clamp(-128.0, 127.0)) as i8;
    }
}

/// Quantizes a bias to int32 in units of `S1 * S2` with zero point 0,
/// saturating at the int32 limits.
pub fn quantize_bias(bias: f32, input_scale: f32, weight_scale: f32) -> i32 {
    let scaled = round_half_away(bias / (input_scale * weight_scale));
    if scaled.is_nan() {
        return 0;
    }
    // `as` saturates float-to-int casts at the target range.
    scaled as i32
}

/// Returns the minimum and maximum of `values` (0, 0 when empty).
pub fn min_max(values: &[f32]) -> (f32, f32) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_zero_point_by_hand() {
        // [0, 1]: S = 1/255, Z = round(-128 - 0) = -128.
        let p = QuantParams::from_range(0.0, 1.0);
        assert_eq!(p.scale, 1.0 / 255.0);
        assert_eq!(p.zero_point, -128);

        // [-1, 1.55]: S = 2.55/255 = 0.01, Z = round(-128 + 100) = -28.
        let p = QuantParams::from_range(-1.0, 1.55);
        assert!((p.scale - 0.01).abs() < 1e-8);
        assert_eq!(p.zero_point, -28);

        // A range that excludes 0 is widened: [2, 5.1] -> [0, 5.1], S = 0.02.
        let p = QuantParams::from_range(2.0, 5.1);
        assert!((p.scale - 0.02).abs() < 1e-8);
        assert_eq!(p.zero_point, -128);
    }

    #[test]
    fn zero_width_range_has_no_division() {
        let p = QuantParams::from_range(0.0, 0.0);
        assert_eq!(p, QuantParams { scale: 1.0, zero_point: -128 });
        assert_eq!(p.quantize(0.0), -128);
        assert_eq!(p.dequantize(-128), 0.0);
    }

    #[test]
    fn quantize_rounds_half_away_and_clamps() {
        let p = QuantParams { scale: 0.5, zero_point: 0 };
        assert_eq!(p.quantize(0.25), 1); // 0.5 -> 1
        assert_eq!(p.quantize(-0.25), -1); // -0.5 -> -1
        assert_eq!(p.quantize(0.74), 1); // 1.48 -> 1
        assert_eq!(p.quantize(100.0), 127);
        assert_eq!(p.quantize(-100.0), -128);
        assert_eq!(p.dequantize(-3), -1.5);
    }

    #[test]
    fn fake_quantize_by_hand() {
        let p = QuantParams { scale: 0.1, zero_point: 0 };
        let mut v = [0.12f32, -0.26, 13.0, -20.0];
        fake_quantize(&mut v, p);
        assert!((v[0] - 0.1).abs() < 1e-6);
        assert!((v[1] + 0.3).abs() < 1e-6);
        assert!((v[2] - 12.7).abs() < 1e-5);
        assert!((v[3] + 12.8).abs() < 1e-5);
    }

    #[test]
    fn input_quantization_by_hand() {
        let p = QuantParams::from_range(0.0, 1.0);
        let mut q = [0i8; 4];
        quantize_input(&[0.0, 1.0, 128.0 / 255.0, 0.5], p, &mut q);
        // In f32, -128 + 0.5 / (1/255) evaluates to -0.50000763, which rounds to -1.
        assert_eq!(q, [-128, 127, 0, -1]);
    }

    #[test]
    fn bias_quantization_saturates() {
        assert_eq!(quantize_bias(0.5, 0.01, 0.1), 500);
        assert_eq!(quantize_bias(-0.00051, 0.01, 0.1), -1);
        assert_eq!(quantize_bias(1e30, 1e-3, 1e-3), i32::MAX);
        assert_eq!(quantize_bias(-1e30, 1e-3, 1e-3), i32::MIN);
    }
}
