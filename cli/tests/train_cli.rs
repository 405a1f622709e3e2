//! `kiln train` and `kiln eval` end to end on the generated data set, and
//! their errors for bad arguments and bad files.

use std::path::Path;
use std::process::{Command, Output};

fn kiln(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).current_dir(dir).output().expect("kiln runs")
}

fn lenet() -> String {
    format!("{}/../examples/lenet.net", env!("CARGO_MANIFEST_DIR"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn train_resume_and_eval_on_generated_data() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let net = lenet();
    let common = ["--synthetic-train", "200", "--synthetic-test", "100", "--batch", "8", "--lr", "0.01", "--quiet"];
    let mut args =
        vec!["train", net.as_str(), "--epochs", "1", "--checkpoint", "ck.safetensors", "--metrics", "out/m.jsonl"];
    args.extend(common);
    let o = kiln(&args, d);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("no --data given"), "{out}");
    assert!(out.contains("Accuracy for class"), "{out}");
    assert!(d.join("ck.safetensors").is_file() && d.join("ck.svg").is_file());

    // Resume to 2 epochs: one more metrics line.
    let mut args =
        vec!["train", net.as_str(), "--epochs", "2", "--resume", "ck.safetensors", "--metrics", "out/m.jsonl"];
    args.extend(common);
    let o = kiln(&args, d);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resuming"), "{}", text(&o));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(d.join("out/m.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["epoch"], 2);
    for key in ["epoch", "train_loss", "test_loss", "test_accuracy", "per_class_accuracy", "seconds", "images_per_s"] {
        assert!(lines[1].get(key).is_some(), "{key} missing: {}", lines[1]);
    }
    assert_eq!(lines[1]["per_class_accuracy"].as_array().unwrap().len(), 10);

    let o = kiln(&["eval", &net, "--weights", "ck.safetensors", "--quiet"], d);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Accuracy of the network on the 1000 test images"), "{}", text(&o));
}

#[test]
fn bad_arguments_and_files_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let net = lenet();
    std::fs::write(d.join("junk.safetensors"), b"this is not a checkpoint").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["train", &net, "--data", "no/such/dir"], "not found"),
        (vec!["train", &net, "--batch", "0"], "batch"),
        (vec!["train", &net, "--lr=-1"], "--lr must be a positive number"),
        (vec!["train", &net, "--resume", "junk.safetensors"], "junk.safetensors"),
        (vec!["train", &net, "--resume", "missing.safetensors"], "missing.safetensors"),
        (vec!["train", "missing.net"], "missing.net"),
        (vec!["eval", &net, "--weights", "junk.safetensors"], "not a valid safetensors file"),
        (vec!["eval", &net], "--weights"),
        (vec!["train", &net, "--schedule", "linear"], "expected `constant`, `cosine[:MIN_LR]`"),
        (vec!["train", &net, "--schedule", "onecycle:1.5"], "rising fraction must be in (0, 1)"),
        (vec!["train", &net, "--schedule", "step:0:0.1"], "positive integer"),
        (vec!["train", &net, "--label-smoothing", "2"], "label smoothing must be in [0, 1]"),
    ];
    for (args, needle) in cases {
        let o = kiln(&args, d);
        let out = text(&o);
        assert!(!o.status.success(), "{args:?} succeeded: {out}");
        assert!(!out.contains("panicked"), "{args:?} panicked: {out}");
        assert!(out.contains(needle), "{args:?}: `{out}` does not mention `{needle}`");
    }
}
