//! The trainable parameters of `[connected]` and `[convolutional]` layers,
//! with their momentum buffers and the batch-norm fields that `.weights` stores.

/// Batch-norm parameters and statistics (`[outputs]` each).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    pub scales: Vec<f32>,
    pub rolling_mean: Vec<f32>,
    pub rolling_variance: Vec<f32>,
    pub scale_updates: Vec<f32>,
}

impl BatchNorm {
    pub fn new(n: usize) -> Self {
        BatchNorm {
            scales: vec![1.0; n],
            rolling_mean: vec![0.0; n],
            rolling_variance: vec![1.0; n],
            scale_updates: vec![0.0; n],
        }
    }
}

/// Weight layout of a layer, which also fixes the order of fields in `.weights`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamLayout {
    /// `weights[outputs][inputs]`; file order: biases, weights, batch norm.
    Connected { inputs: usize, outputs: usize },
    /// `weights[filters][channels][size][size]`; file order: biases, batch norm, weights.
    Convolutional { filters: usize, channels: usize, size: usize },
}

impl ParamLayout {
    /// Output values per image position: `outputs` or `filters`.
    pub fn outputs(&self) -> usize {
        match *self {
            ParamLayout::Connected { outputs, .. } => outputs,
            ParamLayout::Convolutional { filters, .. } => filters,
        }
    }

    /// Weights feeding one output: `inputs` or `channels * size * size` (the GEMM's K).
    pub fn fan_in(&self) -> usize {
        match *self {
            ParamLayout::Connected { inputs, .. } => inputs,
            ParamLayout::Convolutional { channels, size, .. } => channels * size * size,
        }
    }
}

/// Master FP32 parameters. During QAT `forward_weights` contains the
/// fake-quantized copy that forward and backward use. For a batch-normalized
/// convolution it is the copy of the weights folded with the batch norm.
/// The gradients still update the masters (the straight-through estimator).
#[derive(Debug, Clone)]
pub struct Params {
    pub layout: ParamLayout,
    pub biases: Vec<f32>,
    pub weights: Vec<f32>,
    pub batch_norm: Option<BatchNorm>,
    pub bias_updates: Vec<f32>,
    pub weight_updates: Vec<f32>,
    pub forward_weights: Option<Vec<f32>>,
}

impl Params {
    pub fn new(layout: ParamLayout, batch_normalize: bool) -> Self {
        let n = layout.outputs();
        let count = n * layout.fan_in();
        Params {
            layout,
            biases: vec![0.0; n],
            weights: vec![0.0; count],
            batch_norm: batch_normalize.then(|| BatchNorm::new(n)),
            bias_updates: vec![0.0; n],
            weight_updates: vec![0.0; count],
            forward_weights: None,
        }
    }

    /// Returns the weights the forward pass uses: the fake-quantized copy
    /// during QAT, the masters otherwise.
    pub fn effective_weights(&self) -> &[f32] {
        self.forward_weights.as_deref().unwrap_or(&self.weights)
    }

    /// Darknet's SGD step. `*_updates` hold summed negative gradients.
    pub fn sgd_update(&mut self, lr: f32, momentum: f32, decay: f32, batch: usize) {
        let step = lr / batch as f32;
        for (b, u) in self.biases.iter_mut().zip(self.bias_updates.iter_mut()) {
            *b += step * *u;
            *u *= momentum;
        }
        if let Some(bn) = self.batch_norm.as_mut() {
            for (s, u) in bn.scales.iter_mut().zip(bn.scale_updates.iter_mut()) {
                *s += step * *u;
                *u *= momentum;
            }
        }
        let decay_term = -decay * batch as f32;
        let update = |weights: &mut [f32], updates: &mut [f32]| {
            for (w, u) in weights.iter_mut().zip(updates.iter_mut()) {
                *u += decay_term * *w;
                *w += step * *u;
                *u *= momentum;
            }
        };
        // The pass is bound by memory bandwidth; large layers split it over
        // the thread pool. Each element is independent, so the result does
        // not depend on the split.
        const CHUNK: usize = 1 << 16;
        if self.weights.len() >= 4 * CHUNK {
            use rayon::prelude::*;
            self.weights
                .par_chunks_mut(CHUNK)
                .zip(self.weight_updates.par_chunks_mut(CHUNK))
                .for_each(|(w, u)| update(w, u));
        } else {
            update(&mut self.weights, &mut self.weight_updates);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgd_update_matches_darknet_by_hand() {
        let mut p = Params::new(ParamLayout::Connected { inputs: 1, outputs: 1 }, false);
        p.weights[0] = 2.0;
        p.biases[0] = 1.0;
        p.weight_updates[0] = 4.0; // summed negative gradient over 2 images
        p.bias_updates[0] = -2.0;
        p.sgd_update(0.1, 0.9, 0.01, 2);
        // updates = 4 - 0.01*2*2 = 3.96; w = 2 + 0.05*3.96 = 2.198; updates *= 0.9
        assert!((p.weights[0] - 2.198).abs() < 1e-6);
        assert!((p.weight_updates[0] - 3.564).abs() < 1e-6);
        // biases have no decay: b = 1 + 0.05*(-2) = 0.9
        assert!((p.biases[0] - 0.9).abs() < 1e-6);
        assert!((p.bias_updates[0] + 1.8).abs() < 1e-6);
    }
}
