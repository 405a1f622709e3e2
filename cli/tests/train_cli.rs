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

/// The overall test accuracy `kiln train` prints for `images` test images, in %.
fn test_accuracy(out: &str, images: usize) -> f64 {
    let prefix = format!("Accuracy of the network on the {images} test images: ");
    out.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|l| l.split(" %").next()?.parse().ok())
        .unwrap_or_else(|| panic!("no accuracy line in {out}"))
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

/// A folder of grey PNGs trains a 1-channel model: the images decode to one
/// channel (the RGB decoding the folder had before gave `[N, 3, H, W]`
/// batches the model refused), normalised and augmented from the command
/// line, and the two classes (bright left half or bright right half) are
/// told apart on the test split.
#[test]
fn a_grey_image_folder_trains_a_one_channel_model() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for (split, count) in [("train", 48), ("test", 16)] {
        for (class, bright_left) in [("left", true), ("right", false)] {
            let dir = d.join("data").join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..count {
                let img = image::GrayImage::from_fn(8, 8, |x, y| {
                    let lit = (x < 4) == bright_left;
                    let noise = ((x * 7 + y * 13 + i * 5) % 23) as u8;
                    image::Luma([if lit { 200 + noise } else { 30 + noise }])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    let model = d.join("digits.net");
    std::fs::write(
        &model,
        "struct Grey { conv: Conv2d(1, 4, 3, padding = 1), pool: MaxPool2d(2), fc: Linear(4 * 4 * 4, 2) }
         fn forward(x: [N, 1, 8, 8]) -> [N, 2] { fc(pool(relu(conv(x))).flatten(1)) }",
    )
    .unwrap();
    let model = model.display().to_string();
    let args = [
        "train",
        &model,
        "--data",
        "data",
        "--epochs",
        "4",
        "--batch",
        "8",
        "--lr",
        "0.05",
        "--quiet",
        "--normalize",
        "0.5,0.25",
        "--augment",
        "flip=0,crop=1",
        "--schedule",
        "cosine",
        "--label-smoothing",
        "0.05",
    ];
    let o = kiln(&args, d);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("(decoded to grey)"), "{out}");
    let accuracy = test_accuracy(&out, 32);
    assert!(accuracy >= 90.0, "accuracy {accuracy} % on two well-separated classes\n{out}");

    // Normalisation that does not fit the model, and bad augmentation.
    for (flag, value, needle) in [
        ("--normalize", "0.5,0.5,0.5,0.2,0.2,0.2", "--normalize gives 3 channels, but model Grey takes 1"),
        ("--normalize", "0.5,0", "standard deviations must be positive"),
        ("--augment", "rotate=3", "expected `crop=PAD`, `flip` or `flip=P`"),
    ] {
        let o = kiln(&["train", &model, "--data", "data", "--epochs", "1", "--quiet", flag, value], d);
        assert!(!o.status.success() && text(&o).contains(needle), "{flag} {value}: {}", text(&o));
    }
}

/// Tabular data: `train_x.npy` of shape (N, F) float32 features with
/// `train_y.npy` integer labels trains an MLP on `[N, F]` (before, a rank-2
/// array was refused as not an image), and it separates two classes whose
/// features differ in mean.
#[test]
fn a_feature_table_trains_an_mlp() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let data = d.join("table");
    std::fs::create_dir_all(&data).unwrap();
    let features = 6;
    for (split, n) in [("train", 200usize), ("test", 60)] {
        let mut x = Vec::with_capacity(n * features);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let label = (i % 2) as i64;
            for f in 0..features {
                // A deterministic spread around +-0.8 per class.
                let jitter = (((i * 31 + f * 17) % 29) as f32 / 29.0 - 0.5) * 1.2;
                x.push(if label == 1 { 0.8 } else { -0.8 } + jitter);
            }
            y.push(label);
        }
        let table = kiln::compiler::Tensor { shape: vec![n, features], data: x };
        kiln::runtime::npy::write_f32(&data.join(format!("{split}_x.npy")), &table).unwrap();
        npyz::to_file_1d(data.join(format!("{split}_y.npy")), y).unwrap();
    }
    let model = d.join("mlp.net");
    std::fs::write(
        &model,
        "struct Tab { fc1: Linear(6, 16), fc2: Linear(16, 2) } fn forward(x: [N, 6]) -> [N, 2] { fc2(relu(fc1(x))) }",
    )
    .unwrap();
    let model = model.display().to_string();
    let o = kiln(&["train", &model, "--data", "table", "--epochs", "3", "--batch", "16", "--lr", "0.05", "--quiet"], d);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("200 train images, 60 test images"), "{out}");
    let accuracy = test_accuracy(&out, 60);
    assert!(accuracy >= 95.0, "accuracy {accuracy} %\n{out}");
    let o = kiln(&["train", &model, "--data", "table", "--epochs", "1", "--quiet", "--augment", "flip"], d);
    assert!(!o.status.success() && text(&o).contains("--augment crops and flips images"), "{}", text(&o));
}
