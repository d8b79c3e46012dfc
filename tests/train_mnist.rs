//! End to end on real digits: import 1,000 training images of mnist10k,
//! train a small network with the real binary, validate it in FP32, run QAT,
//! and validate the INT8 files in both command forms.

mod common;

use common::{darknet_in, mnist_folder, top1};

const CFG: &str = "[net]
batch=32
subdivisions=1
height=28
width=28
channels=3
exposure=.75
max_batches=250
policy=constant
learning_rate=0.05
momentum=0.9
decay=0.0005
qat_init_step=1
qat_end_epoch=1
ema_smooth=0.99

[connected]
output=64
activation=relu

[connected]
output=10
activation=linear

[softmax]
";

#[test]
fn small_mlp_trains_and_quantizes() {
    let Some(dir) = mnist_folder("train", 1000, "small.cfg", CFG) else { return };

    darknet_in(&dir, &["classifier", "train_randseq", "mnist.data", "small.cfg"]);
    let weights = dir.join("backup/small.weights");
    assert_eq!(std::fs::metadata(&weights).unwrap().len(), 20 + 4 * (64 + 64 * 2352 + 10 + 10 * 64));
    let fp32 = top1(&darknet_in(&dir, &["classifier", "valid", "mnist.data", "small.cfg", "backup/small.weights"]));
    assert!(fp32 > 0.85, "held-out top-1 {fp32}");

    darknet_in(&dir, &["classifier", "qat_int8", "mnist.data", "small.cfg", "backup/small.weights"]);
    let after_qat = top1(&darknet_in(&dir, &["classifier", "valid", "mnist.data", "small.cfg", "backup/small.qat.int8.weights"]));
    let int8 = top1(&darknet_in(
        &dir,
        &["classifier", "qat_int8", "mnist.data", "small.cfg", "backup/small.qat.int8.qweights", "backup/small.qat.int8.qparams"],
    ));
    let alias = top1(&darknet_in(
        &dir,
        &["classifier", "valid_int8", "mnist.data", "small.cfg", "backup/small.qat.int8.qweights", "backup/small.qat.int8.qparams"],
    ));
    assert_eq!(int8, alias);
    assert!(after_qat > 0.85, "top-1 after QAT {after_qat}");
    assert!((int8 - after_qat).abs() < 0.01, "INT8 {int8} vs FP32 after QAT {after_qat}");

    // The run log is JSON Lines.
    let log = std::fs::read_to_string(dir.join("log/small.json")).unwrap();
    for line in log.lines() {
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "not JSON: {line}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
