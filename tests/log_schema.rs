//! The run log `log/<cfg base>.json` against docs/LOG_SCHEMA.md: a short real
//! training, FP32 validation, QAT and INT8 validation with `--report` on 300
//! imported MNIST digits, then every line parsed and its fields checked, and
//! the charts checked as PNG files.

use serde_json::Value;
use std::path::Path;

mod common;

use common::{darknet_in, mnist_folder};

const CFG: &str = "[net]
batch=32
subdivisions=1
height=28
width=28
channels=1
max_batches=20
policy=steps
steps=10
scales=.5
learning_rate=0.05
momentum=0.9
decay=0.0005
qat_init_step=1
qat_end_epoch=1
ema_smooth=0.99

[connected]
output=32
activation=relu

[connected]
output=10
activation=linear

[softmax]
";

/// Fields every record of `event` must carry, beside `event` and `time`.
fn required_fields(event: &str) -> &'static [&'static str] {
    match event {
        "run" => &["command", "data", "cfg", "weights", "seed", "version", "batch", "subdivisions", "max_batches", "learning_rate", "momentum", "decay", "policy"],
        "batch" => &["batch", "epoch", "loss", "avg_loss", "rate", "seconds", "seen"],
        "epoch" => &["epoch", "batch", "seen", "batches", "mean_loss", "avg_loss", "seconds"],
        "train_end" => &["weights", "batches", "seen", "seconds", "images_per_second", "loss", "avg_loss"],
        "files" => &["command", "written"],
        "qat_end" => &["weights", "qweights", "qparams", "batches", "seconds", "ranges"],
        "confusion" => &["labels", "counts", "chart"],
        "valid" => &["mode", "images", "top1", "top_k", "k", "skipped", "seconds", "data", "cfg", "chart"],
        "quant_report" => &["qweights", "qparams", "input", "layers"],
        other => panic!("event {other:?} is not in docs/LOG_SCHEMA.md"),
    }
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).map(|bytes| bytes.len() > 1000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n")).unwrap_or(false)
}

#[test]
fn log_records_follow_schema() {
    let Some(dir) = mnist_folder("log-schema", 300, "tiny.cfg", CFG) else { return };

    darknet_in(&dir, &["classifier", "train_randseq", "mnist.data", "tiny.cfg"]);
    darknet_in(&dir, &["classifier", "valid", "mnist.data", "tiny.cfg", "backup/tiny.weights"]);
    darknet_in(&dir, &["classifier", "qat_int8", "mnist.data", "tiny.cfg", "backup/tiny.weights"]);
    let report = darknet_in(
        &dir,
        &["classifier", "valid_int8", "mnist.data", "tiny.cfg", "backup/tiny.qat.int8.qweights", "backup/tiny.qat.int8.qparams", "--report"],
    );

    let text = std::fs::read_to_string(dir.join("log/tiny.json")).unwrap();
    let records: Vec<Value> = text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))).collect();
    for record in &records {
        let event = record["event"].as_str().unwrap_or_else(|| panic!("no event in {record}"));
        assert!(record["time"].is_f64(), "no time in {record}");
        for field in required_fields(event) {
            assert!(record.get(*field).is_some(), "{event} record lacks {field}: {record}");
        }
    }
    let count = |event: &str| records.iter().filter(|r| r["event"] == event).count();
    assert_eq!(count("run"), 2, "train_randseq and qat_int8 each start with a run record");
    // 20 training batches plus one QAT epoch of 300 images in batches of 32.
    assert_eq!(count("batch"), 20 + 10);
    // 20 batches of 32 cross 300 and 600 images; QAT crosses 300 once.
    assert_eq!(count("epoch"), 3);
    assert_eq!(count("valid"), 2);
    assert_eq!(count("quant_report"), 1);

    let train_batches: Vec<&Value> = records.iter().filter(|r| r["event"] == "batch").take(20).collect();
    let rate = |i: usize| train_batches[i]["rate"].as_f64().unwrap();
    assert!((rate(9) - 0.05).abs() < 1e-6, "rate before the step: {}", rate(9));
    assert!((rate(10) - 0.025).abs() < 1e-6, "rate after steps=10: {}", rate(10));

    let valid: Vec<&Value> = records.iter().filter(|r| r["event"] == "valid").collect();
    assert_eq!(valid[0]["mode"], "fp32");
    assert_eq!(valid[1]["mode"], "int8");
    let confusion = records.iter().find(|r| r["event"] == "confusion").unwrap();
    let total: u64 = confusion["counts"].as_array().unwrap().iter().flat_map(|row| row.as_array().unwrap()).map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(total, valid[0]["images"].as_u64().unwrap(), "the confusion matrix counts every validated image");

    let quant_report = records.iter().find(|r| r["event"] == "quant_report").unwrap();
    let input = &quant_report["input"];
    assert!(input["values"].as_u64().is_some_and(|v| v > 0), "input lacks values: {input}");
    for field in ["saturated_low", "saturated_high"] {
        assert!(input[field].as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)), "input lacks {field}: {input}");
    }
    let layers = quant_report["layers"].as_array().unwrap().clone();
    assert_eq!(layers.len(), 2);
    for layer in &layers {
        for field in ["S1", "S2", "S3", "Z1", "Z2", "Z3", "M", "M_q31", "shift", "weight_min", "weight_max", "saturated_low", "saturated_high"] {
            assert!(layer.get(field).is_some_and(|v| !v.is_null()), "layer lacks {field}: {layer}");
        }
        let q31 = layer["M_q31"].as_i64().unwrap();
        assert!((1 << 30..1 << 31).contains(&q31), "M q31 {q31} outside [2^30, 2^31)");
        let m = layer["M"].as_f64().unwrap();
        let rebuilt = q31 as f64 * 2f64.powi(-31 - layer["shift"].as_i64().unwrap() as i32);
        assert!((rebuilt - m).abs() <= m * 1e-6, "M {m} vs q31 form {rebuilt}");
    }
    let stdout = String::from_utf8_lossy(&report.stdout);
    assert!(stdout.contains("Quantization report (2 layers with parameters)"), "{stdout}");

    for chart in ["log/tiny_chart.png", "log/tiny_confusion.png", "log/tiny_confusion_int8.png"] {
        assert!(is_png(&dir.join(chart)), "{chart} is missing or not a PNG");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
