//! `[connected]`: `y = act(BN(x · Wᵀ) + b)` with `W` stored `[outputs][inputs]`.

use super::{zeros, ForwardContext, Layer, ParamLayout, Params, Shape, UpdateArgs};
use crate::kernels::gemm_f32::{gemm, MatRef};
use crate::network::activation::Activation;
use rand::Rng;

/// Darknet adds this to the standard deviation before dividing.
const BN_EPSILON: f32 = 1e-6;

pub struct ConnectedLayer {
    input_shape: Shape,
    outputs: usize,
    pub activation: Activation,
    pub params: Params,
    output: Vec<f32>,
    delta: Vec<f32>,
    // Batch-norm scratch (empty without batch_normalize), `[batch][outputs]`
    // except the per-output statistics.
    x_norm: Vec<f32>,
    mean: Vec<f32>,
    variance: Vec<f32>,
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
        let bn_len = if batch_normalize { max_batch * outputs } else { 0 };
        ConnectedLayer {
            input_shape,
            outputs,
            activation,
            params,
            output: zeros(max_batch * outputs),
            delta: zeros(max_batch * outputs),
            x_norm: zeros(bn_len),
            mean: zeros(if batch_normalize { outputs } else { 0 }),
            variance: zeros(if batch_normalize { outputs } else { 0 }),
        }
    }

    fn inputs(&self) -> usize {
        self.input_shape.len()
    }

    /// Normalizes `output[..batch]` in place with batch statistics (training)
    /// or the rolling ones, then multiplies by the scales.
    fn batch_norm_forward(&mut self, batch: usize, train: bool) {
        let n = self.outputs;
        let out = &mut self.output[..batch * n];
        let bn = self.params.batch_norm.as_mut().expect("batch norm present");
        if train {
            self.mean.fill(0.0);
            self.variance.fill(0.0);
            for row in out.chunks_exact(n) {
                for (m, &v) in self.mean.iter_mut().zip(row) {
                    *m += v;
                }
            }
            for m in self.mean.iter_mut() {
                *m /= batch as f32;
            }
            for row in out.chunks_exact(n) {
                for ((var, &m), &v) in self.variance.iter_mut().zip(&self.mean).zip(row) {
                    *var += (v - m) * (v - m);
                }
            }
            // Darknet divides by (batch - 1); a batch of one has no spread.
            let denom = (batch.max(2) - 1) as f32;
            for var in self.variance.iter_mut() {
                *var /= denom;
            }
            for i in 0..n {
                bn.rolling_mean[i] = 0.99 * bn.rolling_mean[i] + 0.01 * self.mean[i];
                bn.rolling_variance[i] = 0.99 * bn.rolling_variance[i] + 0.01 * self.variance[i];
            }
        }
        let (mean, variance) = if train { (&self.mean, &self.variance) } else { (&bn.rolling_mean, &bn.rolling_variance) };
        for (b, row) in out.chunks_exact_mut(n).enumerate() {
            for i in 0..n {
                let normalized = (row[i] - mean[i]) / (variance[i].sqrt() + BN_EPSILON);
                if train {
                    self.x_norm[b * n + i] = normalized;
                }
                row[i] = normalized * bn.scales[i];
            }
        }
    }

    /// Back-propagates through the scales and the normalization with batch
    /// statistics, replacing `delta` by the delta before batch norm.
    fn batch_norm_backward(&mut self, batch: usize) {
        let n = self.outputs;
        let bn = self.params.batch_norm.as_mut().expect("batch norm present");
        let delta = &mut self.delta[..batch * n];
        for (d_row, x_row) in delta.chunks_exact(n).zip(self.x_norm.chunks_exact(n)) {
            for i in 0..n {
                bn.scale_updates[i] += d_row[i] * x_row[i];
            }
        }
        let denom = (batch.max(2) - 1) as f32;
        for i in 0..n {
            let std = self.variance[i].sqrt();
            let s = std + BN_EPSILON;
            let scale = bn.scales[i];
            // g = d(-L)/d(x_norm); x_norm = (x - mean) / s with s = sqrt(var) + eps.
            let mut sum_g = 0.0f32;
            let mut sum_g_xc = 0.0f32;
            for b in 0..batch {
                let g = delta[b * n + i] * scale;
                sum_g += g;
                sum_g_xc += g * self.x_norm[b * n + i] * s;
            }
            // d/dvar through s: -sum(g * xc) / s^2 * 1 / (2 sqrt(var)).
            let d_var = if std > 0.0 { -sum_g_xc / (s * s) / (2.0 * std) } else { 0.0 };
            let d_mean = -sum_g / s;
            for b in 0..batch {
                let xc = self.x_norm[b * n + i] * s;
                let g = delta[b * n + i] * scale;
                delta[b * n + i] = g / s + d_var * 2.0 * xc / denom + d_mean / batch as f32;
            }
        }
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

        if self.params.batch_norm.is_some() {
            self.batch_norm_forward(batch, ctx.train);
        }
        let act = self.activation;
        for row in self.output[..batch * n].chunks_exact_mut(n) {
            for (y, &b) in row.iter_mut().zip(&self.params.biases) {
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
        if self.params.batch_norm.is_some() {
            self.batch_norm_backward(batch);
        }

        // weight_updates[n][k] += deltaᵀ[n][batch] · input[batch][k]
        let delta = MatRef::new(&self.delta[..batch * n], batch, n);
        let x = MatRef::new(&input[..batch * k], batch, k);
        gemm(1.0, delta.t(), x, 1.0, &mut self.params.weight_updates);

        // input_delta[batch][k] += delta[batch][n] · W[n][k]
        if let Some(input_delta) = input_delta {
            let w = MatRef::new(self.params.effective_weights(), n, k);
            gemm(1.0, delta, w, 1.0, &mut input_delta[..batch * k]);
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
