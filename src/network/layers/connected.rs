//! `[connected]`: `y = act(BN(x · Wᵀ) + b)` with `W` stored `[outputs][inputs]`.
//! Batch norm and its folded form during QAT are in [`super::batch_norm`].

use super::batch_norm::{backward_step, forward_step, unfold_step, weight_gradient_target, BatchNormPass};
use super::{zeros, ForwardContext, Layer, ParamLayout, Params, Shape, UpdateArgs};
use crate::kernels::gemm_f32::{gemm, MatRef};
use crate::network::activation::Activation;
use rand::Rng;

pub struct ConnectedLayer {
    input_shape: Shape,
    outputs: usize,
    pub activation: Activation,
    pub params: Params,
    output: Vec<f32>,
    delta: Vec<f32>,
    /// Batch-norm scratch, with `batch_normalize=1` only.
    norm: Option<BatchNormPass>,
    /// Per output: `Σ delta` of the last backward pass (QAT folding only).
    delta_sums: Vec<f32>,
}

impl ConnectedLayer {
    /// Creates the layer with the QAT fork's initialization: weights uniform
    /// in `±sqrt(6 / inputs)` (He, variance `2 / inputs`), biases 0,
    /// batch-norm scales 1. Upstream Darknet draws from `±sqrt(2 / inputs)`;
    /// the workshop's accuracy figures come from the fork.
    pub fn new(input_shape: Shape, outputs: usize, activation: Activation, batch_normalize: bool, max_batch: usize, rng: &mut impl Rng) -> Self {
        let inputs = input_shape.len();
        let mut params = Params::new(ParamLayout::Connected { inputs, outputs }, batch_normalize);
        let scale = (6.0 / inputs as f32).sqrt();
        for w in params.weights.iter_mut() {
            *w = scale * rng.gen_range(-1.0f32..1.0);
        }
        ConnectedLayer {
            input_shape,
            outputs,
            activation,
            params,
            output: zeros(max_batch * outputs),
            delta: zeros(max_batch * outputs),
            norm: batch_normalize.then(|| BatchNormPass::new(outputs, 1, inputs, max_batch)),
            delta_sums: zeros(if batch_normalize { outputs } else { 0 }),
        }
    }

    fn inputs(&self) -> usize {
        self.input_shape.len()
    }

    /// True during QAT of a batch-normalized layer: the forward weights are
    /// the folded ones (see [`super::batch_norm`]).
    fn is_folded(&self) -> bool {
        self.norm.is_some() && self.params.forward_weights.is_some()
    }
}

impl Layer for ConnectedLayer {
    fn kind(&self) -> &'static str {
        "connected"
    }

    fn input_shape(&self) -> Shape {
        self.input_shape
    }

    fn output_shape(&self) -> Shape {
        Shape::flat(self.outputs)
    }

    fn forward(&mut self, input: &[f32], batch: usize, ctx: &mut ForwardContext) {
        let (k, n) = (self.inputs(), self.outputs);
        let x = MatRef::new(&input[..batch * k], batch, k);
        let w = MatRef::new(self.params.effective_weights(), n, k);
        gemm(1.0, x, w.t(), 0.0, &mut self.output[..batch * n]);

        let biases = forward_step(self.norm.as_mut(), &mut self.params, &mut self.output, batch, ctx.train);
        let act = self.activation;
        for row in self.output[..batch * n].chunks_exact_mut(n) {
            for (y, &b) in row.iter_mut().zip(biases) {
                *y = act.apply(*y + b);
            }
        }
        self.delta[..batch * n].fill(0.0);
    }

    fn backward(&mut self, input: &[f32], batch: usize, input_delta: Option<&mut [f32]>) {
        let (k, n) = (self.inputs(), self.outputs);
        // One pass: the activation's derivative, then the bias gradient.
        let act = self.activation;
        for (d_row, y_row) in self.delta[..batch * n].chunks_exact_mut(n).zip(self.output.chunks_exact(n)) {
            for ((d, &y), u) in d_row.iter_mut().zip(y_row).zip(self.params.bias_updates.iter_mut()) {
                *d *= act.gradient(y);
                *u += *d;
            }
        }
        let folded = self.is_folded();
        if folded {
            self.delta_sums.fill(0.0);
            for d_row in self.delta[..batch * n].chunks_exact(n) {
                for (sum, &d) in self.delta_sums.iter_mut().zip(d_row) {
                    *sum += d;
                }
            }
        }
        backward_step(self.norm.as_mut(), &mut self.params, &mut self.delta, batch);

        // weight_updates[n][k] += deltaᵀ[n][batch] · input[batch][k], or the
        // gradient of the folded weights during QAT.
        let delta = MatRef::new(&self.delta[..batch * n], batch, n);
        let x = MatRef::new(&input[..batch * k], batch, k);
        let target = weight_gradient_target(self.norm.as_mut(), &mut self.params.weight_updates, folded);
        gemm(1.0, delta.t(), x, 1.0, target);

        // input_delta[batch][k] += delta[batch][n] · W[n][k]
        if let Some(input_delta) = input_delta {
            let w = MatRef::new(self.params.effective_weights(), n, k);
            gemm(1.0, delta, w, 1.0, &mut input_delta[..batch * k]);
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
