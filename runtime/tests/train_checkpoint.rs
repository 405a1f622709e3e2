//! Checkpoints: round trip, atomic writes that survive a killed save, and
//! clear errors for truncated, corrupt, wrong-dtype and wrong-shape files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_compiler::frontend::compile_str;
use kiln_compiler::{Graph, Sgd, Tensor};
use kiln_runtime::data::*;
use kiln_runtime::train::*;
use safetensors::tensor::{Dtype, TensorView};

fn small_net() -> Graph {
    compile_str(
        "pub struct Small { conv1: Conv2d(3, 4, 5, stride = 2), pool: MaxPool2d(2, 2), fc1: Linear(4 * 7 * 7, 10) }
         fn forward(x: [N, 3, 32, 32]) -> [N, 10] {
             let x = pool(relu(conv1(x)));
             let x = x.reshape([N, 4 * 7 * 7]);
             fc1(x)
         }",
    )
    .unwrap()
    .graph
}

fn trainer(optimizer: Optimizer) -> Trainer {
    let cfg = TrainConfig {
        batch_size: 8,
        epochs: 1,
        optimizer,
        workers: 0,
        threads: 1,
        progress: false,
        ..TrainConfig::default()
    };
    Trainer::new(&small_net(), cfg).unwrap()
}

fn sgd() -> Optimizer {
    Optimizer::Sgd(Sgd { lr: 0.01, momentum: 0.9, nesterov: false, weight_decay: 0.0 })
}

fn trained_checkpoint(dir: &Path) -> (PathBuf, Checkpoint) {
    let mut t = trainer(sgd());
    let ds: Arc<dyn Dataset> = Arc::new(SyntheticImages::new(32, 1));
    t.fit(ds, None, Transforms::normalized(&[0.5; 3], &[0.5; 3]).unwrap(), &mut |_, _| Ok(())).unwrap();
    let path = dir.join("ck.safetensors");
    t.save_checkpoint(&path).unwrap();
    (path, t.checkpoint().unwrap())
}

#[test]
fn round_trip_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ck) = trained_checkpoint(dir.path());
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back, ck);
    assert_eq!(back.epoch, 1);
    assert_eq!(back.step, 4);
    assert_eq!(back.history.len(), 1);
    assert_eq!(back.optimizer["kind"], "sgd");
    assert_eq!(back.optim_state.len(), 4); // one momentum buffer per parameter
    // It is also a plain weights file.
    let w = load_weights(&path, &small_net()).unwrap();
    assert_eq!(w, ck.params);
    // No temporary file is left behind.
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(names, vec!["ck.safetensors".to_string()]);
}

fn expect_err(path: &Path, needle: &str) {
    let e = Checkpoint::load(path).map(|_| ()).and_then(|_| load_weights(path, &small_net()).map(|_| ()));
    let e = e.expect_err("expected an error").to_string();
    assert!(e.contains(needle), "`{e}` does not mention `{needle}`");
    assert!(e.contains(&path.display().to_string()), "`{e}` does not name the file");
}

fn write_tensors(path: &Path, tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>, meta: Option<HashMap<String, String>>) {
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(k, d, s, b)| (k.to_string(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::serialize(views, meta).unwrap()).unwrap();
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ck) = trained_checkpoint(dir.path());
    let bytes = std::fs::read(&path).unwrap();

    let missing = dir.path().join("missing.safetensors");
    expect_err(&missing, "cannot read");

    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    expect_err(&truncated, "truncated or corrupt");

    let tiny = dir.path().join("tiny.safetensors");
    std::fs::write(&tiny, [1u8, 2, 3]).unwrap();
    expect_err(&tiny, "truncated or corrupt");

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\x00\x00\x00\x00\x00\x00\x00not json at all, just bytes").unwrap();
    expect_err(&garbage, "not a valid safetensors file");

    // F16, BF16 and F64 convert (tests/weights_dtypes.rs); integers do not.
    let int_file = dir.path().join("i16.safetensors");
    write_tensors(&int_file, vec![("conv1.weight", Dtype::I16, vec![4, 3, 5, 5], vec![0u8; 300 * 2])], None);
    expect_err(&int_file, "dtype I16");

    let shape = dir.path().join("shape.safetensors");
    let mut tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = ck
        .params
        .iter()
        .map(|(k, t)| (k.as_str(), Dtype::F32, t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    tensors[0].2 = vec![4, 3, 25];
    write_tensors(&shape, tensors.clone(), None);
    expect_err(&shape, "has shape [4, 3, 25], but model Small expects [4, 3, 5, 5]");

    let partial = dir.path().join("partial.safetensors");
    tensors.remove(0);
    write_tensors(&partial, tensors, None);
    expect_err(&partial, "has no tensor `conv1.weight`");

    let meta = dir.path().join("meta.safetensors");
    let m: HashMap<String, String> = [("epoch".to_string(), "three".to_string())].into();
    write_tensors(&meta, vec![("a", Dtype::F32, vec![1], vec![0; 4])], Some(m));
    expect_err(&meta, "metadata `epoch`");
}

#[test]
fn resume_refuses_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ck) = trained_checkpoint(dir.path());
    // Another optimizer.
    let e = trainer(Optimizer::Adam(Adam::default())).resume(&path).unwrap_err().to_string();
    assert!(e.contains("optimizer sgd") && e.contains("adam"), "{e}");
    // A weights-only file.
    let weights = dir.path().join("weights.safetensors");
    let views: Vec<(String, Vec<usize>, Vec<u8>)> = ck
        .params
        .iter()
        .map(|(k, t)| (k.clone(), t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView)> =
        views.iter().map(|(k, s, b)| (k.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap())).collect();
    std::fs::write(&weights, safetensors::serialize(views, None).unwrap()).unwrap();
    let e = trainer(sgd()).resume(&weights).unwrap_err().to_string();
    assert!(e.contains("not a kiln checkpoint"), "{e}");
    // Optimizer state missing.
    let mut broken = ck.clone();
    broken.optim_state.pop();
    let p = dir.path().join("broken.safetensors");
    broken.save(&p).unwrap();
    let e = trainer(sgd()).resume(&p).unwrap_err().to_string();
    assert!(e.contains("has no optimizer state `momentum_"), "{e}");
    // Nothing changed on the failed resumes: a good one still works.
    let mut t = trainer(sgd());
    t.resume(&path).unwrap();
    assert_eq!(t.epoch(), 1);
}

/// A checkpoint of `n` floats all equal to `v` (big enough that a save takes a while).
fn big_checkpoint(v: f32, n: usize) -> Checkpoint {
    Checkpoint {
        model: "Big".into(),
        params: vec![("w".into(), Tensor { shape: vec![n], data: vec![v; n] })],
        optim_state: vec![],
        optimizer: serde_json::json!({"kind": "sgd"}),
        adam_t: 0,
        epoch: v as u64,
        step: 0,
        seed: 0,
        batch_size: 1,
        history: vec![],
        converted: vec![],
    }
}

const CHILD_ENV: &str = "KILN_TEST_SAVE_LOOP";

/// The child side of the kill test: saves ever-newer checkpoints until killed.
#[test]
fn save_loop_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    for i in 1.. {
        big_checkpoint(i as f32, 4 << 20).save(Path::new(&path)).unwrap();
    }
}

#[test]
fn a_save_killed_midway_leaves_the_previous_checkpoint_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck.safetensors");
    big_checkpoint(0.0, 4 << 20).save(&path).unwrap();
    let exe = std::env::current_exe().unwrap();
    for round in 0..4 {
        let mut child = std::process::Command::new(&exe)
            .args(["save_loop_child", "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill it at some point in its saving loop (mostly in the middle of a write).
        std::thread::sleep(Duration::from_millis(150 + 70 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        let ck = Checkpoint::load(&path).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let v = ck.params[0].1.data[0];
        assert!(ck.params[0].1.data.iter().all(|&x| x == v), "round {round}: a mixed file");
        assert_eq!(ck.epoch, v as u64);
    }
    // Leftover temporary files do not get in the way of the next save.
    let start = Instant::now();
    big_checkpoint(99.0, 16).save(&path).unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap().epoch, 99);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_simulated_crash_before_the_rename_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ck) = trained_checkpoint(dir.path());
    // What a crash mid-save leaves: a partial temporary file beside the checkpoint.
    let new = ck.to_bytes().unwrap();
    std::fs::write(dir.path().join(".ck.safetensors.tmp-999-0"), &new[..new.len() / 3]).unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap(), ck);
    // Saving into a folder that does not exist fails cleanly and leaves the old file alone.
    let e = ck.save(&dir.path().join("no/such/dir/ck.safetensors")).unwrap_err();
    assert!(e.to_string().contains("cannot write"), "{e}");
    assert_eq!(Checkpoint::load(&path).unwrap(), ck);
}

#[test]
fn history_floats_round_trip_exactly() {
    // serde_json's default float parser is off by an ulp for some values
    // (this one came from a real run); the checkpoint must not be.
    let dir = tempfile::tempdir().unwrap();
    let (path, mut ck) = trained_checkpoint(dir.path());
    ck.history[0].images_per_s = 12094.773130403199;
    ck.history[0].seconds = 0.002645771;
    ck.save(&path).unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap().history, ck.history);
}
