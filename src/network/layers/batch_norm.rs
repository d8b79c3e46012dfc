//! Darknet's batch normalization for `[connected]` and `[convolutional]`
//! layers, and the folded form that QAT trains.
//!
//! Values are laid out `[batch][outputs][positions]`: a connected layer has
//! one position per output, a convolution `out_height * out_width`. Each
//! output has one mean and variance over the batch and all its positions.
//! Darknet divides the variance by `count - 1` and adds [`BN_EPSILON`] to the
//! standard deviation, not to the variance.
//!
//! # Batch norm during QAT
//!
//! A deployed int8 layer has no batch norm, so QAT trains the folded form
//! `W_f = W * γ / σ`, `b_f = b - γ * μ / σ` with `σ = sqrt(rolling variance)
//! + ε` and `μ` the rolling mean ([`fold_batch_norm`]). When a
//! batch-normalized layer finds `Params::forward_weights` set, those are the
//! fake-quantized folded weights: the layer skips batch norm, adds `b_f`, and
//! leaves the rolling statistics unchanged (they are frozen during QAT). The
//! backward pass maps the gradient of `W_f` and `b_f` back onto the masters
//! `W`, `γ` and `b` ([`BatchNormPass::unfold_gradients`]).

use super::params::{BatchNorm, Params};
use super::zeros;
use rayon::prelude::*;

/// Darknet adds this to the standard deviation before dividing.
pub const BN_EPSILON: f32 = 1e-6;

/// The batch-norm scratch of one layer: the normalized values and batch
/// statistics of the last training pass, and the buffers of the folded form.
pub struct BatchNormPass {
    outputs: usize,
    positions: usize,
    /// `[batch][outputs][positions]`, the values after normalization and
    /// before the scales.
    x_norm: Vec<f32>,
    mean: Vec<f32>,
    variance: Vec<f32>,
    /// The folded biases `b_f` used during QAT.
    pub folded_biases: Vec<f32>,
    /// Gradient of the folded weights `W_f`, `[outputs][fan_in]`.
    pub folded_updates: Vec<f32>,
}

impl BatchNormPass {
    pub fn new(outputs: usize, positions: usize, fan_in: usize, max_batch: usize) -> BatchNormPass {
        BatchNormPass {
            outputs,
            positions,
            x_norm: zeros(max_batch * outputs * positions),
            mean: zeros(outputs),
            variance: zeros(outputs),
            folded_biases: zeros(outputs),
            folded_updates: zeros(outputs * fan_in),
        }
    }

    /// Normalizes `values[..batch]` in place with the batch statistics
    /// (training, which also moves the rolling ones) or the rolling ones, then
    /// multiplies by the scales.
    pub fn forward(&mut self, bn: &mut BatchNorm, values: &mut [f32], batch: usize, train: bool) {
        let (n, p) = (self.outputs, self.positions);
        let values = &mut values[..batch * n * p];
        if train {
            let values: &[f32] = values;
            let count = (batch * p) as f64;
            let statistics: Vec<(f32, f32)> = (0..n)
                .into_par_iter()
                .map(|f| {
                    let of_output = || values.chunks_exact(n * p).flat_map(move |image| &image[f * p..(f + 1) * p]);
                    let mean = of_output().map(|&v| v as f64).sum::<f64>() / count;
                    let squares: f64 = of_output().map(|&v| (v as f64 - mean).powi(2)).sum();
                    // A single value has no spread, so the divisor stays at least 1.
                    (mean as f32, (squares / (count - 1.0).max(1.0)) as f32)
                })
                .collect();
            for (f, (mean, variance)) in statistics.into_iter().enumerate() {
                self.mean[f] = mean;
                self.variance[f] = variance;
                bn.rolling_mean[f] = 0.99 * bn.rolling_mean[f] + 0.01 * mean;
                bn.rolling_variance[f] = 0.99 * bn.rolling_variance[f] + 0.01 * variance;
            }
        }

        let (mean, variance) = if train { (&self.mean, &self.variance) } else { (&bn.rolling_mean, &bn.rolling_variance) };
        let scales = &bn.scales;
        let normalize = |image: &mut [f32], mut x_norm: Option<&mut [f32]>| {
            for (f, of_output) in image.chunks_exact_mut(p).enumerate() {
                let s = variance[f].sqrt() + BN_EPSILON;
                for (i, v) in of_output.iter_mut().enumerate() {
                    let normalized = (*v - mean[f]) / s;
                    if let Some(x_norm) = x_norm.as_deref_mut() {
                        x_norm[f * p + i] = normalized;
                    }
                    *v = normalized * scales[f];
                }
            }
        };
        if train {
            values
                .par_chunks_mut(n * p)
                .zip(self.x_norm[..batch * n * p].par_chunks_mut(n * p))
                .for_each(|(image, x_norm)| normalize(image, Some(x_norm)));
        } else {
            values.par_chunks_mut(n * p).for_each(|image| normalize(image, None));
        }
    }

    /// Back-propagates `delta[..batch]` through the scales and the
    /// normalization with the batch statistics of the last training forward
    /// pass, replacing it by the delta before batch norm, and adds the scale
    /// gradient to `bn.scale_updates`.
    pub fn backward(&mut self, bn: &mut BatchNorm, delta: &mut [f32], batch: usize) {
        let (n, p) = (self.outputs, self.positions);
        let count = batch * p;
        let denom = (count.max(2) - 1) as f32;
        let delta = &mut delta[..batch * n * p];
        let x_norm = &self.x_norm[..batch * n * p];

        // Per output: Σ delta and Σ delta * x_norm (the scale gradient).
        let sums: Vec<(f64, f64)> = {
            let delta: &[f32] = delta;
            (0..n)
                .into_par_iter()
                .map(|f| {
                    let (mut sum_d, mut sum_d_xn) = (0.0f64, 0.0f64);
                    for b in 0..batch {
                        let range = (b * n + f) * p..(b * n + f + 1) * p;
                        for (&d, &xn) in delta[range.clone()].iter().zip(&x_norm[range]) {
                            sum_d += d as f64;
                            sum_d_xn += (d * xn) as f64;
                        }
                    }
                    (sum_d, sum_d_xn)
                })
                .collect()
        };

        // g = d(-L)/d(x_norm) = delta * scale; x_norm = (x - mean) / s with
        // s = sqrt(var) + eps, and xc = x - mean = x_norm * s.
        let mut coefficients = Vec::with_capacity(n);
        for (f, &(sum_d, sum_d_xn)) in sums.iter().enumerate() {
            bn.scale_updates[f] += sum_d_xn as f32;
            let std = self.variance[f].sqrt();
            let s = std + BN_EPSILON;
            let scale = bn.scales[f];
            let (sum_g, sum_g_xc) = (sum_d as f32 * scale, sum_d_xn as f32 * scale * s);
            // d/dvar through s: -sum(g * xc) / s^2 * 1 / (2 sqrt(var)).
            let d_var = if std > 0.0 { -sum_g_xc / (s * s) / (2.0 * std) } else { 0.0 };
            let d_mean = -sum_g / s;
            // delta = g / s + d_var * 2 xc / denom + d_mean / count, with xc = x_norm * s.
            coefficients.push((scale / s, d_var * 2.0 * s / denom, d_mean / count as f32));
        }
        delta.par_chunks_mut(n * p).zip(x_norm.par_chunks(n * p)).for_each(|(d_image, x_image)| {
            for (f, (d_values, x_values)) in d_image.chunks_exact_mut(p).zip(x_image.chunks_exact(p)).enumerate() {
                let (from_delta, from_x, constant) = coefficients[f];
                for (d, &xn) in d_values.iter_mut().zip(x_values) {
                    *d = *d * from_delta + xn * from_x + constant;
                }
            }
        });
    }

    /// Sets [`BatchNormPass::folded_biases`] to `b_f` from the current masters.
    /// It reads only the per-output values, since it runs in every forward
    /// pass of QAT.
    pub fn fold_biases(&mut self, params: &Params) {
        let bn = params.batch_norm.as_ref().expect("a batch-normalized layer has batch-norm parameters");
        for (f, (folded, &bias)) in self.folded_biases.iter_mut().zip(&params.biases).enumerate() {
            *folded = bias - bn.rolling_mean[f] * fold_factor(bn, f);
        }
    }

    /// Maps the gradient of the folded weights (in `folded_updates`) and of
    /// the folded bias onto the masters. `W_f = W γ / σ` and `b_f = b - γ μ / σ`
    /// give `dW = dW_f γ / σ` and `dγ = (Σ dW_f W - μ Σ delta) / σ`, where
    /// `delta_sums[f]` is `Σ delta` of output `f`. The caller has already
    /// added `db = db_f`.
    pub fn unfold_gradients(&self, params: &mut Params, delta_sums: &[f32]) {
        let k = params.layout.fan_in();
        let bn = params.batch_norm.as_mut().expect("a batch-normalized layer has batch-norm parameters");
        for (f, &delta_sum) in delta_sums.iter().enumerate().take(self.outputs) {
            let inv_sigma = 1.0 / (bn.rolling_variance[f].sqrt() + BN_EPSILON);
            let factor = bn.scales[f] * inv_sigma;
            let mut dot = 0.0f32;
            for i in f * k..(f + 1) * k {
                let u = self.folded_updates[i];
                params.weight_updates[i] += factor * u;
                dot += u * params.weights[i];
            }
            bn.scale_updates[f] += inv_sigma * (dot - bn.rolling_mean[f] * delta_sum);
        }
    }
}

/// Runs the part of a layer's forward pass between its GEMM and its biases:
/// batch norm of `values[..batch]`, or in the folded form (QAT of a
/// batch-normalized layer) the update of the folded biases. Returns the
/// biases that the layer adds next.
pub fn forward_step<'a>(norm: Option<&'a mut BatchNormPass>, params: &'a mut Params, values: &mut [f32], batch: usize, train: bool) -> &'a [f32] {
    let folded = params.forward_weights.is_some();
    match norm {
        None => &params.biases,
        Some(norm) if folded => {
            norm.fold_biases(params);
            &norm.folded_biases
        }
        Some(norm) => {
            let bn = params.batch_norm.as_mut().expect("a batch-normalized layer has batch-norm parameters");
            norm.forward(bn, values, batch, train);
            &params.biases
        }
    }
}

/// Returns the buffer that a layer's weight gradient accumulates into: the
/// folded weights' gradient in the folded form, `weight_updates` otherwise.
pub fn weight_gradient_target<'a>(norm: Option<&'a mut BatchNormPass>, weight_updates: &'a mut Vec<f32>, folded: bool) -> &'a mut Vec<f32> {
    match norm {
        Some(norm) if folded => &mut norm.folded_updates,
        _ => weight_updates,
    }
}

/// Ends a layer's backward pass in the folded form by mapping the folded
/// gradients onto the masters ([`BatchNormPass::unfold_gradients`]).
/// `delta_sums[f]` is `Σ delta` of output `f`. Otherwise it does nothing.
pub fn unfold_step(norm: Option<&BatchNormPass>, params: &mut Params, delta_sums: &[f32]) {
    if let Some(norm) = norm.filter(|_| params.forward_weights.is_some()) {
        norm.unfold_gradients(params, delta_sums);
    }
}

/// Runs the part of a layer's backward pass between its bias gradient and
/// its weight gradient: back-propagation through batch norm, or in the folded
/// form the reset of the folded weights' gradient.
pub fn backward_step(norm: Option<&mut BatchNormPass>, params: &mut Params, delta: &mut [f32], batch: usize) {
    let Some(norm) = norm else { return };
    if params.forward_weights.is_some() {
        norm.folded_updates.fill(0.0);
    } else {
        let bn = params.batch_norm.as_mut().expect("a batch-normalized layer has batch-norm parameters");
        norm.backward(bn, delta, batch);
    }
}

/// Folds batch norm into the weights and biases with the rolling statistics
/// (see the module doc) and returns `(weights, biases)`. Without batch norm
/// it returns copies of the masters. Both [`super::ParamLayout`]s store the
/// weights of one output contiguously, so one loop serves both.
pub fn fold_batch_norm(params: &Params) -> (Vec<f32>, Vec<f32>) {
    let mut weights = params.weights.clone();
    let mut biases = params.biases.clone();
    if let Some(bn) = &params.batch_norm {
        let k = params.layout.fan_in();
        for (f, bias) in biases.iter_mut().enumerate() {
            let factor = fold_factor(bn, f);
            for w in &mut weights[f * k..(f + 1) * k] {
                *w *= factor;
            }
            *bias -= bn.rolling_mean[f] * factor;
        }
    }
    (weights, biases)
}

/// Returns `γ / σ` of output `f`, the factor that folding applies to its
/// weights and to its rolling mean.
fn fold_factor(bn: &BatchNorm, f: usize) -> f32 {
    bn.scales[f] / (bn.rolling_variance[f].sqrt() + BN_EPSILON)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::layers::ParamLayout;

    #[test]
    fn training_forward_by_hand() {
        // Two outputs, two positions, batch 2: output 0 has the values 1, 3,
        // 5, 7 (mean 4, variance 20/3), output 1 has 2 everywhere (variance 0).
        let mut pass = BatchNormPass::new(2, 2, 1, 2);
        let mut bn = BatchNorm::new(2);
        bn.scales = vec![2.0, 1.0];
        let mut values = vec![1.0, 3.0, 2.0, 2.0, 5.0, 7.0, 2.0, 2.0];
        pass.forward(&mut bn, &mut values, 2, true);
        let s = (20.0f32 / 3.0).sqrt() + BN_EPSILON;
        let expected = [-3.0 / s * 2.0, -1.0 / s * 2.0, 0.0, 0.0, 1.0 / s * 2.0, 3.0 / s * 2.0, 0.0, 0.0];
        for (got, want) in values.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        // rolling = 0.99 * old + 0.01 * batch statistic
        assert!((bn.rolling_mean[0] - 0.04).abs() < 1e-7);
        assert!((bn.rolling_mean[1] - 0.02).abs() < 1e-7);
        assert!((bn.rolling_variance[0] - (0.99 + 0.01 * 20.0 / 3.0)).abs() < 1e-6);
        assert!((bn.rolling_variance[1] - 0.99).abs() < 1e-7);
    }

    #[test]
    fn inference_uses_rolling_statistics() {
        let mut pass = BatchNormPass::new(1, 1, 1, 1);
        let mut bn = BatchNorm::new(1);
        bn.rolling_mean[0] = 1.0;
        bn.rolling_variance[0] = 4.0;
        bn.scales[0] = 3.0;
        let mut values = vec![5.0];
        pass.forward(&mut bn, &mut values, 1, false);
        // (5 - 1) / (2 + 1e-6) * 3
        assert!((values[0] - 6.0).abs() < 1e-5);
        assert_eq!(bn.rolling_mean[0], 1.0, "inference must not move the statistics");
    }

    #[test]
    fn fold_matches_normalized_affine() {
        let mut p = Params::new(ParamLayout::Connected { inputs: 2, outputs: 1 }, true);
        p.weights = vec![1.0, -2.0];
        p.biases = vec![0.5];
        let bn = p.batch_norm.as_mut().unwrap();
        bn.scales[0] = 2.0;
        bn.rolling_mean[0] = 1.0;
        bn.rolling_variance[0] = 16.0;
        let (w, b) = fold_batch_norm(&p);
        // factor = 2 / (4 + 1e-6); b_f = 0.5 - 1 * factor
        let factor = 2.0 / (4.0 + BN_EPSILON);
        assert_eq!(w, vec![factor, -2.0 * factor]);
        assert_eq!(b, vec![0.5 - factor]);
    }
}
