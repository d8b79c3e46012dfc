//! The quantization report of `valid_int8 --report`: per layer with
//! parameters, the scales and zero points, the fixed-point multiplier, the
//! weight range, and how often the int8 outputs saturate on the validation set.

use crate::commands::valid::Classifier;
use crate::quant::fixed_point::real_multiplier;
use crate::quant::int8_network::{Int8Network, ParamStage, Stage};
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

/// Wraps an [`Int8Network`] during validation and counts the saturated
/// int8 values of the quantized input and of every stage's output.
pub struct SaturationProbe<'a> {
    net: &'a mut Int8Network,
    /// Saturation of the quantized network input.
    pub input: Saturation,
    /// Per stage, in order.
    pub stages: Vec<Saturation>,
    probabilities: Vec<f32>,
}

impl<'a> SaturationProbe<'a> {
    pub fn new(net: &'a mut Int8Network) -> SaturationProbe<'a> {
        let stages = vec![Saturation::default(); net.stages.len()];
        SaturationProbe { net, input: Saturation::default(), stages, probabilities: Vec::new() }
    }

    pub fn network(&self) -> &Int8Network {
        self.net
    }
}

impl Classifier for SaturationProbe<'_> {
    fn max_batch(&self) -> usize {
        self.net.max_batch()
    }

    fn classify(&mut self, input: &[f32], rows: usize) -> &[f32] {
        let (input_counts, stage_counts) = (&mut self.input, &mut self.stages);
        let probabilities = self.net.predict_observed(input, rows, &mut |stage, values| match stage {
            None => input_counts.count(values),
            Some(i) => stage_counts[i].count(values),
        });
        self.probabilities.clear();
        self.probabilities.extend_from_slice(probabilities);
        &self.probabilities
    }
}

/// Returns the report record of the layer with parameters at `stage_index`.
fn layer_record(stage_index: usize, kind: &'static str, s: &ParamStage, saturation: Saturation) -> Value {
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
        "outputs": saturation.total,
        "saturated_low": Saturation::share(saturation.low, saturation.total),
        "saturated_high": Saturation::share(saturation.high, saturation.total),
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

/// Returns the saturation of the quantized network input as a JSON object.
pub fn input_record(probe: &SaturationProbe) -> Value {
    let input = probe.input;
    json!({
        "values": input.total,
        "saturated_low": Saturation::share(input.low, input.total),
        "saturated_high": Saturation::share(input.high, input.total),
    })
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
    Ok(())
}
