//! The integer-only network built from a cfg, `.qweights` and `.qparams`.
//! It holds only integers and per-layer constants: no float enters between
//! the input quantization and the dequantization of the last stage, after
//! which the softmax runs in float.
//!
//! # Layouts
//!
//! Every stage reads and writes int8 rows `[rows][c][h][w]` (CHW), the
//! layout of the FP32 network, so a `[connected]` after a convolution reads
//! the values in the order its weights were trained on.
//!
//! A `[convolutional]` stage unfolds each image with `im2row` into
//! `[positions][channels * size * size]`, one GEMM row per output position,
//! with padding set to the input zero point Z1, the code of real 0 (padding
//! with the integer 0 would add `-Z1 * (q2 - Z2)` per padded tap). The int8
//! GEMM and its requantization then produce `[positions][filters]`, and a
//! transpose restores `[filters][positions]`. Several images share one GEMM
//! so that its rows can be split over threads.
//!
//! `[maxpool]` and `[avgpool]` keep the scale and zero point of their input:
//! a maximum of int8 codes is exact, and an average is rounded to the
//! nearest code, ties away from zero. The last stage's output (for example
//! an average pool after a 1x1 convolution) is dequantized with the scale
//! and zero point it carries, which is the last parameter layer's S3/Z3.

use super::affine::{quantize_input, QuantParams};
use super::fixed_point::{quantize_multiplier, real_multiplier};
use crate::config::cfg::{LayerSpec, NetworkConfig};
use crate::formats::qfiles::{read_qparams, read_qweights, LayerQParams, LayerQWeights};
use crate::kernels::gemm_i8::{gemm_requantize, PackedWeights, Requantization};
use crate::kernels::im2col::{im2row, ConvGeometry};
use crate::network::activation::Activation;
use crate::network::layers::avgpool::average_pool_i8;
use crate::network::layers::maxpool::{max_pool_i8, PoolGeometry};
use crate::network::layers::softmax::softmax;
use crate::network::layers::{ParamLayout, Shape};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::Path;

/// Bytes of im2row rows per convolution GEMM (16 MiB). It sets how many
/// images one GEMM covers.
const COLUMN_BUDGET: usize = 1 << 24;

/// The integer constants of one layer with parameters.
pub struct ParamStage {
    pub weights: PackedWeights,
    pub requant: Requantization,
    pub qparams: LayerQParams,
    /// Lower clamp for ReLU when the output zero point is above -128.
    pub relu_floor: Option<i8>,
}

/// One integer layer.
pub enum Stage {
    Connected(ParamStage),
    Convolutional {
        geometry: ConvGeometry,
        /// Images per GEMM.
        chunk: usize,
        stage: ParamStage,
    },
    MaxPool(PoolGeometry),
    AvgPool {
        channels: usize,
        spatial: usize,
    },
}

impl Stage {
    /// Values of one output row.
    pub fn output_len(&self) -> usize {
        match self {
            Stage::Connected(s) => s.weights.outputs,
            Stage::Convolutional { geometry, stage, .. } => stage.weights.outputs * geometry.positions(),
            Stage::MaxPool(g) => g.output_len(),
            Stage::AvgPool { channels, .. } => *channels,
        }
    }

    fn params(&self) -> Option<&ParamStage> {
        match self {
            Stage::Connected(s) | Stage::Convolutional { stage: s, .. } => Some(s),
            Stage::MaxPool(_) | Stage::AvgPool { .. } => None,
        }
    }
}

/// A stage as the cfg describes it, before the files are read.
enum Planned {
    Params { layout: ParamLayout, activation: Activation, geometry: Option<ConvGeometry> },
    MaxPool(PoolGeometry),
    AvgPool { channels: usize, spatial: usize },
}

pub struct Int8Network {
    pub input_params: QuantParams,
    pub stages: Vec<Stage>,
    /// Scale and zero point of the last stage's output.
    pub output_params: QuantParams,
    /// `(groups, temperature)` of a `[softmax]` after the last stage.
    softmax: Option<(usize, f32)>,
    inputs: usize,
    outputs: usize,
    max_batch: usize,
    buffer_a: Vec<i8>,
    buffer_b: Vec<i8>,
    /// im2row rows of a convolution chunk.
    columns: Vec<i8>,
    /// `[positions][filters]` GEMM output of a convolution chunk.
    products: Vec<i8>,
    /// `[rows][outputs]` of the last stage.
    pub last_q: Vec<i8>,
    probabilities: Vec<f32>,
    /// Biases clamped at load so the accumulators fit in int32.
    pub clamped_biases: usize,
}

/// The integer network a cfg describes.
struct Plan {
    stages: Vec<Planned>,
    /// `(groups, temperature)` of the `[softmax]`, if any.
    softmax: Option<(usize, f32)>,
    /// The shape of the last stage's output.
    output_shape: Shape,
}

/// Returns the layouts of the planned stages with parameters, in order, or
/// an error when there are none.
fn param_layouts(planned: &[Planned], cfg: &NetworkConfig) -> Result<Vec<ParamLayout>> {
    let layouts: Vec<ParamLayout> = planned
        .iter()
        .filter_map(|p| match p {
            Planned::Params { layout, .. } => Some(*layout),
            _ => None,
        })
        .collect();
    if layouts.is_empty() {
        bail!("{}: no [connected] or [convolutional] layer, so there is nothing to run in INT8", cfg.path.display());
    }
    Ok(layouts)
}

/// Reads the stages of `cfg` up to `[softmax]`, checking what the integer
/// path supports.
fn plan(cfg: &NetworkConfig) -> Result<Plan> {
    let net = &cfg.net;
    let mut shape = if net.height * net.width * net.channels == net.inputs {
        Shape { c: net.channels, h: net.height, w: net.width }
    } else {
        Shape::flat(net.inputs)
    };
    let mut planned = Vec::new();
    let mut softmax_spec = None;
    for entry in &cfg.layers {
        let where_ = format!("{}:{}: [{}]", cfg.path.display(), entry.line, entry.section);
        if softmax_spec.is_some() && !matches!(entry.spec, LayerSpec::Dropout { .. } | LayerSpec::Cost { .. }) {
            bail!("{where_}: INT8 inference needs every layer except [dropout] and [cost] before [softmax]");
        }
        let check_activation = |activation: &Activation| -> Result<()> {
            if !matches!(activation, Activation::Relu | Activation::Linear) {
                bail!("{where_}: activation={} has no integer-only form here; INT8 layers use relu or linear", activation.name());
            }
            Ok(())
        };
        match &entry.spec {
            LayerSpec::Connected { output, activation, .. } => {
                // Batch norm needs no check: QAT folded it into the .qweights.
                check_activation(activation)?;
                let layout = ParamLayout::Connected { inputs: shape.len(), outputs: *output };
                planned.push(Planned::Params { layout, activation: *activation, geometry: None });
                shape = Shape::flat(*output);
            }
            LayerSpec::Convolutional { filters, size, stride, pad, activation, .. } => {
                // Batch norm needs no check: QAT folded it into the .qweights.
                check_activation(activation)?;
                let geometry = ConvGeometry::new(shape.c, shape.h, shape.w, *size, *stride, *pad)
                    .with_context(|| format!("{where_}: input {}x{}x{}", shape.c, shape.h, shape.w))?;
                let layout = ParamLayout::Convolutional { filters: *filters, channels: shape.c, size: *size };
                planned.push(Planned::Params { layout, activation: *activation, geometry: Some(geometry) });
                shape = Shape { c: *filters, h: geometry.out_height, w: geometry.out_width };
            }
            LayerSpec::MaxPool { size, stride, padding } => {
                let geometry = PoolGeometry::new(shape, *size, *stride, *padding)
                    .with_context(|| format!("{where_}: input {}x{}x{}", shape.c, shape.h, shape.w))?;
                planned.push(Planned::MaxPool(geometry));
                shape = geometry.output_shape();
            }
            LayerSpec::AvgPool => {
                planned.push(Planned::AvgPool { channels: shape.c, spatial: shape.h * shape.w });
                shape = Shape::flat(shape.c);
            }
            LayerSpec::Softmax { groups, temperature } => {
                if shape.len() % groups != 0 {
                    bail!("{where_}: groups={groups} does not divide the {} inputs of the layer", shape.len());
                }
                softmax_spec = Some((*groups, *temperature));
            }
            LayerSpec::Dropout { .. } | LayerSpec::Cost { .. } => {}
        }
    }
    Ok(Plan { stages: planned, softmax: softmax_spec, output_shape: shape })
}

impl Int8Network {
    /// Loads the integer parameters for `cfg`, checking sizes and the chain of
    /// scales (each layer's S1/Z1 must be the previous layer's S3/Z3).
    pub fn load(cfg: &NetworkConfig, qweights_path: &Path, qparams_path: &Path, max_batch: usize) -> Result<Int8Network> {
        let plan = plan(cfg)?;
        let layouts = param_layouts(&plan.stages, cfg)?;
        let qparams = read_qparams(qparams_path, layouts.len(), &cfg.path)?;
        let qweights = read_qweights(qweights_path, &layouts, &cfg.path)?;
        Int8Network::build(cfg, plan, &layouts, qparams, qweights, qparams_path, max_batch)
    }

    /// Builds the network for `cfg` from decoded `.qparams` and `.qweights`
    /// contents, checking their counts and sizes against the cfg, the chain of
    /// scales, and that every layer's multiplier `M = S1 * S2 / S3` is a
    /// positive finite f32. `qparams_path` names the file in messages.
    pub fn from_parts(
        cfg: &NetworkConfig,
        qparams: Vec<LayerQParams>,
        qweights: Vec<LayerQWeights>,
        qparams_path: &Path,
        max_batch: usize,
    ) -> Result<Int8Network> {
        let plan = plan(cfg)?;
        let layouts = param_layouts(&plan.stages, cfg)?;
        Int8Network::build(cfg, plan, &layouts, qparams, qweights, qparams_path, max_batch)
    }

    /// Checks the decoded files against `plan` (the stages of `cfg`, with the
    /// parameter `layouts` among them) and builds the network; see
    /// [`Int8Network::from_parts`].
    fn build(
        cfg: &NetworkConfig,
        plan: Plan,
        layouts: &[ParamLayout],
        qparams: Vec<LayerQParams>,
        qweights: Vec<LayerQWeights>,
        qparams_path: &Path,
        max_batch: usize,
    ) -> Result<Int8Network> {
        let Plan { stages: planned, softmax: softmax_spec, output_shape } = plan;
        if qparams.len() != layouts.len() || qweights.len() != layouts.len() {
            bail!(
                "{} has {} layers with parameters, but the .qparams have {} and the .qweights {}; use the files that qat_int8 wrote for this cfg",
                cfg.path.display(),
                layouts.len(),
                qparams.len(),
                qweights.len()
            );
        }
        for (i, (layout, w)) in layouts.iter().zip(&qweights).enumerate() {
            if w.biases.len() != layout.outputs() || w.weights.len() != layout.outputs() * layout.fan_in() {
                bail!(
                    "layer {i} of {} needs {} biases and {} weights, but the .qweights have {} and {}; use the files that qat_int8 wrote for this cfg",
                    cfg.path.display(),
                    layout.outputs(),
                    layout.outputs() * layout.fan_in(),
                    w.biases.len(),
                    w.weights.len()
                );
            }
        }
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
        for (i, q) in qparams.iter().enumerate() {
            let m = real_multiplier(q.input.scale, q.weight.scale, q.output.scale);
            if !(m.is_finite() && m > 0.0) {
                bail!(
                    ".qparams file {}: layer {i} has S1 {}, S2 {}, S3 {}, so M = S1*S2/S3 = {m}, which has no fixed-point form; the file is damaged or the QAT run diverged",
                    qparams_path.display(),
                    q.input.scale,
                    q.weight.scale,
                    q.output.scale
                );
            }
        }
        let mut qweights = qweights.into_iter();

        let mut stages = Vec::new();
        let mut clamped_biases = 0;
        let mut widest = cfg.net.inputs;
        let (mut columns_len, mut products_len) = (0, 0);
        let mut current = qparams[0].input;
        let mut next_qparams = qparams.iter();
        for step in planned {
            let stage = match step {
                Planned::Params { layout, activation, geometry } => {
                    let q = *next_qparams.next().expect("one .qparams entry per layout");
                    let w = qweights.next().expect("one .qweights entry per layout");
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
                    let relu_floor = (activation == Activation::Relu && q.output.zero_point > -128).then_some(q.output.zero_point);
                    current = q.output;
                    let stage = ParamStage { weights, requant, qparams: q, relu_floor };
                    match geometry {
                        None => Stage::Connected(stage),
                        Some(geometry) => {
                            let (p, k) = (geometry.positions(), geometry.fan_in());
                            let chunk = (COLUMN_BUDGET / (p * k).max(1)).clamp(1, max_batch.max(1));
                            columns_len = columns_len.max(chunk * p * k);
                            products_len = products_len.max(chunk * p * layout.outputs());
                            Stage::Convolutional { geometry, chunk, stage }
                        }
                    }
                }
                Planned::MaxPool(geometry) => Stage::MaxPool(geometry),
                Planned::AvgPool { channels, spatial } => Stage::AvgPool { channels, spatial },
            };
            widest = widest.max(stage.output_len());
            stages.push(stage);
        }

        let outputs = output_shape.len();
        Ok(Int8Network {
            input_params: qparams[0].input,
            stages,
            output_params: current,
            softmax: softmax_spec,
            inputs: cfg.net.inputs,
            outputs,
            max_batch,
            buffer_a: vec![0; max_batch * widest],
            buffer_b: vec![0; max_batch * widest],
            columns: vec![0; columns_len],
            products: vec![0; products_len],
            last_q: vec![0; max_batch * outputs],
            probabilities: vec![0.0; max_batch * outputs],
            clamped_biases,
        })
    }

    pub fn outputs(&self) -> usize {
        self.outputs
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Runs `rows` images (`[rows][inputs]` floats in [0, 1]) and returns the
    /// class probabilities `[rows][outputs]`; the int8 outputs of the last
    /// stage are left in [`Int8Network::last_q`].
    pub fn predict(&mut self, input: &[f32], rows: usize) -> &[f32] {
        self.predict_observed(input, rows, &mut |_, _| {})
    }

    /// [`Int8Network::predict`], calling `observe` with the int8 values of
    /// the quantized input (`None`) and then of each stage's output
    /// (`Some(stage index)`), `[rows][values]` each.
    pub fn predict_observed(&mut self, input: &[f32], rows: usize, observe: &mut dyn FnMut(Option<usize>, &[i8])) -> &[f32] {
        assert!(rows <= self.max_batch, "rows exceed the buffers");
        let mut width = self.inputs;
        quantize_input(&input[..rows * width], self.input_params, &mut self.buffer_a[..rows * width]);
        observe(None, &self.buffer_a[..rows * width]);
        for (index, stage) in self.stages.iter().enumerate() {
            let n = stage.output_len();
            let (a, b) = (&self.buffer_a[..rows * width], &mut self.buffer_b[..rows * n]);
            match stage {
                Stage::Connected(s) => gemm_requantize(a, rows, &s.weights, &s.requant, b),
                Stage::Convolutional { geometry, chunk, stage } => {
                    convolve(geometry, *chunk, stage, a, rows, &mut self.columns, &mut self.products, b)
                }
                Stage::MaxPool(geometry) => max_pool_i8(geometry, a, rows, b),
                Stage::AvgPool { channels, spatial } => average_pool_i8(a, rows, *channels, *spatial, b),
            }
            if let Some(floor) = stage.params().and_then(|s| s.relu_floor) {
                for q in b.iter_mut() {
                    *q = (*q).max(floor);
                }
            }
            observe(Some(index), b);
            std::mem::swap(&mut self.buffer_a, &mut self.buffer_b);
            width = n;
        }
        self.last_q[..rows * width].copy_from_slice(&self.buffer_a[..rows * width]);

        let out = self.output_params;
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

/// Convolves `rows` CHW int8 images of `input` into CHW `output`, `chunk`
/// images per GEMM: im2row with padding Z1, the int8 GEMM with its
/// requantization into `[positions][filters]`, then a transpose per image.
#[allow(clippy::too_many_arguments)]
fn convolve(
    g: &ConvGeometry,
    chunk: usize,
    s: &ParamStage,
    input: &[i8],
    rows: usize,
    columns: &mut [i8],
    products: &mut [i8],
    output: &mut [i8],
) {
    let (k, p, n, in_len) = (g.fan_in(), g.positions(), s.weights.outputs, g.input_len());
    let pad_value = s.qparams.input.zero_point;
    for first in (0..rows).step_by(chunk) {
        let count = chunk.min(rows - first);
        let images = &input[first * in_len..(first + count) * in_len];
        columns[..count * p * k].par_chunks_mut(p * k).zip(images.par_chunks(in_len)).for_each(|(unfolded, image)| {
            im2row(g, image, pad_value, unfolded);
        });

        gemm_requantize(&columns[..count * p * k], count * p, &s.weights, &s.requant, &mut products[..count * p * n]);

        let out = &mut output[first * n * p..(first + count) * n * p];
        for (image_out, image_products) in out.chunks_exact_mut(n * p).zip(products.chunks_exact(p * n)) {
            for (position, values) in image_products.chunks_exact(n).enumerate() {
                for (f, &q) in values.iter().enumerate() {
                    image_out[f * p + position] = q;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "[net]\nbatch=2\nheight=1\nwidth=1\nchannels=3\n\
[connected]\noutput=2\nactivation=relu\n\
[connected]\noutput=4\nactivation=linear\n\
[softmax]\n";

    fn unit(zero_point: i8) -> QuantParams {
        QuantParams { scale: 0.5, zero_point }
    }

    fn parts() -> (NetworkConfig, Vec<LayerQParams>, Vec<LayerQWeights>) {
        let cfg = NetworkConfig::parse(CFG, Path::new("t.cfg")).unwrap();
        let qparams = vec![
            LayerQParams { input: unit(-128), weight: unit(0), output: unit(-128) },
            LayerQParams { input: unit(-128), weight: unit(0), output: unit(3) },
        ];
        let qweights = vec![
            LayerQWeights { biases: vec![1, -1], weights: vec![1, 2, 3, -1, -2, -3] },
            LayerQWeights { biases: vec![0; 4], weights: vec![1, 0, 0, 1, 1, 1, -1, 2] },
        ];
        (cfg, qparams, qweights)
    }

    fn error(cfg: &NetworkConfig, qparams: Vec<LayerQParams>, qweights: Vec<LayerQWeights>) -> String {
        match Int8Network::from_parts(cfg, qparams, qweights, Path::new("t.qparams"), 2) {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn from_parts_runs_a_valid_network() {
        let (cfg, qparams, qweights) = parts();
        let mut net = Int8Network::from_parts(&cfg, qparams, qweights, Path::new("t.qparams"), 2).unwrap();
        let probabilities = net.predict(&[0.0, 0.5, 1.0, 1.0, 1.0, 1.0], 2).to_vec();
        assert_eq!(probabilities.len(), 8);
        for row in probabilities.chunks_exact(4) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn from_parts_rejects_wrong_counts_and_sizes() {
        let (cfg, mut qparams, qweights) = parts();
        qparams.pop();
        assert!(error(&cfg, qparams, qweights).contains("the .qparams have 1 and the .qweights 2"));

        let (cfg, qparams, mut qweights) = parts();
        qweights[1].weights.pop();
        let message = error(&cfg, qparams, qweights);
        assert!(message.contains("layer 1 of t.cfg needs 4 biases and 8 weights"), "{message}");
    }

    #[test]
    fn from_parts_rejects_infinite_multiplier() {
        // S1 * S2 overflows f32, so M is infinite.
        let (cfg, mut qparams, qweights) = parts();
        qparams[0].input.scale = 1e30;
        qparams[0].weight.scale = 1e30;
        let message = error(&cfg, qparams, qweights);
        assert!(message.contains("layer 0 has S1 1000000000000000000000000000000"), "{message}");
        assert!(message.contains("M = S1*S2/S3 = inf"), "{message}");
    }
}
