//! `classifier predict` on real digits from data/mnist.zip with the shipped
//! weights, in FP32 and (after a short QAT) in INT8, from an argument and
//! from standard input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_darknet"))
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Unpacks three test digits of data/mnist.zip into a fresh folder, with a
/// `.data` file and the MNIST labels. Returns the folder and the image names.
fn workspace(name: &str) -> (PathBuf, Vec<String>) {
    let dir = std::env::temp_dir().join(format!("darknet-predict-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let names = ["test/0_four.jpg", "test/1000_six.jpg", "test/1003_seven.jpg"];
    let mut args = vec!["-o", "-q", "-j"];
    let zip = format!("{ROOT}/data/mnist.zip");
    args.push(&zip);
    let members: Vec<String> = names.iter().map(|n| format!("*{n}")).collect();
    let status = Command::new("unzip").args(&args).args(&members).arg("-d").arg(&dir).status().expect("unzip is needed (see the README)");
    assert!(status.success(), "unzip failed for {members:?}");
    std::fs::create_dir_all(dir.join("backup")).unwrap();
    std::fs::write(dir.join("labels.txt"), "zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n").unwrap();
    std::fs::write(dir.join("mnist.data"), "classes=10\ntrain=none.list\nvalid=none.list\nlabels=labels.txt\nbackup=backup\ntop=2\n").unwrap();
    let images = names.iter().map(|n| n.rsplit('/').next().unwrap().to_string()).collect();
    (dir, images)
}

/// Returns the `NN.NN%: label` lines as (percent, label) pairs.
fn predictions(stdout: &str) -> Vec<(f64, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let (percent, label) = line.split_once("%: ")?;
            Some((percent.trim().parse().ok()?, label.to_string()))
        })
        .collect()
}

#[test]
fn predict_fp32_names_top_k() {
    let (dir, images) = workspace("fp32");
    let weights = format!("{ROOT}/backup/mnist_fc4.weights");
    let cfg = format!("{ROOT}/cfg/mnist_fc4.cfg");
    let out = run(&dir, &["classifier", "predict", "mnist.data", &cfg, &weights, &images[0]], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("0_four.jpg: Predicted in "), "{stdout}");
    let top = predictions(&stdout);
    assert_eq!(top.len(), 2, "top=2 in the .data file: {stdout}");
    assert_eq!(top[0].1, "four");
    assert!(top[0].0 >= top[1].0, "sorted by probability: {stdout}");
    assert!(top[0].0 > 50.0, "{stdout}");
    assert!(top[0].0 <= 100.0, "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn predict_reads_paths_from_stdin() {
    let (dir, images) = workspace("stdin");
    let weights = format!("{ROOT}/backup/mnist_fc4.weights");
    let cfg = format!("{ROOT}/cfg/mnist_fc4.cfg");
    let input = format!("{}\n\n{}\n", images[1], images[2]);
    let out = run(&dir, &["classifier", "predict", "mnist.data", &cfg, &weights], Some(&input));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let top = predictions(&stdout);
    assert_eq!(top.len(), 4, "two images, two lines each: {stdout}");
    assert_eq!(top[0].1, "six");
    assert_eq!(top[2].1, "seven");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn predict_names_missing_image() {
    let (dir, images) = workspace("missing");
    let weights = format!("{ROOT}/backup/mnist_fc4.weights");
    let cfg = format!("{ROOT}/cfg/mnist_fc4.cfg");
    let out = run(&dir, &["classifier", "predict", "mnist.data", &cfg, &weights, "no_such.jpg"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no_such.jpg"), "{stderr}");

    let input = format!("no_such.jpg\n{}\n", images[0]);
    let out = run(&dir, &["classifier", "predict", "mnist.data", &cfg, &weights], Some(&input));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a failed image fails the command");
    assert!(stderr.contains("no_such.jpg"), "{stderr}");
    assert_eq!(predictions(&String::from_utf8_lossy(&out.stdout)).len(), 2, "the readable image is still predicted");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn predict_int8_names_top_k() {
    let (dir, images) = workspace("int8");
    let cfg = format!("{ROOT}/cfg/mnist_fc4.cfg");
    // A one-batch QAT on the three digits gives files of the right shape.
    std::fs::write(dir.join("train.list"), images.join("\n")).unwrap();
    let data = std::fs::read_to_string(dir.join("mnist.data")).unwrap().replace("train=none.list", "train=train.list");
    std::fs::write(dir.join("mnist.data"), data).unwrap();
    let weights = format!("{ROOT}/backup/mnist_fc4.weights");
    let qat = run(&dir, &["classifier", "qat_int8", "mnist.data", &cfg, &weights], None);
    assert!(qat.status.success(), "{}", String::from_utf8_lossy(&qat.stderr));

    let out = run(
        &dir,
        &["classifier", "predict", "mnist.data", &cfg, "backup/mnist_fc4.qat.int8.qweights", "backup/mnist_fc4.qat.int8.qparams", &images[0]],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let top = predictions(&stdout);
    assert_eq!(top.len(), 2, "{stdout}");
    assert_eq!(top[0].1, "four");

    let out = run(&dir, &["classifier", "predict", "mnist.data", &cfg, "backup/mnist_fc4.qat.int8.qweights", &images[0]], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(".qparams"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
