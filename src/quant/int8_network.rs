//! The integer-only network built from a cfg, `.qweights` and `.qparams`.
//! It holds only integers and per-layer constants: no float enters between
//! the input quantization and the dequantization of the last layer with
//! parameters, after which the softmax runs in float.

use super::affine::{quantize_input, QuantParams};
use super::fixed_point::{quantize_multiplier, real_multiplier};
use crate::config::cfg::{LayerSpec, NetworkConfig};
use crate::formats::qfiles::{read_qparams, read_qweights, LayerQParams};
use crate::kernels::gemm_i8::{gemm_requantize, PackedWeights, Requantization};
use crate::network::activation::Activation;
use crate::network::layers::softmax::softmax;
use crate::network::layers::ParamLayout;
use anyhow::{bail, Result};
use std::path::Path;

/// One integer stage.
pub struct Int8Connected {
    pub weights: PackedWeights,
    pub requant: Requantization,
    pub qparams: LayerQParams,
    /// Lower clamp for ReLU when the output zero point is above -128.
    pub relu_floor: Option<i8>,
}

pub struct Int8Network {
    pub input_params: QuantParams,
    pub stages: Vec<Int8Connected>,
    /// `(groups, temperature)` of a `[softmax]` after the last stage.
    softmax: Option<(usize, f32)>,
    inputs: usize,
    max_batch: usize,
    buffer_a: Vec<i8>,
    buffer_b: Vec<i8>,
    /// `[rows][outputs]` of the last stage after its requantization.
    pub last_q: Vec<i8>,
    probabilities: Vec<f32>,
    /// Biases clamped at load so the accumulators fit in int32.
    pub clamped_biases: usize,
}

impl Int8Network {
    /// Loads the integer parameters for `cfg`, checking sizes and the chain of
    /// scales (each layer's S1/Z1 must be the previous layer's S3/Z3).
    pub fn load(cfg: &NetworkConfig, qweights_path: &Path, qparams_path: &Path, max_batch: usize) -> Result<Int8Network> {
        let mut layouts = Vec::new();
        let mut activations = Vec::new();
        let mut inputs = cfg.net.inputs;
        let mut softmax_spec = None;
        let mut after_last = false;
        for entry in &cfg.layers {
            let where_ = format!("{}:{}: [{}]", cfg.path.display(), entry.line, entry.section);
            match &entry.spec {
                LayerSpec::Connected { output, activation, batch_normalize } => {
                    if after_last {
                        bail!("{where_}: INT8 inference needs every [connected] layer before [softmax]");
                    }
                    if *batch_normalize {
                        bail!("{where_}: INT8 inference of batch_normalize=1 connected layers is not supported");
                    }
                    if !matches!(activation, Activation::Relu | Activation::Linear) {
                        bail!(
                            "{where_}: activation={} has no integer-only form here; INT8 layers use relu or linear",
                            activation.name()
                        );
                    }
                    layouts.push(ParamLayout::Connected { inputs, outputs: *output });
                    activations.push(*activation);
                    inputs = *output;
                }
                LayerSpec::Softmax { groups, temperature } => {
                    softmax_spec = Some((*groups, *temperature));
                    after_last = true;
                }
                LayerSpec::Dropout { .. } | LayerSpec::Cost { .. } => {}
                _ => bail!("{where_}: INT8 inference does not support this layer kind yet"),
            }
        }
        if layouts.is_empty() {
            bail!("{}: no [connected] layer, so there is nothing to run in INT8", cfg.path.display());
        }

        let qparams = read_qparams(qparams_path, layouts.len(), &cfg.path)?;
        let qweights = read_qweights(qweights_path, &layouts, &cfg.path)?;
        for i in 1..qparams.len() {
            if qparams[i].input != qparams[i - 1].output {
                bail!(
                    ".qparams file {}: layer {i} input (S1 {}, Z1 {}) differs from layer {} output (S3 {}, Z3 {}); the file is inconsistent",
                    qparams_path.display(),
                    qparams[i].input.scale,
                    qparams[i].input.zero_point,
                    i - 1,
                    qparams[i - 1].output.scale,
                    qparams[i - 1].output.zero_point
                );
            }
        }

        let mut stages = Vec::new();
        let mut clamped_biases = 0;
        let mut widest = cfg.net.inputs;
        for ((layout, q), (w, act)) in layouts.iter().zip(&qparams).zip(qweights.into_iter().zip(activations)) {
            let weights = PackedWeights::new(&w.weights, layout.outputs(), layout.fan_in());
            let multiplier = quantize_multiplier(real_multiplier(q.input.scale, q.weight.scale, q.output.scale));
            let (requant, clamped) = Requantization::new(
                &weights,
                &w.biases,
                q.input.zero_point as i32,
                q.weight.zero_point as i32,
                multiplier,
                q.output.zero_point as i32,
            );
            clamped_biases += clamped;
            let relu_floor = (act == Activation::Relu && q.output.zero_point > -128).then_some(q.output.zero_point);
            widest = widest.max(layout.outputs());
            stages.push(Int8Connected { weights, requant, qparams: *q, relu_floor });
        }
        let classes = layouts.last().map(|l| l.outputs()).unwrap_or(0);
        Ok(Int8Network {
            input_params: qparams[0].input,
            stages,
            softmax: softmax_spec,
            inputs: cfg.net.inputs,
            max_batch,
            buffer_a: vec![0; max_batch * widest],
            buffer_b: vec![0; max_batch * widest],
            last_q: vec![0; max_batch * classes],
            probabilities: vec![0.0; max_batch * classes],
            clamped_biases,
        })
    }

    pub fn outputs(&self) -> usize {
        self.stages.last().map(|s| s.weights.outputs).unwrap_or(0)
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Runs `rows` images (`[rows][inputs]` floats in [0, 1]) and returns the
    /// class probabilities `[rows][outputs]`; the int8 outputs of the last
    /// stage are left in [`Int8Network::last_q`].
    pub fn predict(&mut self, input: &[f32], rows: usize) -> &[f32] {
        assert!(rows <= self.max_batch, "rows exceed the buffers");
        let mut width = self.inputs;
        quantize_input(&input[..rows * width], self.input_params, &mut self.buffer_a[..rows * width]);
        for stage in &self.stages {
            let n = stage.weights.outputs;
            gemm_requantize(&self.buffer_a[..rows * width], rows, &stage.weights, &stage.requant, &mut self.buffer_b[..rows * n]);
            if let Some(floor) = stage.relu_floor {
                for q in self.buffer_b[..rows * n].iter_mut() {
                    *q = (*q).max(floor);
                }
            }
            std::mem::swap(&mut self.buffer_a, &mut self.buffer_b);
            width = n;
        }
        self.last_q[..rows * width].copy_from_slice(&self.buffer_a[..rows * width]);

        let out = self.stages.last().expect("at least one stage").qparams.output;
        for (p, &q) in self.probabilities[..rows * width].iter_mut().zip(&self.last_q) {
            *p = out.dequantize(q);
        }
        if let Some((groups, temperature)) = self.softmax {
            let group = width / groups;
            let mut logits = vec![0.0f32; group];
            for chunk in self.probabilities[..rows * width].chunks_exact_mut(group) {
                logits.copy_from_slice(chunk);
                softmax(&logits, temperature, chunk);
            }
        }
        &self.probabilities[..rows * width]
    }
}
