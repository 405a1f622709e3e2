//! `kiln grad` against PyTorch on the fixtures of `tests/parity/` (made by
//! `tests/parity/make.py`): each case directory holds a model, the flags of
//! its run, initial parameters, a batch and what PyTorch computed, under
//! the names `kiln grad` writes. Every expected file must be written and
//! agree, on the JIT and on the interpreter.

use kiln::runtime::npy;
use std::path::{Path, PathBuf};
use std::process::Command;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// PyTorch's float32 values are one rounding of many; kiln's differ by
/// summation order. Relative to the largest magnitude of the tensor.
const RELATIVE: f32 = 2e-5;
/// And never tighter than this absolute difference, the lecture net's
/// bound for gradients (`cli_grad.rs`): a gradient that is zero in exact
/// arithmetic (a bias before a batch normalisation) is rounding noise in both.
const ABSOLUTE: f32 = 1e-6;

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/parity exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.join("model.net").exists())
        .collect();
    cases.sort();
    cases
}

fn run_case(case: &Path, backend: &str) -> Vec<String> {
    let out = tempfile::tempdir().expect("tempdir");
    let flags = std::fs::read_to_string(case.join("flags")).expect("flags");
    let path = |f: &str| case.join(f).display().to_string();
    let status = Command::new(KILN)
        .args(["grad", &path("model.net"), "--params", &path("params"), "--input", &path("input.npy")])
        .args(["--labels", &path("labels.npy"), "--backend", backend, "--out", &out.path().display().to_string()])
        .args(flags.split_whitespace())
        .output()
        .expect("the kiln binary runs");
    let name = case.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        status.status.success(),
        "{name} ({backend}): kiln grad failed:\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let mut failures = Vec::new();
    let mut expected: Vec<PathBuf> =
        std::fs::read_dir(case.join("expected")).expect("expected/").map(|e| e.expect("readable").path()).collect();
    expected.sort();
    assert!(expected.len() >= 4, "{name}: too few expected files");
    for want_path in expected {
        let file = want_path.file_name().unwrap().to_string_lossy().to_string();
        let want = npy::read_f32(&want_path).unwrap_or_else(|e| panic!("{e}"));
        let got = match npy::read_f32(&out.path().join(&file)) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name} ({backend}): {file} not written: {e}"));
                continue;
            }
        };
        if got.shape != want.shape {
            failures.push(format!("{name} ({backend}): {file} has shape {:?}, PyTorch's {:?}", got.shape, want.shape));
            continue;
        }
        let diff = got.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let scale = want.data.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        if diff.is_nan() || diff > (RELATIVE * scale).max(ABSOLUTE) {
            failures.push(format!(
                "{name} ({backend}): {file} differs from PyTorch by {diff} ({} of its largest magnitude {scale})",
                diff / scale
            ));
        }
    }
    failures
}

#[test]
fn grad_reproduces_pytorch_on_every_fixture() {
    let cases = cases();
    assert!(!cases.is_empty(), "no parity fixtures found");
    let mut failures = Vec::new();
    for case in &cases {
        for backend in ["jit", "interp"] {
            failures.extend(run_case(case, backend));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
