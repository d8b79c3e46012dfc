//! `[cost]` (type `sse`): passes its input through and adds a squared-error
//! cost against the truth, as Darknet's cost layer does.

use super::{zeros, ForwardContext, Layer, Shape};

pub struct CostLayer {
    shape: Shape,
    scale: f32,
    output: Vec<f32>,
    delta: Vec<f32>,
}

impl CostLayer {
    pub fn new(shape: Shape, scale: f32, max_batch: usize) -> Self {
        let n = shape.len() * max_batch;
        CostLayer { shape, scale, output: zeros(n), delta: zeros(n) }
    }
}

impl Layer for CostLayer {
    fn kind(&self) -> &'static str {
        "cost"
    }

    fn input_shape(&self) -> Shape {
        self.shape
    }

    fn output_shape(&self) -> Shape {
        self.shape
    }

    fn forward(&mut self, input: &[f32], batch: usize, _ctx: &mut ForwardContext) {
        let len = batch * self.shape.len();
        self.output[..len].copy_from_slice(&input[..len]);
        self.delta[..len].fill(0.0);
    }

    /// `delta = truth - output`, loss `Σ delta²`.
    fn apply_truth(&mut self, truth: &[f32], batch: usize) -> Option<f32> {
        let len = batch * self.shape.len();
        let mut loss = 0.0;
        for i in 0..len {
            let d = truth[i] - self.output[i];
            self.delta[i] = d;
            loss += d * d;
        }
        Some(loss)
    }

    fn backward(&mut self, _input: &[f32], batch: usize, input_delta: Option<&mut [f32]>) {
        let len = batch * self.shape.len();
        if let Some(input_delta) = input_delta {
            for (d, &s) in input_delta[..len].iter_mut().zip(&self.delta) {
                *d += self.scale * s;
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
