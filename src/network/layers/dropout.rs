//! `[dropout]`: in training, zeroes each value with `probability` and scales
//! the rest by `1 / (1 - probability)`; identity at inference.

use super::{zeros, ForwardContext, Layer, Shape};
use rand::Rng;

pub struct DropoutLayer {
    shape: Shape,
    probability: f32,
    scale: f32,
    /// 0 or `scale` per value of the last training pass.
    mask: Vec<f32>,
    output: Vec<f32>,
    delta: Vec<f32>,
    trained_last: bool,
}

impl DropoutLayer {
    pub fn new(shape: Shape, probability: f32, max_batch: usize) -> Self {
        let n = shape.len() * max_batch;
        DropoutLayer {
            shape,
            probability,
            scale: 1.0 / (1.0 - probability),
            mask: zeros(n),
            output: zeros(n),
            delta: zeros(n),
            trained_last: false,
        }
    }
}

impl Layer for DropoutLayer {
    fn kind(&self) -> &'static str {
        "dropout"
    }

    fn input_shape(&self) -> Shape {
        self.shape
    }

    fn output_shape(&self) -> Shape {
        self.shape
    }

    fn forward(&mut self, input: &[f32], batch: usize, ctx: &mut ForwardContext) {
        let len = batch * self.shape.len();
        self.trained_last = ctx.train;
        if ctx.train {
            for i in 0..len {
                let keep = ctx.rng.gen::<f32>() >= self.probability;
                self.mask[i] = if keep { self.scale } else { 0.0 };
                self.output[i] = input[i] * self.mask[i];
            }
        } else {
            self.output[..len].copy_from_slice(&input[..len]);
        }
        self.delta[..len].fill(0.0);
    }

    fn backward(&mut self, _input: &[f32], batch: usize, input_delta: Option<&mut [f32]>) {
        let len = batch * self.shape.len();
        if let Some(input_delta) = input_delta {
            for i in 0..len {
                let factor = if self.trained_last { self.mask[i] } else { 1.0 };
                input_delta[i] += self.delta[i] * factor;
            }
        }
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
}
