//! The trainer on small generated data: learning, resume bit for bit,
//! determinism across loader workers, remainder batches, NaN diagnosis,
//! metrics and the chart.

use std::path::Path;
use std::sync::Arc;

use kiln_compiler::frontend::compile_str;
use kiln_compiler::{Graph, Sgd, Tensor};
use kiln_runtime::Backend;
use kiln_runtime::data::*;
use kiln_runtime::train::*;

/// A small CNN on 32x32 RGB images (fast to compile and run in tests).
fn small_net() -> Graph {
    compile_str(
        "pub struct Small { conv1: Conv2d(3, 4, 5, stride = 2), pool: MaxPool2d(2, 2), fc1: Linear(4 * 7 * 7, 10) }
         fn forward(x: [N, 3, 32, 32]) -> [N, 10] {
             let x = pool(relu(conv1(x)));
             let x = x.reshape([N, 4 * 7 * 7]);
             fc1(x)
         }",
    )
    .expect("the test net compiles")
    .graph
}

fn config(batch: usize, epochs: u64, workers: usize, optimizer: Optimizer) -> TrainConfig {
    TrainConfig {
        batch_size: batch,
        epochs,
        optimizer,
        seed: 7,
        workers,
        threads: 1,
        backend: Backend::Jit,
        eval_batch: 64,
        progress: false,
        ..TrainConfig::default()
    }
}

fn sgd(lr: f32, momentum: f32) -> Optimizer {
    Optimizer::Sgd(Sgd { lr, momentum, nesterov: false, weight_decay: 0.0 })
}

fn transforms() -> Transforms {
    Transforms::normalized(&[0.5; 3], &[0.5; 3]).unwrap()
}

fn data(n: usize, seed: u64) -> Arc<dyn Dataset> {
    Arc::new(SyntheticImages::new(n, seed))
}

fn bits(params: &[(String, Tensor)]) -> Vec<(String, Vec<u32>)> {
    params.iter().map(|(k, t)| (k.clone(), t.data.iter().map(|v| v.to_bits()).collect())).collect()
}

fn no_hook() -> impl FnMut(&Trainer, &EpochRecord) -> Result<(), TrainError> {
    |_, _| Ok(())
}

#[test]
fn learns_the_synthetic_set_well_above_chance() {
    let mut t = Trainer::new(&small_net(), config(8, 3, 2, sgd(0.01, 0.9))).unwrap();
    let records = t.fit(data(1200, 1), Some(data(300, 2)), transforms(), &mut no_hook()).unwrap();
    assert_eq!(records.len(), 3);
    let last = records.last().unwrap();
    let acc = last.test_accuracy.unwrap();
    assert!(acc > 0.4, "test accuracy {acc} after 3 epochs");
    assert!(last.train_loss < records[0].train_loss, "{records:?}");
    assert_eq!(last.per_class_accuracy.len(), 10);
    assert_eq!(t.epoch(), 3);
    assert_eq!(t.steps(), 3 * 150);
    let json = last.to_json();
    for key in ["epoch", "train_loss", "test_loss", "test_accuracy", "per_class_accuracy", "seconds", "images_per_s"] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    assert_eq!(EpochRecord::from_json(&json).as_ref(), Some(last));
    // The last epoch's test metrics stand for the current parameters: the
    // same as evaluating again, and gone once the parameters change.
    let fitted = t.fitted_test_metrics().expect("fit evaluated its test set").clone();
    let again = t.evaluate(data(300, 2), transforms()).unwrap();
    assert_eq!(fitted, again);
    assert_eq!(Some(fitted.accuracy()), last.test_accuracy);
    let params = t.params().unwrap();
    t.set_params(params).unwrap();
    assert!(t.fitted_test_metrics().is_none());
}

/// One more epoch without a test set: the earlier test metrics no longer
/// describe the parameters.
#[test]
fn fitted_test_metrics_go_stale_after_more_steps() {
    let mut t = Trainer::new(&small_net(), config(8, 1, 2, sgd(0.01, 0.9))).unwrap();
    t.fit(data(64, 1), Some(data(32, 2)), transforms(), &mut no_hook()).unwrap();
    assert!(t.fitted_test_metrics().is_some());
    t.set_epochs(2);
    t.fit(data(64, 1), None, transforms(), &mut no_hook()).unwrap();
    assert!(t.fitted_test_metrics().is_none());
}

/// Two epochs straight against one epoch, a checkpoint through a file, a
/// fresh trainer resuming it and one more epoch: the same bits.
fn resume_matches(optimizer: Optimizer) {
    let dir = tempfile::tempdir().unwrap();
    let train = data(203, 3); // 203 = 25 * 8 + 3: a remainder batch every epoch
    let mut straight = Trainer::new(&small_net(), config(8, 2, 2, optimizer)).unwrap();
    straight.fit(Arc::clone(&train), None, transforms(), &mut no_hook()).unwrap();

    let path = dir.path().join("run.safetensors");
    let mut first = Trainer::new(&small_net(), config(8, 1, 0, optimizer)).unwrap();
    first.fit(Arc::clone(&train), None, transforms(), &mut no_hook()).unwrap();
    first.save_checkpoint(&path).unwrap();
    drop(first);
    // Another seed for the fresh trainer's initialisation: everything must come from the file.
    let mut cfg = config(8, 2, 3, optimizer);
    cfg.seed = 7;
    let mut second = Trainer::new(&small_net(), cfg).unwrap();
    second.resume(&path).unwrap();
    assert_eq!(second.epoch(), 1);
    assert_eq!(second.steps(), 26);
    second.fit(Arc::clone(&train), None, transforms(), &mut no_hook()).unwrap();

    assert_eq!(second.steps(), straight.steps());
    assert_eq!(second.history().len(), 2);
    assert_eq!(second.history()[1].train_loss.to_bits(), straight.history()[1].train_loss.to_bits());
    assert!(bits(&second.params().unwrap()) == bits(&straight.params().unwrap()), "parameters differ");
    let (a, b) = (second.checkpoint().unwrap(), straight.checkpoint().unwrap());
    assert!(bits(&a.optim_state) == bits(&b.optim_state), "optimizer state differs");
    assert!(!a.optim_state.is_empty());
}

#[test]
fn resume_is_bit_identical_with_sgd_momentum() {
    resume_matches(sgd(0.01, 0.9));
}

#[test]
fn resume_is_bit_identical_with_adam() {
    resume_matches(Optimizer::Adam(Adam { lr: 0.002, weight_decay: 1e-4, ..Adam::default() }));
}

#[test]
fn same_weights_whatever_the_number_of_workers() {
    let train = data(100, 4);
    let mut results = Vec::new();
    for workers in [0, 1, 3] {
        let mut t = Trainer::new(&small_net(), config(4, 1, workers, sgd(0.01, 0.9))).unwrap();
        t.fit(Arc::clone(&train), None, transforms(), &mut no_hook()).unwrap();
        results.push(bits(&t.params().unwrap()));
    }
    assert!(results[0] == results[1] && results[1] == results[2]);
}

#[test]
fn the_interpreter_and_the_jit_train_alike() {
    let train = data(40, 5);
    let mut params = Vec::new();
    for backend in [Backend::Jit, Backend::Interp] {
        for optimizer in [sgd(0.01, 0.9), Optimizer::Adam(Adam::default())] {
            let mut cfg = config(8, 1, 0, optimizer);
            cfg.backend = backend;
            let mut t = Trainer::new(&small_net(), cfg).unwrap();
            t.fit(Arc::clone(&train), None, transforms(), &mut no_hook()).unwrap();
            params.push(t.params().unwrap());
        }
    }
    for (jit, interp) in [(&params[0], &params[2]), (&params[1], &params[3])] {
        for ((k, a), (_, b)) in jit.iter().zip(interp) {
            let diff = a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(diff < 1e-4, "{k}: JIT and interpreter differ by {diff}");
        }
    }
}

#[test]
fn adam_lowers_the_loss() {
    let mut t = Trainer::new(&small_net(), config(8, 2, 0, Optimizer::Adam(Adam::default()))).unwrap();
    let records = t.fit(data(400, 6), None, transforms(), &mut no_hook()).unwrap();
    assert!(records[1].train_loss < records[0].train_loss, "{records:?}");
    assert!(records[1].train_loss < 2.0, "{records:?}");
}

#[test]
fn remainder_batches_train_every_sample_and_evaluation_counts_every_sample() {
    let mut t = Trainer::new(&small_net(), config(16, 1, 1, sgd(0.01, 0.0))).unwrap();
    t.fit(data(37, 8), None, transforms(), &mut no_hook()).unwrap();
    assert_eq!(t.steps(), 3); // 16 + 16 + 5
    let m = t.evaluate(data(130, 9), transforms()).unwrap(); // eval batch 64: 64 + 64 + 2
    assert_eq!(m.total, 130);
    assert_eq!(m.confusion.iter().flatten().sum::<u64>(), 130);
    let diag: u64 = (0..10).map(|c| m.confusion[c][c]).sum();
    assert_eq!(diag, m.correct);
    assert!(m.loss.is_finite() && m.loss > 0.0);
    let per_class = m.per_class_accuracy();
    assert_eq!(per_class.len(), 10);
    assert!(m.to_string().contains("Accuracy of the network on the 130 test images"));
    assert!(m.confusion_table().lines().count() == 12);
    // drop_last leaves the remainder out.
    let mut cfg = config(16, 1, 1, sgd(0.01, 0.0));
    cfg.drop_last = true;
    let mut t = Trainer::new(&small_net(), cfg).unwrap();
    t.fit(data(37, 8), None, transforms(), &mut no_hook()).unwrap();
    assert_eq!(t.steps(), 2);
}

/// The synthetic set with a non-finite pixel (infinite or NaN) in one sample.
struct Poisoned {
    inner: SyntheticImages,
    bad: usize,
    value: f32,
}

impl Dataset for Poisoned {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn get(&self, index: usize) -> Result<Sample, DataError> {
        let s = self.inner.get(index)?;
        if index != self.bad {
            return Ok(s);
        }
        let mut px: Vec<f32> = match s.image.pixels() {
            Pixels::U8(v) => v.iter().map(|&b| f32::from(b) / 255.0).collect(),
            Pixels::F32(v) => v.clone(),
        };
        px[100] = self.value;
        Ok(Sample { image: Image::from_f32(32, 32, 3, px).unwrap(), label: s.label })
    }
    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }
}

#[test]
fn an_inf_or_nan_in_the_data_stops_training_at_its_step_naming_the_input() {
    // A NaN passes ReLU (as in PyTorch) and max-pooling's comparisons only
    // when it wins, so it is caught at the loss like an infinity.
    for value in [f32::INFINITY, f32::NAN] {
        let ds: Arc<dyn Dataset> = Arc::new(Poisoned { inner: SyntheticImages::new(64, 1), bad: 21, value });
        let mut cfg = config(8, 1, 0, sgd(0.01, 0.9));
        cfg.shuffle = false;
        let mut t = Trainer::new(&small_net(), cfg).unwrap();
        let e = t.fit(ds, None, transforms(), &mut no_hook()).unwrap_err();
        match &e {
            TrainError::NonFinite { epoch, step, batch_in_epoch, node, .. } => {
                assert_eq!((*epoch, *step, *batch_in_epoch), (1, 3, 3), "{value}: {e}");
                assert_eq!(node.as_deref(), Some("x"), "{value}: {e}");
            }
            other => panic!("{value}: expected NonFinite, got {other}"),
        }
        assert!(e.to_string().contains("step 3"), "{e}");
    }
}

#[test]
fn a_diverging_run_stops_and_names_the_first_non_finite_node() {
    let mut t = Trainer::new(&small_net(), config(8, 1, 0, sgd(1e18, 0.0))).unwrap();
    let e = t.fit(data(400, 1), None, transforms(), &mut no_hook()).unwrap_err();
    let TrainError::NonFinite { node, step, .. } = &e else { panic!("expected NonFinite, got {e}") };
    assert!(*step >= 2, "{e}");
    let node = node.as_deref().unwrap_or_else(|| panic!("no node named: {e}"));
    assert!(
        ["conv1", "pool", "fc1", "loss", "relu"].iter().any(|n| node.starts_with(n)) || node.contains("conv1"),
        "unexpected first node {node}: {e}"
    );
    assert!(e.to_string().contains(node), "{e}");
}

#[test]
fn a_model_that_does_not_fit_the_data_is_a_clear_error() {
    let mut t = Trainer::new(&small_net(), config(8, 1, 0, sgd(0.01, 0.0))).unwrap();
    let gray: Arc<dyn Dataset> = {
        struct Gray;
        impl Dataset for Gray {
            fn len(&self) -> usize {
                4
            }
            fn get(&self, _: usize) -> Result<Sample, DataError> {
                Ok(Sample { image: Image::from_u8(28, 28, 1, vec![0; 784]).unwrap(), label: 0 })
            }
            fn class_names(&self) -> &[String] {
                static N: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
                N.get_or_init(|| vec!["a".into(), "b".into()])
            }
        }
        Arc::new(Gray)
    };
    let e = t.fit(gray, None, Transforms::new(), &mut no_hook()).unwrap_err();
    assert!(e.to_string().contains("[4, 1, 28, 28]"), "{e}");
    // Not a classifier.
    let g = compile_str(
        "pub struct M { fc: Linear(3, 2) } fn forward(x: [N, 3]) -> [N, 2] { let y = fc(x); y.reshape([N, 1, 2]) }",
    );
    if let Ok(l) = g {
        let e = Trainer::new(&l.graph, config(2, 1, 0, sgd(0.1, 0.0))).unwrap_err();
        assert!(e.to_string().contains("logits"), "{e}");
    }
}

#[test]
fn the_chart_is_an_svg_with_both_panels() {
    let mut t = Trainer::new(&small_net(), config(8, 2, 0, sgd(0.01, 0.9))).unwrap();
    t.fit(data(80, 1), Some(data(40, 2)), transforms(), &mut no_hook()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves.svg");
    write_chart(&path, "Small", t.history()).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    assert!(svg.contains("loss") && svg.contains("test accuracy"));
    // One epoch, or none, draws too.
    assert!(render_chart("x", &t.history()[..1]).is_ok());
    assert!(render_chart("x", &[]).is_ok());
    assert!(Path::new(&path).exists());
}

#[test]
fn the_diagnosis_replays_from_the_last_kept_state_deep_into_an_epoch() {
    // Batch 1003 (1-based) is bad: the trainer replays from its copy at batch 1001.
    let bad = 8 * 1002 + 5;
    let ds: Arc<dyn Dataset> =
        Arc::new(Poisoned { inner: SyntheticImages::new(8 * 1010, 1), bad, value: f32::INFINITY });
    let mut cfg = config(8, 1, 2, sgd(0.01, 0.9));
    cfg.shuffle = false;
    let mut t = Trainer::new(&small_net(), cfg).unwrap();
    let e = t.fit(ds, None, transforms(), &mut no_hook()).unwrap_err();
    let TrainError::NonFinite { step, batch_in_epoch, node, .. } = &e else { panic!("expected NonFinite, got {e}") };
    assert_eq!((*step, *batch_in_epoch), (1003, 1003), "{e}");
    assert_eq!(node.as_deref(), Some("x"), "{e}");
    // The trainer is left in the state before the failing step.
    assert_eq!(t.steps(), 1002);
    assert!(t.params().unwrap().iter().all(|(_, p)| p.data.iter().all(|v| v.is_finite())));
}

/// The schedule's rate reaches the compiled step: with `StepLR(1, 0)` the
/// second epoch trains at rate 0 and leaves every parameter as the first
/// epoch left it, while at a constant rate it changes them; the rate the
/// trainer reports follows the schedule.
#[test]
fn the_schedule_sets_the_compiled_steps_rate() {
    // The parameters after each of 2 epochs.
    let run = |schedule: Schedule| {
        let mut cfg = config(8, 2, 1, sgd(0.01, 0.9));
        cfg.schedule = LrSchedule { schedule, warmup_steps: 0 };
        let mut t = Trainer::new(&small_net(), cfg).unwrap();
        let mut after = Vec::new();
        let mut hook = |t: &Trainer, _: &EpochRecord| {
            after.push(bits(&t.params()?));
            Ok(())
        };
        t.fit(data(64, 3), None, transforms(), &mut hook).unwrap();
        (t.learning_rate(), after)
    };
    let (rate, decayed) = run(Schedule::Step { every: 1, gamma: 0.0 });
    assert_eq!(rate, 0.0);
    assert_eq!(decayed[0], decayed[1], "an epoch at rate 0 changed the parameters");
    let (rate, constant) = run(Schedule::Constant);
    assert_eq!(rate, 0.01);
    assert_eq!(constant[0], decayed[0], "the first epochs ran at the same rate");
    assert_ne!(constant[0], constant[1]);

    // The reported rate follows the schedule over the run's 2 * 8 steps.
    let mut cfg = config(8, 2, 1, sgd(0.1, 0.0));
    cfg.schedule = LrSchedule { schedule: Schedule::Cosine { min_lr: 0.0 }, warmup_steps: 0 };
    let mut t = Trainer::new(&small_net(), cfg).unwrap();
    t.fit(data(64, 3), None, transforms(), &mut no_hook()).unwrap();
    assert!(t.learning_rate() < 1e-6, "the end of a cosine schedule: {}", t.learning_rate());
}
