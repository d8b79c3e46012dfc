//! A catalog of bad input. Each case runs the real binary on files written
//! here and checks that it exits non-zero with one message that names the
//! file, line or value and the fix. An unknown key and CRLF files must
//! instead let the run succeed. No case may panic.

mod common;

use common::{assert_fails, assert_succeeds, seen_of, stderr, stdout, top1, write_set, SetOptions, Workspace};
use std::fs;

const WEIGHTS: &str = "backup/t.weights";
const QWEIGHTS: &str = "backup/t.qat.int8.qweights";
const QPARAMS: &str = "backup/t.qat.int8.qparams";

/// Bytes of `backup/t.weights` for the default set: a 20-byte header and
/// 2 biases + 2x16 weights of 4 bytes.
const WEIGHTS_BYTES: usize = 20 + 4 * (2 + 32);

/// Creates a workspace with the default set, trained weights and the QAT files.
fn trained(name: &str) -> Workspace {
    let ws = Workspace::new(name);
    write_set(&ws, &SetOptions::default());
    assert_succeeds(&ws.run(&["classifier", "train_randseq", "t.data", "t.cfg"]));
    assert_succeeds(&ws.run(&["classifier", "qat_int8", "t.data", "t.cfg", WEIGHTS]));
    assert_eq!(ws.read(WEIGHTS).len(), WEIGHTS_BYTES);
    ws
}

fn valid(ws: &Workspace, weights: &str) -> std::process::Output {
    ws.run(&["classifier", "valid", "t.data", "t.cfg", weights])
}

fn valid_int8(ws: &Workspace, qweights: &str, qparams: &str) -> std::process::Output {
    ws.run(&["classifier", "valid_int8", "t.data", "t.cfg", qweights, qparams])
}

fn train(ws: &Workspace, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["classifier", "train_randseq", "t.data", "t.cfg"];
    args.extend_from_slice(extra);
    ws.run(&args)
}

#[test]
fn good_set_trains_and_validates() {
    let ws = trained("good");
    let out = valid(&ws, WEIGHTS);
    assert_succeeds(&out);
    assert!(top1(&out) >= 0.75, "{}", stdout(&out));
    assert_succeeds(&valid_int8(&ws, QWEIGHTS, QPARAMS));
}

#[test]
fn missing_input_files() {
    let ws = trained("missing");
    assert_fails(&ws.run(&["classifier", "valid", "nope.data", "t.cfg", WEIGHTS]), &["nope.data", "cannot read data file"]);
    assert_fails(&ws.run(&["classifier", "valid", "t.data", "nope.cfg", WEIGHTS]), &["nope.cfg", "cannot read cfg file"]);
    assert_fails(&valid(&ws, "backup/nope.weights"), &["backup/nope.weights", "check the path"]);
    assert_fails(&valid_int8(&ws, "backup/nope.qweights", QPARAMS), &["backup/nope.qweights", "check the path"]);
    assert_fails(&valid_int8(&ws, QWEIGHTS, "backup/nope.qparams"), &["backup/nope.qparams", "check the path"]);
    assert_fails(&ws.run(&["classifier", "train_randseq", "t.data", "t.cfg", "backup/nope.weights"]), &["backup/nope.weights"]);

    fs::remove_file(ws.path("labels.txt")).unwrap();
    assert_fails(&valid(&ws, WEIGHTS), &["labels.txt", "cannot read labels file"]);
}

#[test]
fn missing_lists() {
    let ws = trained("missing-lists");
    fs::rename(ws.path("valid.list"), ws.path("valid.moved")).unwrap();
    assert_fails(&valid(&ws, WEIGHTS), &["valid.list", "cannot read image list file"]);
    fs::remove_file(ws.path("train.list")).unwrap();
    assert_fails(&train(&ws, &[]), &["train.list", "cannot read image list file"]);
}

#[test]
fn data_file_without_list_key() {
    let ws = trained("no-valid-key");
    ws.write("t.data", "classes = 2\ntrain = train.list\nlabels = labels.txt\nbackup = backup\n");
    assert_fails(&valid(&ws, WEIGHTS), &["t.data", "'valid' is missing"]);
}

#[test]
fn weights_of_wrong_size() {
    let ws = trained("weights-size");
    let good = ws.read(WEIGHTS);
    ws.write("backup/short.weights", &good[..good.len() - 4]);
    assert_fails(&valid(&ws, "backup/short.weights"), &["backup/short.weights", "expected 156 bytes", "found 152", "truncated"]);
    let mut long = good.clone();
    long.extend_from_slice(&[0; 8]);
    ws.write("backup/long.weights", &long);
    assert_fails(&valid(&ws, "backup/long.weights"), &["backup/long.weights", "expected 156 bytes", "found 164", "extra bytes"]);
    ws.write("backup/tiny.weights", &good[..10]);
    assert_fails(&valid(&ws, "backup/tiny.weights"), &["backup/tiny.weights", "too short for a Darknet header"]);
    ws.write("backup/empty.weights", b"");
    assert_fails(&valid(&ws, "backup/empty.weights"), &["backup/empty.weights", "0 bytes"]);
}

#[test]
fn weights_with_nan_are_rejected() {
    let ws = trained("weights-nan");
    let mut bytes = ws.read(WEIGHTS);
    bytes[24..28].copy_from_slice(&f32::NAN.to_le_bytes());
    ws.write("backup/nan.weights", &bytes);
    assert_fails(&valid(&ws, "backup/nan.weights"), &["backup/nan.weights", "NaN or infinite"]);
}

#[test]
fn weights_made_for_another_cfg() {
    let ws = trained("other-cfg");
    let options = SetOptions { hidden: 3, ..SetOptions::default() };
    ws.write("other.cfg", common::cfg_text(&options));
    let out = ws.run(&["classifier", "valid", "t.data", "other.cfg", WEIGHTS]);
    assert_fails(&out, &[WEIGHTS, "other.cfg", "expected 256 bytes", "found 156"]);
}

#[test]
fn quantized_files_of_wrong_size() {
    let ws = trained("qfiles-size");
    let qweights = ws.read(QWEIGHTS);
    assert_eq!(qweights.len(), 40);
    ws.write("backup/short.qweights", &qweights[..39]);
    assert_fails(&valid_int8(&ws, "backup/short.qweights", QPARAMS), &["backup/short.qweights", "expected 40 bytes", "found 39"]);
    let mut long = qweights.clone();
    long.push(0);
    ws.write("backup/long.qweights", &long);
    assert_fails(&valid_int8(&ws, "backup/long.qweights", QPARAMS), &["backup/long.qweights", "expected 40 bytes", "found 41"]);

    let qparams = ws.read(QPARAMS);
    assert_eq!(qparams.len(), 15);
    ws.write("backup/short.qparams", &qparams[..14]);
    assert_fails(&valid_int8(&ws, QWEIGHTS, "backup/short.qparams"), &["backup/short.qparams", "expected 15 bytes", "found 14"]);
    let mut long = qparams.clone();
    long.extend_from_slice(&qparams);
    ws.write("backup/long.qparams", &long);
    assert_fails(&valid_int8(&ws, QWEIGHTS, "backup/long.qparams"), &["backup/long.qparams", "expected 15 bytes", "found 30"]);

    let mut zero_scale = qparams.clone();
    zero_scale[0..4].copy_from_slice(&0f32.to_le_bytes());
    ws.write("backup/zero.qparams", &zero_scale);
    assert_fails(&valid_int8(&ws, QWEIGHTS, "backup/zero.qparams"), &["backup/zero.qparams", "S1 = 0"]);
}

#[test]
fn file_of_wrong_kind_in_slot() {
    let ws = trained("wrong-kind");
    assert_fails(&valid(&ws, QWEIGHTS), &["WEIGHTS of valid", QWEIGHTS]);
    assert_fails(&valid_int8(&ws, WEIGHTS, QPARAMS), &["QWEIGHTS of valid_int8", WEIGHTS]);
    assert_fails(&valid_int8(&ws, QPARAMS, QWEIGHTS), &["QWEIGHTS of valid_int8", QPARAMS]);
    assert_fails(&ws.run(&["classifier", "qat_int8", "t.data", "t.cfg", QWEIGHTS]), &["WEIGHTS of qat_int8", QWEIGHTS]);
    assert_fails(&ws.run(&["classifier", "qat_int8", "t.data", "t.cfg", WEIGHTS, QPARAMS]), &["QWEIGHTS", WEIGHTS]);
    assert_fails(&train(&ws, &[QPARAMS]), &["WEIGHTS", QPARAMS]);
}

#[test]
fn backup_file_is_accepted_as_weights() {
    let ws = trained("backup-kind");
    fs::copy(ws.path(WEIGHTS), ws.path("backup/t.backup")).unwrap();
    assert_succeeds(&valid(&ws, "backup/t.backup"));
}

#[test]
fn cfg_errors_name_file_and_line() {
    let ws = trained("cfg-errors");
    let base = common::cfg_text(&SetOptions::default());

    ws.write("bad.cfg", base.replace("[softmax]", "[yolo]"));
    let out = ws.run(&["classifier", "valid", "t.data", "bad.cfg", WEIGHTS]);
    assert_fails(&out, &["bad.cfg:16", "unknown section [yolo]"]);

    ws.write("bad.cfg", base.replace("learning_rate=0.1", "learning_rate=fast"));
    let out = ws.run(&["classifier", "valid", "t.data", "bad.cfg", WEIGHTS]);
    assert_fails(&out, &["bad.cfg:8", "'fast'", "learning_rate", "a finite number"]);

    ws.write("bad.cfg", base.replace("learning_rate=0.1", "learning_rate=nan"));
    let out = ws.run(&["classifier", "valid", "t.data", "bad.cfg", WEIGHTS]);
    assert_fails(&out, &["bad.cfg:8", "'nan'"]);

    ws.write("bad.cfg", base.replace("[net]\n", ""));
    let out = ws.run(&["classifier", "valid", "t.data", "bad.cfg", WEIGHTS]);
    assert_fails(&out, &["bad.cfg:1", "before any [section]"]);

    ws.write("bad.cfg", base.replace("[net]\nbatch=4\nsubdivisions=1\nheight=4\nwidth=4\nchannels=1\nmax_batches=10\nlearning_rate=0.1\nmomentum=0.9\ndecay=0.0005\n", ""));
    let out = ws.run(&["classifier", "valid", "t.data", "bad.cfg", WEIGHTS]);
    assert_fails(&out, &["bad.cfg", "expected [net]"]);

    ws.write("bad.cfg", base.replace("batch=4", "batch=0"));
    let out = ws.run(&["classifier", "train_randseq", "t.data", "bad.cfg"]);
    assert_fails(&out, &["bad.cfg:2", "'batch' must be at least 1"]);

    ws.write("bad.cfg", base.replace("height=4", "height=99999999999").replace("width=4", "width=99999999999"));
    let out = ws.run(&["classifier", "train_randseq", "t.data", "bad.cfg"]);
    assert_fails(&out, &["bad.cfg", "too large"]);

    ws.write("bad.cfg", base.replace("output=2", "output=4000000000000"));
    let out = ws.run(&["classifier", "train_randseq", "t.data", "bad.cfg"]);
    assert_fails(&out, &["bad.cfg", "output="]);

    ws.write("bad.cfg", [0xff, 0xfe, 0x00, 0x5b]);
    let out = ws.run(&["classifier", "valid", "t.data", "bad.cfg", WEIGHTS]);
    assert_fails(&out, &["bad.cfg", "not UTF-8"]);
}

#[test]
fn unknown_key_warns_and_run_succeeds() {
    let ws = trained("unknown-key");
    ws.write("t.cfg", common::cfg_text(&SetOptions::default()).replace("momentum=0.9", "momentum=0.9\nmomentun=0.8"));
    let out = valid(&ws, WEIGHTS);
    assert_succeeds(&out);
    let err = stderr(&out);
    assert!(err.contains("warning: t.cfg:10: key 'momentun' is not used by [net]"), "{err}");
    ws.write("t.data", String::from_utf8(ws.read("t.data")).unwrap() + "lables = x\n");
    let out = valid(&ws, WEIGHTS);
    assert_succeeds(&out);
    assert!(stderr(&out).contains("key 'lables' is not used"), "{}", stderr(&out));

    // Training repeats the warnings after its per-batch lines.
    fs::rename(ws.path(WEIGHTS), ws.path("start.weights")).unwrap();
    let out = train(&ws, &["start.weights", "--clear"]);
    assert_succeeds(&out);
    let err = stderr(&out);
    let tail = &err[err.find("Saved ").unwrap_or_else(|| panic!("no Saved line:\n{err}"))..];
    assert!(tail.contains("2 warning(s) about its files, repeated here"), "{err}");
    assert!(tail.contains("key 'momentun' is not used"), "{err}");
}

#[test]
fn data_file_errors() {
    let ws = trained("data-errors");
    ws.write("bad.data", "classes = two\n");
    assert_fails(&ws.run(&["classifier", "valid", "bad.data", "t.cfg", WEIGHTS]), &["bad.data:1", "'two'"]);
    ws.write("bad.data", "classes = 3\nvalid = valid.list\nlabels = labels.txt\n");
    assert_fails(&ws.run(&["classifier", "valid", "bad.data", "t.cfg", WEIGHTS]), &["labels.txt", "has 2 labels", "classes = 3"]);
    ws.write("bad.data", "classes = 2\nvalid = \nlabels = labels.txt\n");
    assert_fails(&ws.run(&["classifier", "valid", "bad.data", "t.cfg", WEIGHTS]), &["bad.data:2", "'valid' has no value"]);
}

#[test]
fn empty_list() {
    let ws = trained("empty-list");
    ws.write("valid.list", "\n\r\n");
    assert_fails(&valid(&ws, WEIGHTS), &["valid.list", "is empty"]);
    ws.write("train.list", "");
    assert_fails(&train(&ws, &[]), &["train.list", "is empty"]);
}

#[test]
fn unreadable_entries_in_validation_are_each_reported() {
    let ws = trained("unreadable-valid");
    let mut list = String::from_utf8(ws.read("valid.list")).unwrap();
    list.push_str("images/valid/missing_alpha.png\nimages/valid/text_bravo.png\n");
    ws.write("images/valid/text_bravo.png", "this is not an image");
    ws.write("valid.list", list);
    let out = valid(&ws, WEIGHTS);
    assert_fails(&out, &["2 listed images could not be read", "other 8"]);
    let err = stderr(&out);
    assert!(err.contains("missing_alpha.png"), "{err}");
    assert!(err.contains("text_bravo.png"), "{err}");
    assert!(stdout(&out).contains("8: top 1:"), "the summary line is missing:\n{}", stdout(&out));
}

#[test]
fn unreadable_entry_stops_training_unless_skipped() {
    let ws = trained("unreadable-train");
    let mut list = String::from_utf8(ws.read("train.list")).unwrap();
    list.push_str("images/train/text_alpha.png\n");
    ws.write("images/train/text_alpha.png", "not a png");
    ws.write("train.list", list);
    fs::remove_file(ws.path(WEIGHTS)).unwrap();
    assert_fails(&train(&ws, &[]), &["text_alpha.png", "--skip-bad-images"]);
    assert!(!ws.exists(WEIGHTS));

    let out = train(&ws, &["--skip-bad-images"]);
    assert_succeeds(&out);
    assert!(stderr(&out).contains("text_alpha.png"), "{}", stderr(&out));
    assert!(ws.exists(WEIGHTS));
}

#[test]
fn label_matching_nothing_or_tying() {
    let ws = trained("labels");
    fs::copy(ws.path("images/valid/0_alpha.png"), ws.path("images/valid/0_echo.png")).unwrap();
    ws.write("valid.list", "images/valid/0_echo.png\n");
    assert_fails(&valid(&ws, WEIGHTS), &["0_echo.png", "no label", "alpha, bravo"]);

    fs::copy(ws.path("images/valid/0_alpha.png"), ws.path("images/valid/0_alphabravo.png")).unwrap();
    ws.write("valid.list", "images/valid/0_alphabravo.png\n");
    assert_fails(&valid(&ws, WEIGHTS), &["0_alphabravo.png", "equally", "alpha, bravo"]);
}

#[test]
fn crlf_files_work() {
    let ws = Workspace::new("crlf");
    write_set(&ws, &SetOptions::default());
    for name in ["t.data", "t.cfg", "labels.txt", "train.list", "valid.list"] {
        let text = String::from_utf8(ws.read(name)).unwrap();
        ws.write(name, text.replace('\n', "\r\n"));
    }
    let out = train(&ws, &[]);
    assert_succeeds(&out);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    let out = valid(&ws, WEIGHTS);
    assert_succeeds(&out);
    assert!(top1(&out) >= 0.75, "{}", stdout(&out));
}

#[test]
fn diverging_loss_keeps_last_good_weights() {
    let ws = Workspace::new("diverge");
    write_set(&ws, &SetOptions { learning_rate: 1e38, max_batches: 50, ..SetOptions::default() });
    let out = train(&ws, &[]);
    assert_fails(&out, &["batch", "NaN or infinite", "Lower learning_rate", "backup/t.backup"]);
    assert!(!ws.exists(WEIGHTS), "a diverged run must not write the final weights");
    assert_eq!(ws.read("backup/t.backup").len(), WEIGHTS_BYTES);
    assert_succeeds(&valid(&ws, "backup/t.backup"));
}

#[test]
fn run_never_overwrites_its_input() {
    let ws = trained("overwrite");
    let before = ws.read(WEIGHTS);
    let out = train(&ws, &[WEIGHTS]);
    assert_fails(&out, &["refusing to write backup/t.weights", "change 'backup'"]);
    assert_eq!(ws.read(WEIGHTS), before);

    fs::copy(ws.path(WEIGHTS), ws.path("backup/t.qat.int8.weights")).unwrap();
    let out = ws.run(&["classifier", "qat_int8", "t.data", "t.cfg", "backup/t.qat.int8.weights"]);
    assert_fails(&out, &["refusing to write backup/t.qat.int8.weights"]);

    // The list file written where the output goes: backup = . and a list
    // named like the output.
    ws.write("t2.data", "classes = 2\ntrain = t.weights\nvalid = valid.list\nlabels = labels.txt\nbackup = .\n");
    fs::copy(ws.path("train.list"), ws.path("t.weights")).unwrap();
    let out = ws.run(&["classifier", "train_randseq", "t2.data", "t.cfg"]);
    assert_fails(&out, &["refusing to write ./t.weights"]);
}

#[test]
fn nothing_left_to_train() {
    let ws = trained("nothing-left");
    fs::copy(ws.path(WEIGHTS), ws.path("start.weights")).unwrap();
    let out = train(&ws, &["start.weights"]);
    assert_fails(&out, &["nothing to train", "seen 40 images", "raise max_batches", "--clear"]);
}

#[test]
fn darknet_clear_restarts_the_schedule() {
    let ws = trained("clear");
    fs::copy(ws.path(WEIGHTS), ws.path("start.weights")).unwrap();
    // Darknet's spelling, with a GPU flag that this CPU program ignores.
    let out = train(&ws, &["start.weights", "-clear", "-gpus", "0"]);
    assert_succeeds(&out);
    let err = stderr(&out);
    assert!(err.contains("ignoring Darknet's -gpus 0"), "{err}");
    assert!(err.contains("--clear: training starts at batch 1"), "{err}");
    // The header's seen counts only the new run.
    assert_eq!(seen_of(&ws.path(WEIGHTS)), 40, "max_batches batches of the new run");
    assert_ne!(ws.read(WEIGHTS), ws.read("start.weights"), "the weights trained further");

    let out = ws.run(&["classifier", "train_randseq", "t.data", "t.cfg", "--clear"]);
    assert_fails(&out, &["--clear restarts the schedule of the WEIGHTS", "pass WEIGHTS"]);
}

#[test]
fn classes_differ_from_cfg_outputs() {
    let ws = trained("classes");
    ws.write("t.cfg", common::cfg_text(&SetOptions { classes: 3, ..SetOptions::default() }));
    assert_fails(&valid(&ws, WEIGHTS), &["t.cfg ends with 3 outputs", "classes = 2"]);
}

#[test]
fn gray_jpeg_images_load_as_rgb() {
    let ws = Workspace::new("jpeg");
    write_set(&ws, &SetOptions::default());
    for list in ["train.list", "valid.list"] {
        let mut jpeg_paths = Vec::new();
        for png in String::from_utf8(ws.read(list)).unwrap().lines() {
            let jpeg = png.replace(".png", ".jpg");
            image::open(ws.path(png)).unwrap().save(ws.path(&jpeg)).unwrap();
            jpeg_paths.push(jpeg);
        }
        ws.write(list, jpeg_paths.join("\n"));
    }
    ws.write("t.cfg", common::cfg_text(&SetOptions::default()).replace("channels=1", "channels=3"));
    assert_succeeds(&train(&ws, &[]));
    assert_eq!(ws.read(WEIGHTS).len(), 20 + 4 * (2 + 2 * 48));
    let out = valid(&ws, WEIGHTS);
    assert_succeeds(&out);
    assert!(top1(&out) >= 0.75, "{}", stdout(&out));
}

#[test]
fn invalid_tuning_variables_are_errors() {
    let ws = trained("environment");
    let cases = [
        ("DARKNET_GEMM_I8_THREADS", "abc", "expected a positive integer or auto"),
        ("DARKNET_GEMM_I8_THREADS", "0", "expected a positive integer or auto"),
        ("DARKNET_GEMM_I8", "fast", "expected scalar, avx2 or vnni"),
        ("DARKNET_CACHE_MB", "lots", "expected a whole number of MiB"),
    ];
    for (name, value, message) in cases {
        let out = ws
            .command(&["classifier", "valid_int8", "t.data", "t.cfg", "backup/t.qat.int8.qweights", "backup/t.qat.int8.qparams"])
            .env(name, value)
            .output()
            .unwrap();
        assert_fails(&out, &[name, value, message]);
    }
    let out = ws
        .command(&["classifier", "valid_int8", "t.data", "t.cfg", "backup/t.qat.int8.qweights", "backup/t.qat.int8.qparams"])
        .env("DARKNET_GEMM_I8_THREADS", "2")
        .env("DARKNET_GEMM_I8", "scalar")
        .output()
        .unwrap();
    assert_succeeds(&out);
}

#[test]
fn fp32_valid_report_names_valid_int8() {
    let ws = trained("report-fp32");
    let out = ws.run(&["classifier", "valid", "t.data", "t.cfg", WEIGHTS, "--report"]);
    assert_fails(&out, &["--report applies to INT8 validation", "valid_int8 DATA CFG QWEIGHTS QPARAMS --report"]);
}
