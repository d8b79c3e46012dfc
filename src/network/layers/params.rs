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
        let sgd = Sgd::new(lr, momentum, decay, batch);
        apply(&mut self.biases, &mut self.bias_updates, |v, u| sgd.plain(v, u));
        if let Some(bn) = self.batch_norm.as_mut() {
            apply(&mut bn.scales, &mut bn.scale_updates, |v, u| sgd.plain(v, u));
        }
        // The pass is bound by memory bandwidth; large layers split it over
        // the thread pool. Each element is independent, so the result does
        // not depend on the split.
        if self.weights.len() >= PARALLEL_MIN {
            use rayon::prelude::*;
            self.weights
                .par_chunks_mut(CHUNK)
                .zip(self.weight_updates.par_chunks_mut(CHUNK))
                .for_each(|(w, u)| apply(w, u, |v, u| sgd.decayed(v, u)));
        } else {
            apply(&mut self.weights, &mut self.weight_updates, |v, u| sgd.decayed(v, u));
        }
    }

    /// Returns true when [`Params::sgd_update`] with these arguments would leave
    /// every parameter and update finite, and the batch-norm statistics are
    /// finite now. It only reads, using the update's own arithmetic, so a
    /// caller can reject a diverging step before anything changes.
    pub fn sgd_update_stays_finite(&self, lr: f32, momentum: f32, decay: f32, batch: usize) -> bool {
        let sgd = Sgd::new(lr, momentum, decay, batch);
        let mut finite = stays_finite(&self.biases, &self.bias_updates, |v, u| sgd.plain(v, u));
        if let Some(bn) = &self.batch_norm {
            finite &= stays_finite(&bn.scales, &bn.scale_updates, |v, u| sgd.plain(v, u));
            finite &= stays_finite(&bn.rolling_mean, &bn.rolling_variance, |m, v| (m, v));
        }
        if !finite {
            return false;
        }
        if self.weights.len() >= PARALLEL_MIN {
            use rayon::prelude::*;
            self.weights
                .par_chunks(CHUNK)
                .zip(self.weight_updates.par_chunks(CHUNK))
                .all(|(w, u)| stays_finite(w, u, |v, u| sgd.decayed(v, u)))
        } else {
            stays_finite(&self.weights, &self.weight_updates, |v, u| sgd.decayed(v, u))
        }
    }
}

/// Elements per task when a layer's weights are split over the thread pool.
const CHUNK: usize = 1 << 16;
/// Layers with at least this many weights are split.
const PARALLEL_MIN: usize = 4 * CHUNK;

/// The arithmetic of one SGD step on one value and its accumulated update,
/// shared by the update and by its finiteness check so that both agree to
/// the bit.
#[derive(Clone, Copy)]
struct Sgd {
    step: f32,
    momentum: f32,
    decay_term: f32,
}

impl Sgd {
    fn new(lr: f32, momentum: f32, decay: f32, batch: usize) -> Sgd {
        Sgd { step: lr / batch as f32, momentum, decay_term: -decay * batch as f32 }
    }

    /// Returns the new value and update of a bias or batch-norm scale (no weight decay).
    #[inline(always)]
    fn plain(self, value: f32, update: f32) -> (f32, f32) {
        (value + self.step * update, update * self.momentum)
    }

    /// Returns the new value and update of a weight, adding the decay to the update first.
    #[inline(always)]
    fn decayed(self, value: f32, update: f32) -> (f32, f32) {
        let update = update + self.decay_term * value;
        (value + self.step * update, update * self.momentum)
    }
}

#[inline(always)]
fn apply(values: &mut [f32], updates: &mut [f32], step: impl Fn(f32, f32) -> (f32, f32)) {
    for (v, u) in values.iter_mut().zip(updates.iter_mut()) {
        (*v, *u) = step(*v, *u);
    }
}

/// Returns true when `step` maps every pair to finite values. `x * 0.0` is
/// zero for finite `x` and NaN otherwise. Eight independent sums let the loop
/// vectorize.
#[inline(always)]
fn stays_finite(values: &[f32], updates: &[f32], step: impl Fn(f32, f32) -> (f32, f32)) -> bool {
    let mut sums = [0.0f32; 8];
    let mut value_chunks = values.chunks_exact(8);
    let mut update_chunks = updates.chunks_exact(8);
    for (v, u) in (&mut value_chunks).zip(&mut update_chunks) {
        for lane in 0..8 {
            let (a, b) = step(v[lane], u[lane]);
            sums[lane] += a * 0.0 + b * 0.0;
        }
    }
    let tail = value_chunks.remainder().iter().zip(update_chunks.remainder()).all(|(&v, &u)| {
        let (a, b) = step(v, u);
        a.is_finite() && b.is_finite()
    });
    tail && sums.iter().all(|&s| s == 0.0)
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

    #[test]
    fn finiteness_check_predicts_the_update() {
        let mut p = Params::new(ParamLayout::Connected { inputs: 3, outputs: 3 }, true);
        p.weights = vec![1.0, -2.0, 3.0, 0.5, 0.0, -0.5, 2.0, 2.0, 2.0];
        p.weight_updates = vec![0.5; 9];
        assert!(p.sgd_update_stays_finite(0.1, 0.9, 0.0005, 2));

        // A finite update that overflows the weight: 3e38 + 1 * 1e38.
        let mut q = p.clone();
        q.weights[4] = 3e38;
        q.weight_updates[4] = 1e38;
        assert!(q.weights.iter().chain(&q.weight_updates).all(|v| v.is_finite()));
        assert!(!q.sgd_update_stays_finite(1.0, 0.9, 0.0, 1));
        let before = q.weights.clone();
        assert!(!q.sgd_update_stays_finite(1.0, 0.9, 0.0, 1), "the check must not change anything");
        assert_eq!(q.weights, before);
        q.sgd_update(1.0, 0.9, 0.0, 1);
        assert!(q.weights[4].is_infinite(), "the check and the update disagree");

        // A NaN in a bias update, in a scale, and in the rolling variance.
        let mut r = p.clone();
        r.bias_updates[2] = f32::NAN;
        assert!(!r.sgd_update_stays_finite(0.1, 0.9, 0.0, 2));
        let mut r = p.clone();
        r.batch_norm.as_mut().unwrap().scales[0] = f32::INFINITY;
        assert!(!r.sgd_update_stays_finite(0.1, 0.9, 0.0, 2));
        let mut r = p.clone();
        r.batch_norm.as_mut().unwrap().rolling_variance[1] = f32::NAN;
        assert!(!r.sgd_update_stays_finite(0.1, 0.9, 0.0, 2));
    }

    #[test]
    fn threaded_check_finds_nan_chunk() {
        // The layer is large enough to be split over the thread pool. A NaN
        // goes in the tail (not a multiple of 8), then in a middle chunk.
        let inputs = PARALLEL_MIN / 2 + 3;
        let mut p = Params::new(ParamLayout::Connected { inputs, outputs: 2 }, false);
        p.weight_updates.iter_mut().for_each(|u| *u = 0.25);
        assert!(p.sgd_update_stays_finite(0.01, 0.9, 0.0005, 128));
        for at in [p.weights.len() - 1, CHUNK + 5] {
            let mut q = p.clone();
            q.weight_updates[at] = f32::NAN;
            assert!(!q.sgd_update_stays_finite(0.01, 0.9, 0.0005, 128), "NaN at {at} missed");
        }
    }
}
