//! Per-tensor int8 quantization, written once.
//!
//! # The identities
//!
//! A real value `r` is represented by an int8 `q` with a scale `S > 0` and a
//! zero point `Z`: `r = S * (q - Z)`. The range `[min, max]` is first widened
//! to contain 0, so that real 0 has an exact code (`q = Z`), which padding
//! and ReLU rely on. Then `S = (max - min) / 255` spreads the range over the
//! 256 codes and `Z = round(-128 - min / S)` puts `min` at code -128.
//!
//! A connected layer computes `r3 = Σ_k r1_k * r2_k + bias`. Writing each
//! factor as `S * (q - Z)`:
//!
//! `S3 (q3 - Z3) = S1 S2 Σ_k (q1_k - Z1)(q2_k - Z2) + bias`
//!
//! so `q3 = Z3 + M * acc` with `M = S1 S2 / S3` and the int32 accumulator
//! `acc = Σ_k (q1_k - Z1)(q2_k - Z2) + bias_q`, where `bias_q = round(bias /
//! (S1 S2))` is already in the accumulator's units: it is added before the
//! rescale, never after it.
//!
//! Expanding the product gives
//! `Σ q1 q2 - Z2 Σ q1 - Z1 Σ q2 + K Z1 Z2`. The terms `Z1 Σ q2` and `K Z1 Z2`
//! depend only on the weights, so they are folded with the bias into one
//! constant per output at load time. Only `Σ q1 q2` and `Z2 Σ q1` are
//! computed per input.
//!
//! `M` is a real number, but the integer path must not use floats. Any
//! positive `M` is `M0 * 2^-shift` with `M0 / 2^31` in `[0.5, 1)`, so `M0` is
//! a Q31 integer in `[2^30, 2^31)`. The product `acc * M0` fits in 64 bits;
//! keeping its rounded upper half (the rounding doubling high multiply)
//! computes `acc * M0 / 2^31`, and a rounding right shift by `shift`
//! finishes `acc * M`. For `M >= 1` the shift is negative: a left shift
//! before the multiply.
//!
//! Fake quantization (`r -> S * (clamp(round(r / S + Z)) - Z)`) applies the
//! same rounding and clamping in float during training, so the network
//! learns weights that survive it; its gradient is passed through unchanged
//! (the straight-through estimator).
//!
//! Workshop exercises and where they live: [`observer::ema_update`] (EMA of
//! min/max), [`affine::QuantParams::from_range`] (S and Z),
//! [`affine::fake_quantize`], [`affine::quantize_input`],
//! [`fixed_point::quantize_multiplier`] (real M to Q31 and shift), and
//! [`fixed_point::requantize`] (the int32 bias added to the accumulator).

pub mod affine;
pub mod fixed_point;
pub mod int8_network;
pub mod observer;
pub mod qat;
