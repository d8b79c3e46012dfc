//! Quantization-aware training: range observers for the network input and
//! every layer with parameters, fake quantization of weights and outputs,
//! and export of `.qweights`/`.qparams` at the end.
//!
//! Schedule, by 1-based QAT step: before `qat_init_step` plain FP32; at
//! `qat_init_step` the ranges are set from that batch; after it, weights are
//! fake-quantized with their current min/max into a copy (the FP32 masters
//! stay untouched and receive the gradients, the straight-through estimator),
//! and the input and each output are fake-quantized with their EMA ranges.
//!
//! A batch-normalized layer (`[connected]` or `[convolutional]`) is quantized in
//! its folded form, because the int8 network has no batch norm: the copy
//! contains the folded weights (see [`crate::network::layers::batch_norm`]) and
//! the export writes the folded weights and biases. Max pools need nothing, since a maximum of
//! values on the int8 grid stays on it. An average pool's output is
//! fake-quantized with its input's range, as the int8 network rounds it.

use super::affine::{fake_quantize, min_max, quantize_bias, QuantParams};
use super::observer::{smoothing_at, RangeObserver};
use crate::config::cfg::NetOptions;
use crate::formats::qfiles::{LayerQParams, LayerQWeights};
use crate::network::layers::batch_norm::fold_batch_norm;
use crate::network::layers::Layer;
use crate::network::Network;
use anyhow::{bail, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before `qat_init_step`: plain FP32.
    Float,
    /// The first active step: ranges are set from the batch.
    Calibrate,
    /// Fake quantization of weights, input and outputs.
    FakeQuant,
}

/// The tensor whose range a layer without parameters reuses for its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSource {
    Input,
    Layer(usize),
}

pub struct QatState {
    pub input: RangeObserver,
    /// One observer per layer; `Some` for layers with parameters.
    pub outputs: Vec<Option<RangeObserver>>,
    /// Per layer: `Some` for `[avgpool]` layers, whose output is
    /// fake-quantized with the range of the tensor they average.
    shared_ranges: Vec<Option<RangeSource>>,
    init_step: usize,
    total_steps: usize,
    step: usize,
    ema_smooth: f32,
    ema_convergence: f32,
    ema_decay: bool,
}

impl QatState {
    /// Prepares observers for `net`; `total_steps` is the number of QAT updates.
    pub fn new(net: &Network, options: &NetOptions, total_steps: usize) -> Result<QatState> {
        let mut outputs = Vec::with_capacity(net.layers.len());
        let mut shared_ranges = Vec::with_capacity(net.layers.len());
        let mut source = RangeSource::Input;
        for (i, layer) in net.layers.iter().enumerate() {
            if layer.params().is_none() {
                outputs.push(None);
                shared_ranges.push((layer.kind() == "avgpool").then_some(source));
                continue;
            }
            shared_ranges.push(None);
            source = RangeSource::Layer(i);
            let activation = layer.activation().expect("parameter layers have an activation");
            outputs.push(Some(RangeObserver::new(activation.is_non_negative())));
        }
        Ok(QatState {
            input: RangeObserver::new(false),
            outputs,
            shared_ranges,
            init_step: options.qat_init_step.max(1),
            total_steps,
            step: 0,
            ema_smooth: options.ema_smooth,
            ema_convergence: options.ema_convergence,
            ema_decay: options.ema_decay,
        })
    }

    /// Sets the 1-based step number of the next update.
    pub fn begin_step(&mut self, step: usize) {
        self.step = step;
    }

    pub fn phase(&self) -> Phase {
        if self.step < self.init_step {
            Phase::Float
        } else if self.step == self.init_step || !self.input.initialized {
            Phase::Calibrate
        } else {
            Phase::FakeQuant
        }
    }

    fn smoothing(&self) -> f32 {
        let done = self.step.saturating_sub(self.init_step);
        let span = self.total_steps.saturating_sub(self.init_step) + 1;
        smoothing_at(self.ema_smooth, self.ema_convergence, self.ema_decay, done, span)
    }

    /// Before a forward pass: fake-quantizes the weights into each layer's
    /// `forward_weights` and observes (and in [`Phase::FakeQuant`]
    /// fake-quantizes) the input rows.
    pub fn prepare(&mut self, net: &mut Network, input: &mut [f32]) {
        let phase = self.phase();
        if phase == Phase::Float {
            return;
        }
        let smooth = self.smoothing();
        self.input.observe(input, smooth);
        if phase == Phase::FakeQuant {
            fake_quantize(input, self.input.params());
            for layer in net.layers.iter_mut() {
                if let Some(p) = layer.params_mut() {
                    let (mut copy, _) = fold_batch_norm(p);
                    let (lo, hi) = min_max(&copy);
                    fake_quantize(&mut copy, QuantParams::from_range(lo, hi));
                    p.forward_weights = Some(copy);
                }
            }
        }
    }

    /// After layer `index`'s forward pass: observes its output and, in
    /// [`Phase::FakeQuant`], fake-quantizes it in place.
    pub fn after_layer(&mut self, index: usize, layer: &mut dyn Layer, rows: usize) {
        let phase = self.phase();
        if phase == Phase::Float {
            return;
        }
        let smooth = self.smoothing();
        let n = layer.outputs() * rows;
        let output = &mut layer.output_mut()[..n];
        if let Some(Some(observer)) = self.outputs.get_mut(index) {
            observer.observe(output, smooth);
            if phase == Phase::FakeQuant {
                fake_quantize(output, observer.params());
            }
        } else if let (Some(Some(source)), Phase::FakeQuant) = (self.shared_ranges.get(index), phase) {
            let params = match *source {
                RangeSource::Input => self.input.params(),
                RangeSource::Layer(j) => self.outputs[j].expect("a layer with parameters has an observer").params(),
            };
            fake_quantize(output, params);
        }
    }

    /// Drops the fake-quantized weight copies, leaving the masters.
    pub fn release(net: &mut Network) {
        for layer in net.layers.iter_mut() {
            if let Some(p) = layer.params_mut() {
                p.forward_weights = None;
            }
        }
    }

    /// Builds `.qparams` and `.qweights` contents from the final master
    /// weights (batch norm folded in) and the observed ranges.
    pub fn export(&self, net: &Network) -> Result<(Vec<LayerQParams>, Vec<LayerQWeights>)> {
        if !self.input.initialized {
            bail!("QAT never reached qat_init_step, so no ranges were observed; lower qat_init_step or raise qat_end_epoch");
        }
        let mut qparams = Vec::new();
        let mut qweights = Vec::new();
        let mut input = self.input.params();
        for (layer, observer) in net.layers.iter().zip(&self.outputs) {
            let (Some(p), Some(observer)) = (layer.params(), observer) else { continue };
            let (weights, biases) = fold_batch_norm(p);
            let (lo, hi) = min_max(&weights);
            let weight = QuantParams::from_range(lo, hi);
            let output = observer.params();
            qweights.push(LayerQWeights {
                biases: biases.iter().map(|&b| quantize_bias(b, input.scale, weight.scale)).collect(),
                weights: weights.iter().map(|&w| weight.quantize(w)).collect(),
            });
            qparams.push(LayerQParams { input, weight, output });
            input = output;
        }
        Ok((qparams, qweights))
    }
}
