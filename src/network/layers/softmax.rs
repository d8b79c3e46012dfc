//! `[softmax]`: softmax over each of `groups` equal slices of the input,
//! with cross-entropy against the truth when training.

use super::{zeros, ForwardContext, Layer, Shape};

pub struct SoftmaxLayer {
    shape: Shape,
    groups: usize,
    temperature: f32,
    output: Vec<f32>,
    delta: Vec<f32>,
}

impl SoftmaxLayer {
    pub fn new(shape: Shape, groups: usize, temperature: f32, max_batch: usize) -> Self {
        let n = shape.len();
        SoftmaxLayer { shape, groups, temperature, output: zeros(max_batch * n), delta: zeros(max_batch * n) }
    }
}

/// Writes the softmax of `input / temperature` to `output` (same length),
/// subtracting the maximum first for stability.
pub fn softmax(input: &[f32], temperature: f32, output: &mut [f32]) {
    let max = input.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for (o, &x) in output.iter_mut().zip(input) {
        *o = ((x - max) / temperature).exp();
        sum += *o;
    }
    for o in output.iter_mut() {
        *o /= sum;
    }
}

impl Layer for SoftmaxLayer {
    fn kind(&self) -> &'static str {
        "softmax"
    }

    fn input_shape(&self) -> Shape {
        self.shape
    }

    fn output_shape(&self) -> Shape {
        self.shape
    }

    fn forward(&mut self, input: &[f32], batch: usize, _ctx: &mut ForwardContext) {
        let n = self.shape.len();
        let group = n / self.groups;
        for (x_row, y_row) in input[..batch * n].chunks_exact(n).zip(self.output.chunks_exact_mut(n)) {
            for (x, y) in x_row.chunks_exact(group).zip(y_row.chunks_exact_mut(group)) {
                softmax(x, self.temperature, y);
            }
        }
        self.delta[..batch * n].fill(0.0);
    }

    /// Cross-entropy: `delta = truth - p`, loss `-Σ truth * ln p`.
    fn apply_truth(&mut self, truth: &[f32], batch: usize) -> Option<f32> {
        let n = self.shape.len();
        let mut loss = 0.0f32;
        for i in 0..batch * n {
            let t = truth[i];
            let p = self.output[i];
            if t != 0.0 {
                loss -= t * p.max(f32::MIN_POSITIVE).ln();
            }
            self.delta[i] = t - p;
        }
        Some(loss)
    }

    fn backward(&mut self, _input: &[f32], batch: usize, input_delta: Option<&mut [f32]>) {
        if let Some(input_delta) = input_delta {
            let n = self.shape.len();
            for (d, &s) in input_delta[..batch * n].iter_mut().zip(&self.delta) {
                *d += s;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_by_hand() {
        let mut out = [0.0; 3];
        softmax(&[0.0, (2.0f32).ln(), 0.0], 1.0, &mut out);
        assert!((out[0] - 0.25).abs() < 1e-6);
        assert!((out[1] - 0.5).abs() < 1e-6);
    }
}
