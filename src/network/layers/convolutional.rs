//! `[convolutional]`: `y = act(BN(W ⊛ x) + b)` per CHW image, computed as
//! one GEMM per chunk of images over their im2col columns.
//!
//! Shapes: weights `[filters][channels][size][size]` (the `.weights` order),
//! input rows `[batch][channels][height][width]`, output and delta rows
//! `[batch][filters][out_height][out_width]`. Batch norm (one mean and
//! variance per filter over the batch and all output positions) and its
//! folded form during QAT are in [`super::batch_norm`].

use super::batch_norm::{backward_step, forward_step, unfold_step, weight_gradient_target, BatchNormPass};
use super::{zeros, ForwardContext, Layer, ParamLayout, Params, Shape, UpdateArgs};
use crate::kernels::gemm_f32::{gemm, MatRef};
use crate::kernels::im2col::{col2im_batch_add, im2col_batch, ConvGeometry};
use crate::network::activation::Activation;
use anyhow::Result;
use rand::Rng;
use rayon::prelude::*;

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
    /// Batch-norm scratch, with `batch_normalize=1` only.
    norm: Option<BatchNormPass>,
    /// Per filter: `Σ delta` of the last backward pass (the bias gradient,
    /// and QAT folding).
    delta_sums: Vec<f32>,
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
            norm: batch_normalize.then(|| BatchNormPass::new(filters, p, k, max_batch)),
            delta_sums: zeros(filters),
        })
    }

    pub fn geometry(&self) -> ConvGeometry {
        self.geometry
    }

    /// True during QAT of a batch-normalized layer: the forward weights are
    /// the folded ones (see [`super::batch_norm`]).
    fn is_folded(&self) -> bool {
        self.norm.is_some() && self.params.forward_weights.is_some()
    }

    /// Values of one output image.
    fn out_len(&self) -> usize {
        self.filters * self.geometry.positions()
    }
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

        let biases = forward_step(self.norm.as_mut(), &mut self.params, &mut self.output, batch, ctx.train);
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
        backward_step(self.norm.as_mut(), &mut self.params, &mut self.delta, batch);

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
            let target = weight_gradient_target(self.norm.as_mut(), &mut self.params.weight_updates, folded);
            gemm(1.0, delta, MatRef::new(&self.columns[..k * width], k, width).t(), 1.0, target);

            // column deltas[k][width] = Wᵀ[k][n] · delta[n][width], then back to pixels.
            if let Some(input_delta) = input_delta.as_deref_mut() {
                let w = MatRef::new(self.params.effective_weights(), n, k);
                gemm(1.0, w.t(), delta, 0.0, &mut self.columns[..k * width]);
                col2im_batch_add(&g, &self.columns, count, &mut input_delta[first * in_len..]);
            }
        }

        unfold_step(self.norm.as_ref(), &mut self.params, &self.delta_sums);
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
