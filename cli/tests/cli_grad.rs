//! `kiln grad` and `kiln inspect` end to end: the CLI binary against PyTorch's
//! reference tensors, against the interpreter and finite differences on
//! generated data, and on bad input.

use kiln::compiler::frontend::compile_str;
use kiln::compiler::{Loss, NodeId, Sgd, Tensor, autodiff, interp};
use kiln::runtime::npy;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const LENET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/lenet.net");

fn kiln(args: &[&str]) -> Output {
    Command::new(KILN).args(args).output().expect("the kiln binary runs")
}

fn ok(out: &Output) {
    assert!(out.status.success(), "kiln failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

fn load(path: &Path) -> Tensor {
    npy::read_f32(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Largest |a - b| and the largest |b|.
fn max_diff(a: &Tensor, b: &Tensor) -> (f32, f32) {
    assert_eq!(a.shape, b.shape, "shapes differ");
    let diff = a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    let scale = b.data.iter().map(|y| y.abs()).fold(0.0, f32::max);
    (diff, scale)
}

const KEYS: [&str; 10] = [
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
    "fc3.weight",
    "fc3.bias",
];

#[test]
fn grad_reproduces_pytorch_on_the_lecture_net() {
    let parity = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/parity/lenet");
    if !parity.join("input.npy").exists() {
        eprintln!("skipped: {} is absent (it ships beside the project, not in it)", parity.display());
        return;
    }
    for backend in ["jit", "interp"] {
        let out = tempfile::tempdir().expect("tempdir");
        let p = |f: &str| parity.join(f).display().to_string();
        ok(&kiln(&[
            "grad",
            LENET,
            "--params",
            &parity.display().to_string(),
            "--input",
            &p("input.npy"),
            "--labels",
            &p("labels.npy"),
            "--loss",
            "cross-entropy",
            "--steps",
            "3",
            "--lr",
            "0.001",
            "--momentum",
            "0.9",
            "--backend",
            backend,
            "--out",
            &out.path().display().to_string(),
        ]));
        let mine = |f: &str| load(&out.path().join(f));
        let theirs = |f: &str| load(&parity.join(f));
        let rel = |a: &str, b: &str, tol: f32| {
            let (d, s) = max_diff(&mine(a), &theirs(b));
            assert!(d <= tol * s, "{backend}: {a} differs from PyTorch's {b} by {d} (relative {})", d / s);
        };
        let abs = |a: &str, b: &str, tol: f32| {
            let (d, _) = max_diff(&mine(a), &theirs(b));
            assert!(d <= tol, "{backend}: {a} differs from PyTorch's {b} by {d}");
        };
        rel("output.npy", "logits.npy", 1e-5);
        rel("loss.npy", "loss.npy", 1e-5);
        abs("grad_input.npy", "grad_input.npy", 1e-6);
        rel("losses.npy", "losses_3steps.npy", 1e-5);
        for key in KEYS {
            abs(&format!("grad_{key}.npy"), &format!("grad_{key}.npy"), 1e-6);
            abs(&format!("after_{key}.npy"), &format!("after3_{key}.npy"), 1e-6);
        }
    }
}

/// A small CNN exercising the same machinery as the lecture net.
const SMALL: &str = "
struct Small {
    conv: Conv2d(2, 3, 3, padding = 1),
    pool: MaxPool2d(2),
    fc: Linear(3 * 3 * 3, 4),
}
fn forward(x: [N, 2, 6, 6]) -> [N, 4] {
    let h = pool(tanh(conv(x)));
    fc(h.flatten(1))
}";

/// Deterministic pseudo-random values in [-1, 1) (SplitMix64), for test data only.
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

struct Generated {
    dir: tempfile::TempDir,
    model: PathBuf,
    params: HashMap<String, Tensor>,
    input: Tensor,
    labels: Tensor,
}

fn generate() -> Generated {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("small.net");
    std::fs::write(&model, SMALL).expect("write model");
    let graph = compile_str(SMALL).expect("valid").graph;
    let params_dir = dir.path().join("params");
    std::fs::create_dir(&params_dir).expect("mkdir");
    let mut params = HashMap::new();
    for (i, &p) in graph.params.iter().enumerate() {
        let node = graph.node(p);
        let shape = node.shape.at_batch(1);
        let t = Tensor { data: values(i as u64 + 1, shape.iter().product()).iter().map(|v| v * 0.5).collect(), shape };
        npy::write_f32(&params_dir.join(format!("{}.npy", node.name)), &t).expect("write param");
        params.insert(node.name.clone(), t);
    }
    let input = Tensor { shape: vec![5, 2, 6, 6], data: values(99, 5 * 72) };
    npy::write_f32(&dir.path().join("x.npy"), &input).expect("write input");
    let labels = Tensor { shape: vec![5], data: vec![0.0, 3.0, 1.0, 2.0, 3.0] };
    npy::write_f32(&dir.path().join("y.npy"), &labels).expect("write labels");
    Generated { dir, model, params, input, labels }
}

fn run_grad(g: &Generated, backend: &str, out: &str, extra: &[&str]) -> PathBuf {
    let d = |f: &str| g.dir.path().join(f).display().to_string();
    let out_dir = g.dir.path().join(out);
    let (params, x, y) = (d("params"), d("x.npy"), d("y.npy"));
    let mut args = vec![
        "grad",
        g.model.to_str().expect("utf-8 path"),
        "--params",
        &params,
        "--input",
        &x,
        "--labels",
        &y,
        "--loss",
        "cross-entropy",
        "--backend",
        backend,
        "--out",
    ];
    let out_s = out_dir.display().to_string();
    args.push(&out_s);
    args.extend_from_slice(extra);
    ok(&kiln(&args));
    out_dir
}

/// The loss at the given parameters, evaluated in-process by the interpreter.
fn loss_at(params: &HashMap<String, Tensor>, input: &Tensor, labels: &Tensor) -> f64 {
    let forward = compile_str(SMALL).expect("valid").graph;
    let graph = autodiff::derive_training(&forward, Loss::CrossEntropy, Sgd::default()).expect("differentiable");
    let t = graph.training.as_ref().expect("training");
    let mut feeds: HashMap<NodeId, Tensor> = HashMap::new();
    for &p in &graph.params {
        feeds.insert(p, params[&graph.node(p).name].clone());
    }
    feeds.insert(graph.inputs[0], input.clone());
    feeds.insert(t.target, labels.clone());
    let values = interp::evaluate(&graph, 5, &feeds).expect("evaluates");
    values[t.loss.index()].data[0] as f64
}

#[test]
fn grad_on_generated_data_matches_interpreter_finite_differences_and_sgd() {
    let g = generate();
    let jit = run_grad(&g, "jit", "jit", &["--steps", "1", "--lr", "0.1", "--momentum", "0.9"]);
    let reference = run_grad(&g, "interp", "interp", &[]);
    for f in ["output.npy", "loss.npy", "grad_input.npy", "grad_conv.weight.npy", "grad_fc.bias.npy"] {
        let (d, s) = max_diff(&load(&jit.join(f)), &load(&reference.join(f)));
        assert!(d <= 1e-5 * s.max(1.0), "{f}: jit and interpreter differ by {d}");
    }
    // Central differences of the loss agree with the written gradients.
    for key in ["conv.weight", "conv.bias", "fc.weight", "fc.bias"] {
        let grad = load(&jit.join(format!("grad_{key}.npy")));
        for i in [0, grad.numel() / 2, grad.numel() - 1] {
            let h = 1e-2f32;
            let mut plus = g.params.clone();
            plus.get_mut(key).expect("key").data[i] += h;
            let mut minus = g.params.clone();
            minus.get_mut(key).expect("key").data[i] -= h;
            let fd = (loss_at(&plus, &g.input, &g.labels) - loss_at(&minus, &g.input, &g.labels)) / (2.0 * h as f64);
            let analytic = grad.data[i] as f64;
            assert!((fd - analytic).abs() <= 2e-3 + 2e-2 * analytic.abs(), "{key}[{i}]: fd {fd} vs {analytic}");
        }
        // One SGD step from zero momentum: p - lr * g.
        let after = load(&jit.join(format!("after_{key}.npy")));
        for ((a, p), gr) in after.data.iter().zip(&g.params[key].data).zip(&grad.data) {
            assert!((a - (p - 0.1 * gr)).abs() <= 1e-6, "{key}: after {a} != {p} - 0.1 * {gr}");
        }
    }
}

fn fails_with(args: &[&str], fragments: &[&str]) {
    let out = kiln(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 1 for kiln's own errors, 2 for clap's usage errors; never a panic (101).
    assert!(matches!(out.status.code(), Some(1 | 2)), "expected a clean failure, got {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    for f in fragments {
        assert!(stderr.contains(f), "stderr lacks {f:?}:\n{stderr}");
    }
}

#[test]
fn grad_rejects_bad_files_with_clear_errors() {
    let g = generate();
    let d = |f: &str| g.dir.path().join(f).display().to_string();
    let base = |params: &str, input: &str| {
        vec![
            "grad".to_string(),
            g.model.display().to_string(),
            "--params".into(),
            params.into(),
            "--input".into(),
            input.into(),
            "--labels".into(),
            d("y.npy"),
            "--loss".into(),
            "cross-entropy".into(),
            "--out".into(),
            d("out"),
        ]
    };
    let run = |args: Vec<String>, fragments: &[&str]| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(&refs, fragments);
    };
    // A missing parameter file.
    let partial = g.dir.path().join("partial");
    std::fs::create_dir(&partial).expect("mkdir");
    std::fs::copy(g.dir.path().join("params/conv.weight.npy"), partial.join("conv.weight.npy")).expect("copy");
    run(base(&partial.display().to_string(), &d("x.npy")), &["missing parameter conv.bias"]);
    // A parameter of the wrong shape.
    std::fs::copy(g.dir.path().join("params/fc.bias.npy"), partial.join("conv.bias.npy")).expect("copy");
    for k in ["fc.weight", "fc.bias"] {
        std::fs::copy(g.dir.path().join(format!("params/{k}.npy")), partial.join(format!("{k}.npy"))).expect("copy");
    }
    run(base(&partial.display().to_string(), &d("x.npy")), &["conv.bias.npy", "shape [4]", "[3]"]);
    // Wrong dtype: labels where a float input is expected.
    run(base(&d("params"), &d("y.npy")).into_iter().collect(), &["y.npy", "the model's input `x` is [N, 2, 6, 6]"]);
    let ints = g.dir.path().join("ints.npy");
    npyz::to_file_1d(&ints, vec![1i64, 2, 3]).expect("write");
    run(base(&d("params"), &ints.display().to_string()), &["ints.npy", "dtype", "float32"]);
    // A truncated file.
    let bytes = std::fs::read(g.dir.path().join("x.npy")).expect("read");
    let cut = g.dir.path().join("cut.npy");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    run(base(&d("params"), &cut.display().to_string()), &["cut.npy", "not a valid .npy file"]);
    // Not a .npy file at all, and a missing one.
    run(base(&d("params"), &g.model.display().to_string()), &["small.net", "not a valid .npy file"]);
    run(base(&d("params"), &d("nope.npy")), &["nope.npy"]);
    // A bad declaration is reported with its position.
    let bad = g.dir.path().join("bad.net");
    std::fs::write(&bad, SMALL.replace("Linear(3 * 3 * 3, 4)", "Linear(28, 4)")).expect("write");
    let mut args = base(&d("params"), &d("x.npy"));
    args[1] = bad.display().to_string();
    run(args, &["fc expects 28 input features but receives 27", "bad.net:5:"]);
    // A bad CLI argument.
    fails_with(&["inspect", LENET, "--batch", "0"], &["--batch"]);
    // Label smoothing outside [0, 1], or on a loss without labels.
    let mut args = base(&d("params"), &d("x.npy"));
    args.extend(["--label-smoothing".into(), "1.5".into()]);
    run(args, &["--label-smoothing must be in [0, 1], got 1.5"]);
    let mut args = base(&d("params"), &d("x.npy"));
    let at = args.iter().position(|a| a == "cross-entropy").expect("loss flag");
    args[at] = "mse".into();
    args.extend(["--label-smoothing".into(), "0.1".into()]);
    run(args, &["--label-smoothing needs --loss cross-entropy, not mse"]);
    // SGD's momentum with Adam.
    let mut args = base(&d("params"), &d("x.npy"));
    args.extend(["--optimizer", "adamw", "--momentum", "0.9"].map(String::from));
    run(args, &["--momentum and --nesterov are SGD's"]);
}

#[test]
fn inspect_emits_json_text_shapes_and_dot_that_graphviz_renders() {
    let out = kiln(&["inspect", LENET, "--batch", "4", "--emit", "json"]);
    ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let nodes = doc["nodes"].as_array().expect("nodes");
    let by_name = |n: &str| nodes.iter().find(|v| v["name"] == n).unwrap_or_else(|| panic!("no node {n}"));
    assert_eq!(by_name("conv1")["shape"], serde_json::json!([4, 6, 28, 28]));
    assert_eq!(by_name("fc3")["op"], "linear");
    let x_id = by_name("x")["id"].clone();
    assert_eq!(by_name("conv1")["inputs"][0], x_id);

    let out = kiln(&["inspect", LENET, "--batch", "4", "--train", "--emit", "text"]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for f in ["conv2d_grad_weight", "cross_entropy", "sgd_step", "update: fc3.weight"] {
        assert!(text.contains(f), "training graph text lacks {f}");
    }
    ok(&kiln(&["inspect", LENET, "--emit", "shapes"]));

    let out = kiln(&["inspect", LENET, "--batch", "4", "--train", "--emit", "dot"]);
    ok(&out);
    let dot_ok = Command::new("dot").arg("-V").output().is_ok_and(|o| o.status.success());
    if !dot_ok {
        eprintln!("skipped rendering: Graphviz `dot` is not installed (.ci/run installs it)");
        return;
    }
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("dot runs");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(&out.stdout).expect("pipe");
    let svg = child.wait_with_output().expect("dot finishes");
    assert!(svg.status.success(), "dot failed: {}", String::from_utf8_lossy(&svg.stderr));
    assert!(String::from_utf8_lossy(&svg.stdout).contains("<svg"));
}

/// A reader that closes the pipe early (`kiln inspect ... | head`) ends
/// kiln quietly: no panic, success.
#[test]
fn closed_stdout_ends_output_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(KILN)
        .args(["inspect", LENET, "--train", "--batch", "64", "--emit", "asm"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln runs");
    let mut first = [0u8; 64];
    child.stdout.take().expect("piped").read_exact(&mut first).expect("some output");
    // The read end is dropped here, with most of the listing unread.
    let out = child.wait_with_output().expect("kiln exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {:?}, stderr: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `--emit asm` lists the wide micro-kernels' reduction loops after the
/// Cranelift kernels that call them: the ISA's multiply-adds on its own
/// registers (ymm for AVX2, zmm for AVX-512), named with the tile and
/// callers, with the functions they call; with `--isa v128` there are
/// none.
#[test]
fn asm_shows_the_wide_micro_kernels() {
    use kiln::compiler::target::ProductIsa;
    let isa = ProductIsa::host();
    let asm = |isa: &str| {
        let out = kiln(&["--isa", isa, "inspect", LENET, "--train", "--batch", "64", "--emit", "asm"]);
        ok(&out);
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let narrow = asm("v128");
    assert!(narrow.contains("; kernel `") && !narrow.contains("; micro-kernel"), "{}", &narrow[..400]);
    let register = match isa {
        ProductIsa::Vector128 => {
            eprintln!("this CPU has no wide ISA: only the 128-bit listing is checked");
            return;
        }
        ProductIsa::Avx2 => "ymm",
        ProductIsa::Avx512 => "zmm",
    };
    let wide = asm(&isa.to_string());
    let listing = wide.split_once("; micro-kernel").map(|(_, rest)| rest).expect("a micro-kernel listing");
    assert!(listing.starts_with(&format!(" `{isa}` reduction of a ")), "{}", &listing[..200]);
    for form in [
        "steps through offset tables (called by `",
        "B's vectors spread over wrap rows",
        "A read along its rows",
        "A transposed, steps a constant distance apart",
    ] {
        assert!(listing.contains(form), "no `{form}` in {}", &listing[..400]);
    }
    let fma = listing.lines().filter(|l| l.contains("vfmadd") && l.contains(register)).count();
    // One in an unoptimised build (the intrinsic's own function), a
    // tile's worth inlined into the loop in an optimised one.
    assert!(fma >= 1, "no {register} multiply-add in:\n{listing}");
    assert!(listing.lines().any(|l| l.trim_end().ends_with("ret")), "each listing reaches its return");
}
