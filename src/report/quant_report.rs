//! The quantization report of `valid_int8 --report`: per layer with
//! parameters, the scales and zero points, the fixed-point multiplier, the
//! weight range, and how often the int8 outputs saturate on the validation set.

use crate::commands::valid::Classifier;
use crate::quant::affine::quantize_input;
use crate::quant::fixed_point::real_multiplier;
use crate::quant::int8_network::{Int8Network, ParamStage, Stage};
use crate::kernels::gemm_i8::gemm_requantize;
use serde_json::{json, Value};
use std::io::Write;

/// Counts of int8 values at the ends of the range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Saturation {
    pub low: u64,
    pub high: u64,
    pub total: u64,
}

impl Saturation {
    fn count(&mut self, values: &[i8]) {
        for &q in values {
            self.low += (q == i8::MIN) as u64;
            self.high += (q == i8::MAX) as u64;
        }
        self.total += values.len() as u64;
    }

    fn share(count: u64, total: u64) -> f64 {
        if total == 0 {
            0.0
        } else {
            count as f64 / total as f64
        }
    }
}

/// Wraps an [`Int8Network`] during validation and counts saturated outputs.
///
/// The network's public state gives the int8 output of the last stage
/// ([`Int8Network::last_q`]) but not those of earlier stages. When every
/// stage is `[connected]`, the probe recomputes each stage from the same
/// public kernels (`quantize_input`, `gemm_requantize`) to count all of them,
/// and checks that its last stage equals `last_q`. For networks with
/// convolution or pooling stages only the input quantization and the last
/// stage are counted.
pub struct SaturationProbe<'a> {
    net: &'a mut Int8Network,
    inputs: usize,
    replay: bool,
    /// Saturation of the quantized network input.
    pub input: Saturation,
    /// Per stage; `None` where the stage's output is not reachable.
    pub stages: Vec<Option<Saturation>>,
    /// Batches where the recomputation differed from the network's output.
    pub replay_mismatches: usize,
    probabilities: Vec<f32>,
    buffer_a: Vec<i8>,
    buffer_b: Vec<i8>,
}

impl<'a> SaturationProbe<'a> {
    pub fn new(net: &'a mut Int8Network, inputs: usize) -> SaturationProbe<'a> {
        let replay = net.stages.iter().all(|s| matches!(s, Stage::Connected(_)));
        let count = net.stages.len();
        let stages = (0..count).map(|i| (replay || i + 1 == count).then(Saturation::default)).collect();
        SaturationProbe {
            net,
            inputs,
            replay,
            input: Saturation::default(),
            stages,
            replay_mismatches: 0,
            probabilities: Vec::new(),
            buffer_a: Vec::new(),
            buffer_b: Vec::new(),
        }
    }

    /// Returns true when every stage's saturation was counted.
    pub fn covers_all_stages(&self) -> bool {
        self.replay
    }

    pub fn network(&self) -> &Int8Network {
        self.net
    }

    /// Quantizes `input` and, for an all-`[connected]` network, recomputes
    /// every stage, counting saturated values. Returns the last stage's
    /// output when it was recomputed.
    fn count_stages(&mut self, input: &[f32], rows: usize) -> Option<Vec<i8>> {
        self.buffer_a.resize(rows * self.inputs, 0);
        quantize_input(&input[..rows * self.inputs], self.net.input_params, &mut self.buffer_a);
        self.input.count(&self.buffer_a);
        if !self.replay {
            return None;
        }
        for (i, stage) in self.net.stages.iter().enumerate() {
            let Stage::Connected(s) = stage else { return None };
            self.buffer_b.resize(rows * s.weights.outputs, 0);
            gemm_requantize(&self.buffer_a, rows, &s.weights, &s.requant, &mut self.buffer_b);
            if let Some(floor) = s.relu_floor {
                for q in self.buffer_b.iter_mut() {
                    *q = (*q).max(floor);
                }
            }
            if let Some(counts) = self.stages[i].as_mut() {
                counts.count(&self.buffer_b);
            }
            std::mem::swap(&mut self.buffer_a, &mut self.buffer_b);
        }
        Some(self.buffer_a.clone())
    }
}

impl Classifier for SaturationProbe<'_> {
    fn max_batch(&self) -> usize {
        self.net.max_batch()
    }

    fn classify(&mut self, input: &[f32], rows: usize) -> &[f32] {
        let replayed = self.count_stages(input, rows);
        self.probabilities = self.net.predict(input, rows).to_vec();
        let last = &self.net.last_q[..self.probabilities.len()];
        match replayed {
            Some(values) => self.replay_mismatches += (values.as_slice() != last) as usize,
            None => {
                if let Some(Some(counts)) = self.stages.last_mut() {
                    counts.count(last);
                }
            }
        }
        &self.probabilities
    }
}

/// Returns the report record of the layer with parameters at `stage_index`.
fn layer_record(stage_index: usize, kind: &'static str, s: &ParamStage, saturation: Option<Saturation>) -> Value {
    let q = &s.qparams;
    let real = real_multiplier(q.input.scale, q.weight.scale, q.output.scale);
    let (min_q, max_q) = s.weights.rows.iter().fold((i8::MAX, i8::MIN), |(lo, hi), &w| (lo.min(w), hi.max(w)));
    json!({
        "stage": stage_index, "kind": kind,
        "S1": q.input.scale, "S2": q.weight.scale, "S3": q.output.scale,
        "Z1": q.input.zero_point, "Z2": q.weight.zero_point, "Z3": q.output.zero_point,
        "M": real, "M_q31": s.requant.multiplier.multiplier, "shift": s.requant.multiplier.shift,
        "weight_min_q": min_q, "weight_max_q": max_q,
        "weight_min": q.weight.dequantize(min_q), "weight_max": q.weight.dequantize(max_q),
        "outputs": saturation.map(|c| c.total),
        "saturated_low": saturation.map(|c| Saturation::share(c.low, c.total)),
        "saturated_high": saturation.map(|c| Saturation::share(c.high, c.total)),
    })
}

/// Returns one JSON object per layer with parameters, in file order.
pub fn layer_records(probe: &SaturationProbe) -> Vec<Value> {
    let mut layers = Vec::new();
    for (i, stage) in probe.network().stages.iter().enumerate() {
        let (kind, s) = match stage {
            Stage::Connected(s) => ("connected", s),
            Stage::Convolutional { stage, .. } => ("convolutional", stage),
            _ => continue,
        };
        let mut record = layer_record(i, kind, s, probe.stages[i]);
        record["layer"] = json!(layers.len());
        layers.push(record);
    }
    layers
}

fn percent(value: &Value) -> String {
    value.as_f64().map_or("n/a".to_string(), |v| format!("{:.3}%", v * 100.0))
}

/// Prints the report as a table on `out`.
pub fn print_report(out: &mut impl Write, probe: &SaturationProbe, layers: &[Value]) -> std::io::Result<()> {
    writeln!(out, "Quantization report ({} layers with parameters)", layers.len())?;
    writeln!(
        out,
        "{:>5} {:<13} {:>12} {:>12} {:>12} {:>5} {:>5} {:>5} {:>12} {:>11} {:>5} {:>22} {:>9} {:>9}",
        "layer", "kind", "S1", "S2", "S3", "Z1", "Z2", "Z3", "M", "M q31", "shift", "weights (int8: real)", "at -128", "at 127"
    )?;
    for l in layers {
        let weights = format!(
            "[{}, {}]: [{:.4}, {:.4}]",
            l["weight_min_q"], l["weight_max_q"],
            l["weight_min"].as_f64().unwrap_or(f64::NAN),
            l["weight_max"].as_f64().unwrap_or(f64::NAN)
        );
        let number = |name: &str| l[name].as_f64().unwrap_or(f64::NAN);
        let integer = |name: &str| l[name].as_i64().map_or("?".to_string(), |v| v.to_string());
        writeln!(
            out,
            "{:>5} {:<13} {:>12.6e} {:>12.6e} {:>12.6e} {:>5} {:>5} {:>5} {:>12.6e} {:>11} {:>5} {:>22} {:>9} {:>9}",
            integer("layer"),
            l["kind"].as_str().unwrap_or("?"),
            number("S1"),
            number("S2"),
            number("S3"),
            integer("Z1"),
            integer("Z2"),
            integer("Z3"),
            number("M"),
            integer("M_q31"),
            integer("shift"),
            weights,
            percent(&l["saturated_low"]),
            percent(&l["saturated_high"])
        )?;
    }
    let input = probe.input;
    writeln!(
        out,
        "input quantization: {:.3}% at -128, {:.3}% at 127 of {} values",
        Saturation::share(input.low, input.total) * 100.0,
        Saturation::share(input.high, input.total) * 100.0,
        input.total
    )?;
    writeln!(out, "M = S1*S2/S3 = M q31 * 2^(-31 - shift). A value at -128 where the zero point is -128 is real 0 (a black pixel, or the ReLU floor), not a clipped value.")?;
    if !probe.covers_all_stages() {
        writeln!(out, "n/a: the network has convolution or pooling stages, whose int8 outputs are not exposed, so only the last stage was counted.")?;
    }
    if probe.replay_mismatches > 0 {
        writeln!(out, "warning: the recomputed stages differed from the network's output in {} batches; the saturation counts may be wrong", probe.replay_mismatches)?;
    }
    Ok(())
}
