//! `[convolutional]`: `y = act(BN(W ⊛ x) + b)` per CHW image, computed as
//! one GEMM per chunk of images over their im2col columns.
//!
//! Shapes: weights `[filters][channels][size][size]` (the `.weights` order),
//! input rows `[batch][channels][height][width]`, output and delta rows
//! `[batch][filters][out_height][out_width]`. Batch norm is Darknet's for
//! convolutions: one mean and variance per filter over the batch and all
//! output positions.
//!
//! # Batch norm during QAT
//!
//! A deployed int8 convolution has no batch norm, so QAT trains the folded
//! form `W_f = W * γ / σ`, `b_f = b - γ * μ / σ` with `σ = sqrt(rolling
//! variance) + ε` and `μ` the rolling mean ([`fold_batch_norm`]). When a
//! batch-normalized layer finds `Params::forward_weights` set, those are the
//! fake-quantized folded weights: the layer skips batch norm, adds `b_f`, and
//! leaves the rolling statistics unchanged (they are frozen during QAT). The
//! backward pass maps the gradient of `W_f` and `b_f` back onto the masters
//! `W`, `γ` and `b`.

use super::{zeros, ForwardContext, Layer, ParamLayout, Params, Shape, UpdateArgs};
use crate::kernels::gemm_f32::{gemm, MatRef};
use crate::kernels::im2col::{col2im_batch_add, im2col_batch, ConvGeometry};
use crate::network::activation::Activation;
use anyhow::Result;
use rand::Rng;
use rayon::prelude::*;

/// Darknet adds this to the standard deviation before dividing.
pub const BN_EPSILON: f32 = 1e-6;

/// Column-matrix values per GEMM (16 MiB of f32). It sets how many images
/// one GEMM covers, trading memory for larger, better-parallelized products.
const COLUMN_BUDGET: usize = 1 << 22;

pub struct ConvolutionalLayer {
    geometry: ConvGeometry,
    filters: usize,
    pub activation: Activation,
    pub params: Params,
    output: Vec<f32>,
    delta: Vec<f32>,
    /// Images per GEMM.
    chunk: usize,
    /// `[fan_in][chunk * positions]`: im2col columns, and in backward the
    /// column deltas.
    columns: Vec<f32>,
    /// `[filters][chunk * positions]`: the GEMM's output, or the gathered delta.
    products: Vec<f32>,
    // Batch-norm scratch (empty without batch_normalize): `x_norm` is laid
    // out as `output`, `mean` and `variance` are per filter.
    x_norm: Vec<f32>,
    mean: Vec<f32>,
    variance: Vec<f32>,
    /// Per filter: `Σ delta` of the last backward pass (QAT folding).
    delta_sums: Vec<f32>,
    /// The folded biases `b_f` used during QAT.
    folded_biases: Vec<f32>,
    /// Gradient of the folded weights `W_f`, `[filters][fan_in]`.
    folded_updates: Vec<f32>,
}

/// Draws from N(0, 1) by the Box-Muller transform, as Darknet's `rand_normal`.
fn rand_normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

impl ConvolutionalLayer {
    /// Creates the layer with Darknet's initialization (pjreddie/darknet
    /// `make_convolutional_layer`): weights `sqrt(2 / (size*size*channels)) *
    /// N(0, 1)` (He normal), biases 0, batch-norm scales 1. Fails when the
    /// window does not fit the padded input.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input_shape: Shape,
        filters: usize,
        size: usize,
        stride: usize,
        pad: usize,
        activation: Activation,
        batch_normalize: bool,
        max_batch: usize,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let geometry = ConvGeometry::new(input_shape.c, input_shape.h, input_shape.w, size, stride, pad)?;
        let (k, p) = (geometry.fan_in(), geometry.positions());
        let layout = ParamLayout::Convolutional { filters, channels: input_shape.c, size };
        let mut params = Params::new(layout, batch_normalize);
        let scale = (2.0 / k as f32).sqrt();
        for w in params.weights.iter_mut() {
            *w = scale * rand_normal(rng);
        }

        let chunk = (COLUMN_BUDGET / (k * p).max(1)).clamp(1, max_batch.max(1));
        let outputs = max_batch * filters * p;
        let bn = |len: usize| if batch_normalize { zeros(len) } else { Vec::new() };
        Ok(ConvolutionalLayer {
            geometry,
            filters,
            activation,
            params,
            output: zeros(outputs),
            delta: zeros(outputs),
            chunk,
            columns: zeros(k * chunk * p),
            products: zeros(filters * chunk * p),
            x_norm: bn(outputs),
            mean: bn(filters),
            variance: bn(filters),
            delta_sums: zeros(filters),
            folded_biases: bn(filters),
            folded_updates: bn(filters * k),
        })
    }

    pub fn geometry(&self) -> ConvGeometry {
        self.geometry
    }

    /// True during QAT of a batch-normalized layer (see the module doc).
    fn is_folded(&self) -> bool {
        self.params.batch_norm.is_some() && self.params.forward_weights.is_some()
    }

    /// Values of one output image.
    fn out_len(&self) -> usize {
        self.filters * self.geometry.positions()
    }

    /// Normalizes `output[..batch]` per filter with batch statistics
    /// (training) or the rolling ones, then multiplies by the scales.
    fn batch_norm_forward(&mut self, batch: usize, train: bool) {
        let (n, p) = (self.filters, self.geometry.positions());
        let out = &mut self.output[..batch * n * p];
        let bn = self.params.batch_norm.as_mut().expect("batch norm present");
        if train {
            let out: &[f32] = out;
            let count = (batch * p) as f64;
            let statistics: Vec<(f32, f32)> = (0..n)
                .into_par_iter()
                .map(|f| {
                    let values = || out.chunks_exact(n * p).flat_map(move |image| &image[f * p..(f + 1) * p]);
                    let mean = values().map(|&v| v as f64).sum::<f64>() / count;
                    let squares: f64 = values().map(|&v| (v as f64 - mean).powi(2)).sum();
                    // Darknet divides by (count - 1); a single value has no spread.
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
            for (f, values) in image.chunks_exact_mut(p).enumerate() {
                let s = variance[f].sqrt() + BN_EPSILON;
                for (i, v) in values.iter_mut().enumerate() {
                    let normalized = (*v - mean[f]) / s;
                    if let Some(x_norm) = x_norm.as_deref_mut() {
                        x_norm[f * p + i] = normalized;
                    }
                    *v = normalized * scales[f];
                }
            }
        };
        if train {
            out.par_chunks_mut(n * p)
                .zip(self.x_norm[..batch * n * p].par_chunks_mut(n * p))
                .for_each(|(image, x_norm)| normalize(image, Some(x_norm)));
        } else {
            out.par_chunks_mut(n * p).for_each(|image| normalize(image, None));
        }
    }

    /// Back-propagates through the scales and the batch-statistics
    /// normalization, replacing `delta` by the delta before batch norm.
    fn batch_norm_backward(&mut self, batch: usize) {
        let (n, p) = (self.filters, self.geometry.positions());
        let count = batch * p;
        let denom = (count.max(2) - 1) as f32;
        let bn = self.params.batch_norm.as_mut().expect("batch norm present");
        let delta = &mut self.delta[..batch * n * p];
        let x_norm = &self.x_norm[..batch * n * p];

        // Per filter: Σ delta * x_norm (the scale gradient) and Σ delta.
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

    /// Maps the gradient of the folded weights and bias onto the masters:
    /// `W_f = W γ / σ` and `b_f = b - γ μ / σ` give `dW = dW_f γ / σ` and
    /// `dγ = (Σ dW_f W - μ Σ delta) / σ`; `db = db_f` was already added.
    fn unfold_gradients(&mut self) {
        let k = self.geometry.fan_in();
        let p = &mut self.params;
        let bn = p.batch_norm.as_mut().expect("batch norm present");
        for f in 0..self.filters {
            let inv_sigma = 1.0 / (bn.rolling_variance[f].sqrt() + BN_EPSILON);
            let factor = bn.scales[f] * inv_sigma;
            let mut dot = 0.0f32;
            for i in f * k..(f + 1) * k {
                let u = self.folded_updates[i];
                p.weight_updates[i] += factor * u;
                dot += u * p.weights[i];
            }
            bn.scale_updates[f] += inv_sigma * (dot - bn.rolling_mean[f] * self.delta_sums[f]);
        }
    }
}

/// Folds batch norm into the weights and biases with the rolling statistics
/// (see the module doc) and returns `(weights, biases)`; without batch norm
/// returns copies of the masters. Works for any [`ParamLayout`], since both
/// store the weights of one output contiguously.
pub fn fold_batch_norm(params: &Params) -> (Vec<f32>, Vec<f32>) {
    let mut weights = params.weights.clone();
    let mut biases = params.biases.clone();
    if let Some(bn) = &params.batch_norm {
        let k = params.layout.fan_in();
        for (f, bias) in biases.iter_mut().enumerate() {
            let factor = bn.scales[f] / (bn.rolling_variance[f].sqrt() + BN_EPSILON);
            for w in &mut weights[f * k..(f + 1) * k] {
                *w *= factor;
            }
            *bias -= bn.rolling_mean[f] * factor;
        }
    }
    (weights, biases)
}

impl Layer for ConvolutionalLayer {
    fn kind(&self) -> &'static str {
        "convolutional"
    }

    fn input_shape(&self) -> Shape {
        let g = &self.geometry;
        Shape { c: g.channels, h: g.height, w: g.width }
    }

    fn output_shape(&self) -> Shape {
        Shape { c: self.filters, h: self.geometry.out_height, w: self.geometry.out_width }
    }

    fn forward(&mut self, input: &[f32], batch: usize, ctx: &mut ForwardContext) {
        let g = self.geometry;
        let (n, k, p, in_len, out_len) = (self.filters, g.fan_in(), g.positions(), g.input_len(), self.out_len());
        for first in (0..batch).step_by(self.chunk) {
            let count = self.chunk.min(batch - first);
            let width = count * p;
            im2col_batch(&g, &input[first * in_len..], count, 0.0, &mut self.columns);

            // products[n][width] = W[n][k] · columns[k][width]
            let w = MatRef::new(self.params.effective_weights(), n, k);
            gemm(1.0, w, MatRef::new(&self.columns[..k * width], k, width), 0.0, &mut self.products[..n * width]);

            // Scatter filter-major products into CHW images.
            let products = &self.products;
            self.output[first * out_len..(first + count) * out_len].par_chunks_mut(out_len).enumerate().for_each(|(i, image)| {
                for (f, values) in image.chunks_exact_mut(p).enumerate() {
                    values.copy_from_slice(&products[f * width + i * p..f * width + (i + 1) * p]);
                }
            });
        }

        let folded = self.is_folded();
        if folded {
            let (_, biases) = fold_batch_norm(&self.params);
            self.folded_biases.copy_from_slice(&biases);
        } else if self.params.batch_norm.is_some() {
            self.batch_norm_forward(batch, ctx.train);
        }
        let biases = if folded { &self.folded_biases } else { &self.params.biases };
        let act = self.activation;
        self.output[..batch * out_len].par_chunks_mut(out_len).for_each(|image| {
            for (values, &b) in image.chunks_exact_mut(p).zip(biases) {
                for v in values.iter_mut() {
                    *v = act.apply(*v + b);
                }
            }
        });
        self.delta[..batch * out_len].fill(0.0);
    }

    fn backward(&mut self, input: &[f32], batch: usize, mut input_delta: Option<&mut [f32]>) {
        let g = self.geometry;
        let (n, k, p, in_len, out_len) = (self.filters, g.fan_in(), g.positions(), g.input_len(), self.out_len());
        let act = self.activation;
        let output = &self.output;
        self.delta[..batch * out_len].par_chunks_mut(out_len).zip(output.par_chunks(out_len)).for_each(|(d, y)| {
            act.backprop(y, d);
        });

        self.delta_sums.fill(0.0);
        for image in self.delta[..batch * out_len].chunks_exact(out_len) {
            for (sum, values) in self.delta_sums.iter_mut().zip(image.chunks_exact(p)) {
                *sum += values.iter().sum::<f32>();
            }
        }
        for (u, &s) in self.params.bias_updates.iter_mut().zip(&self.delta_sums) {
            *u += s;
        }

        let folded = self.is_folded();
        if folded {
            self.folded_updates.fill(0.0);
        } else if self.params.batch_norm.is_some() {
            self.batch_norm_backward(batch);
        }

        for first in (0..batch).step_by(self.chunk) {
            let count = self.chunk.min(batch - first);
            let width = count * p;
            im2col_batch(&g, &input[first * in_len..], count, 0.0, &mut self.columns);

            // Gather the CHW deltas into filter-major products[n][width].
            let delta = &self.delta;
            self.products[..n * width].par_chunks_mut(width).enumerate().for_each(|(f, row)| {
                for i in 0..count {
                    let image = (first + i) * out_len;
                    row[i * p..(i + 1) * p].copy_from_slice(&delta[image + f * p..image + (f + 1) * p]);
                }
            });
            let delta = MatRef::new(&self.products[..n * width], n, width);

            // weight_updates[n][k] += delta[n][width] · columnsᵀ[width][k]
            let target = if folded { &mut self.folded_updates } else { &mut self.params.weight_updates };
            gemm(1.0, delta, MatRef::new(&self.columns[..k * width], k, width).t(), 1.0, target);

            // column deltas[k][width] = Wᵀ[k][n] · delta[n][width], then back to pixels.
            if let Some(input_delta) = input_delta.as_deref_mut() {
                let w = MatRef::new(self.params.effective_weights(), n, k);
                gemm(1.0, w.t(), delta, 0.0, &mut self.columns[..k * width]);
                col2im_batch_add(&g, &self.columns, count, &mut input_delta[first * in_len..]);
            }
        }

        if folded {
            self.unfold_gradients();
        }
    }

    fn update(&mut self, args: &UpdateArgs) {
        self.params.sgd_update(args.learning_rate, args.momentum, args.decay, args.batch);
    }

    fn output(&self) -> &[f32] {
        &self.output
    }

    fn output_mut(&mut self) -> &mut [f32] {
        &mut self.output
    }

    fn delta_mut(&mut self) -> &mut [f32] {
        &mut self.delta
    }

    fn output_and_delta(&mut self) -> (&[f32], &mut [f32]) {
        (&self.output, &mut self.delta)
    }

    fn params(&self) -> Option<&Params> {
        Some(&self.params)
    }

    fn params_mut(&mut self) -> Option<&mut Params> {
        Some(&mut self.params)
    }

    fn activation(&self) -> Option<Activation> {
        Some(self.activation)
    }
}
