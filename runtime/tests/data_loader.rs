//! The data loader: batch counts, shuffling, determinism across worker
//! counts, errors, clean shutdown; and the synthetic data set.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kiln_runtime::data::*;

fn loader(ds: Arc<dyn Dataset>, config: LoaderConfig) -> DataLoader {
    DataLoader::new(ds, config).unwrap()
}

fn synthetic(n: usize) -> Arc<dyn Dataset> {
    Arc::new(SyntheticImages::new(n, 42))
}

fn collect(l: &DataLoader, epoch: u64) -> Vec<Batch> {
    l.epoch(epoch).map(|b| b.unwrap()).collect()
}

#[test]
fn batch_count_with_and_without_drop_last() {
    for (n, bs, keep, drop) in [(10, 3, 4, 3), (9, 3, 3, 3), (2, 5, 1, 0), (0, 4, 0, 0)] {
        for drop_last in [false, true] {
            let l = loader(synthetic(n), LoaderConfig { batch_size: bs, drop_last, ..Default::default() });
            let want = if drop_last { drop } else { keep };
            assert_eq!(l.num_batches(), want);
            let batches = collect(&l, 0);
            assert_eq!(batches.len(), want, "n {n} bs {bs} drop_last {drop_last}");
            let sizes: Vec<usize> = batches.iter().map(Batch::len).collect();
            if let Some((last, full)) = sizes.split_last() {
                assert!(full.iter().all(|&s| s == bs));
                assert_eq!(*last, if drop_last || n % bs == 0 { bs } else { n % bs });
            }
        }
    }
}

#[test]
fn batches_have_the_right_shape_and_labels() {
    let ds = synthetic(10);
    let l = loader(Arc::clone(&ds), LoaderConfig { batch_size: 4, ..Default::default() });
    let b = l.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.images.shape, vec![4, 3, 32, 32]);
    assert_eq!(b.indices, vec![0, 1, 2, 3]);
    assert_eq!(b.labels, vec![0, 1, 2, 3]);
    assert_eq!(b.labels_tensor().data, vec![0.0, 1.0, 2.0, 3.0]);
    let oh = b.one_hot(10);
    assert_eq!(oh.shape, vec![4, 10]);
    assert_eq!(oh.data[2 * 10 + 2], 1.0);
    assert_eq!(oh.data.iter().sum::<f32>(), 4.0);
    // Without transforms a sample is its image through ToTensor.
    let second = ds.get(1).unwrap().image.to_chw_tensor();
    assert_eq!(&b.images.data[3072..6144], &second.data[..]);
}

#[test]
fn every_sample_once_per_epoch_and_new_order_each_epoch() {
    let ds = synthetic(103);
    let l = loader(Arc::clone(&ds), LoaderConfig { batch_size: 10, shuffle: true, seed: 5, ..Default::default() });
    let mut orders = Vec::new();
    for epoch in 0..3 {
        let batches = collect(&l, epoch);
        let order: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..103).collect::<Vec<_>>(), "epoch {epoch}");
        for b in &batches {
            for (&i, &label) in b.indices.iter().zip(&b.labels) {
                assert_eq!(label, ds.get(i).unwrap().label);
            }
        }
        assert_eq!(order, l.order(epoch));
        orders.push(order);
    }
    assert_ne!(orders[0], orders[1]);
    assert_ne!(orders[1], orders[2]);
    // The same epoch again is the same order; another seed is another.
    assert_eq!(l.order(1), orders[1]);
    let other = loader(ds, LoaderConfig { batch_size: 10, shuffle: true, seed: 6, ..Default::default() });
    assert_ne!(other.order(1), orders[1]);
    // Without shuffle: index order.
    let plain = loader(synthetic(7), LoaderConfig { batch_size: 3, ..Default::default() });
    assert_eq!(
        collect(&plain, 4).iter().flat_map(|b| b.indices.clone()).collect::<Vec<_>>(),
        (0..7).collect::<Vec<_>>()
    );
}

#[test]
fn drop_last_leaves_out_only_the_tail_of_the_order() {
    let l = loader(
        synthetic(25),
        LoaderConfig { batch_size: 8, shuffle: true, drop_last: true, seed: 1, ..Default::default() },
    );
    let got: Vec<usize> = collect(&l, 2).iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(got, l.order(2)[..24].to_vec());
}

fn augmenting(workers: usize, prefetch: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size: 7,
        shuffle: true,
        drop_last: false,
        seed: 1234,
        workers,
        prefetch,
        transforms: Transforms::augmented(32, 4, &CIFAR10_MEAN, &CIFAR10_STD).unwrap(),
    }
}

#[test]
fn same_batches_for_zero_one_and_three_workers() {
    let ds = synthetic(100);
    let reference: Vec<Vec<Batch>> = (0..2).map(|e| collect(&loader(Arc::clone(&ds), augmenting(0, 2)), e)).collect();
    assert_eq!(reference[0].len(), 15);
    for (workers, prefetch) in [(1, 1), (3, 2), (3, 1), (20, 4)] {
        let l = loader(Arc::clone(&ds), augmenting(workers, prefetch));
        for (e, want) in reference.iter().enumerate() {
            assert_eq!(&collect(&l, e as u64), want, "workers {workers} epoch {e}");
        }
    }
    // Augmentation really differs between epochs for the same sample.
    let find = |batches: &Vec<Batch>, i: usize| {
        batches.iter().find_map(|b| {
            let k = b.indices.iter().position(|&j| j == i)?;
            Some(b.images.data[k * 3072..(k + 1) * 3072].to_vec())
        })
    };
    let same = (0..100).filter(|&i| find(&reference[0], i) == find(&reference[1], i)).count();
    assert!(same < 20, "{same} samples came out identical in two epochs");
}

#[test]
fn dropping_an_epoch_early_stops_workers_without_hanging() {
    let ds = synthetic(2000);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let l = loader(ds, augmenting(3, 2));
        for _ in 0..5 {
            let mut it = l.epoch(0);
            let first = it.next().unwrap().unwrap();
            assert_eq!(first.len(), 7);
            drop(it);
        }
        // Never taking a batch at all.
        drop(l.epoch(1));
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("dropping a loader iterator hung");
}

/// Fails on sample 13, panics on sample 77 when asked to.
struct Flaky {
    inner: SyntheticImages,
    panic: bool,
    calls: AtomicUsize,
}

impl Dataset for Flaky {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn get(&self, index: usize) -> Result<Sample, DataError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if index == 13 {
            return Err(DataError::Decode { path: "bad/13.png".into(), message: "broken".into() });
        }
        if self.panic && index == 77 {
            panic!("dataset bug");
        }
        self.inner.get(index)
    }
    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }
}

#[test]
fn a_bad_sample_fails_its_batch_only() {
    for workers in [0, 2] {
        let ds = Arc::new(Flaky { inner: SyntheticImages::new(30, 0), panic: false, calls: AtomicUsize::new(0) });
        let l = loader(ds, LoaderConfig { batch_size: 10, workers, ..Default::default() });
        let results: Vec<_> = l.epoch(0).collect();
        assert_eq!(results.len(), 3);
        assert!(results[0].is_ok() && results[2].is_ok());
        let msg = results[1].as_ref().unwrap_err().to_string();
        assert!(msg.contains("bad/13.png") && msg.contains("broken"), "{msg}");
    }
}

#[test]
fn a_panicking_worker_is_reported_not_hung() {
    let ds = Arc::new(Flaky { inner: SyntheticImages::new(200, 0), panic: true, calls: AtomicUsize::new(0) });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let l = loader(ds, LoaderConfig { batch_size: 10, workers: 2, ..Default::default() });
        let results: Vec<_> = l.epoch(0).collect();
        tx.send(results.into_iter().map(|r| r.map(|b| b.len()).map_err(|e| e.to_string())).collect::<Vec<_>>())
            .unwrap();
    });
    let results = rx.recv_timeout(Duration::from_secs(60)).expect("hung after a worker panic");
    // Batches 0..7 are fine (13 fails), batch 7 holds sample 77 and is the last.
    assert_eq!(results.len(), 8);
    assert!(results[1].as_ref().unwrap_err().contains("13.png"));
    let last = results[7].as_ref().unwrap_err();
    assert!(last.contains("worker 1 panicked") && last.contains("batch 7"), "{last}");
}

#[test]
fn transform_errors_name_the_sample() {
    let ds = synthetic(4);
    let bad = Transforms::new().then(RandomCrop::new(40, 0));
    let l = loader(ds, LoaderConfig { batch_size: 2, transforms: bad, ..Default::default() });
    let msg = l.epoch(0).next().unwrap().unwrap_err().to_string();
    assert!(msg.contains("RandomCrop(40x40") && msg.contains("sample 0") && msg.contains("cannot crop"), "{msg}");
}

#[test]
fn loader_types_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<DataLoader>();
    send_sync::<Batch>();
    send::<Epoch>();
}

#[test]
fn bad_config_is_an_error() {
    assert!(DataLoader::new(synthetic(4), LoaderConfig { batch_size: 0, ..Default::default() }).is_err());
    assert!(DataLoader::new(synthetic(4), LoaderConfig { prefetch: 0, ..Default::default() }).is_err());
}

#[test]
fn workers_overlap_loading_with_the_consumer() {
    // A slow data set: with 2 workers prefetching, a slow consumer should
    // find most batches ready. Compare wall time against the serial sum.
    struct Slow(SyntheticImages);
    impl Dataset for Slow {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn get(&self, i: usize) -> Result<Sample, DataError> {
            std::thread::sleep(Duration::from_millis(10));
            self.0.get(i)
        }
        fn class_names(&self) -> &[String] {
            self.0.class_names()
        }
    }
    let ds = Arc::new(Slow(SyntheticImages::new(40, 0)));
    let l = loader(ds, LoaderConfig { batch_size: 4, workers: 2, ..Default::default() });
    let start = Instant::now();
    for b in l.epoch(0) {
        b.unwrap();
        std::thread::sleep(Duration::from_millis(40)); // "compute"
    }
    // Serial: 10 batches * (40 ms load + 40 ms compute) = 800 ms; overlapped
    // about 10 * 40 ms + one batch = 440 ms.
    let took = start.elapsed();
    assert!(took < Duration::from_millis(680), "no overlap: {took:?}");
}

#[test]
fn synthetic_is_deterministic_balanced_and_learnable() {
    let a = SyntheticImages::new(50, 1);
    let b = SyntheticImages::new(50, 1);
    let c = SyntheticImages::new(50, 2);
    assert_eq!(a.get(17).unwrap(), b.get(17).unwrap());
    assert_ne!(a.get(17).unwrap().image, c.get(17).unwrap().image);
    assert_eq!(a.num_classes(), 10);
    assert_eq!(a.get(23).unwrap().label, 3);
    assert!(a.get(50).is_err());

    // A nearest-class-mean classifier on raw pixels, trained on one seed and
    // tested on another, is far above chance (10 %): the classes are
    // learnable.
    let train = SyntheticImages::new(1000, 10);
    let test = SyntheticImages::new(500, 20);
    let mut means = vec![vec![0f32; 3072]; 10];
    for i in 0..train.len() {
        let s = train.get(i).unwrap();
        for (m, v) in means[s.label].iter_mut().zip(s.image.to_chw_tensor().data) {
            *m += v / 100.0;
        }
    }
    let mut right = 0;
    for i in 0..test.len() {
        let s = test.get(i).unwrap();
        let x = s.image.to_chw_tensor().data;
        let dist = |m: &Vec<f32>| m.iter().zip(&x).map(|(a, b)| (a - b) * (a - b)).sum::<f32>();
        let best = (0..10).min_by(|&p, &q| dist(&means[p]).total_cmp(&dist(&means[q]))).unwrap();
        right += usize::from(best == s.label);
    }
    let acc = right as f32 / test.len() as f32;
    assert!(acc > 0.3, "nearest-mean accuracy {acc}");
    eprintln!("synthetic nearest-mean accuracy: {acc}");
}

/// Every sample of a batch equals the pipeline applied to it on its own,
/// whether the loader writes it straight into the batch (ToTensor followed
/// by in-place steps) or copies a finished tensor (a step after Normalize
/// that cannot run in place).
#[test]
fn batches_equal_the_pipeline_applied_sample_by_sample() {
    let ds = synthetic(12);
    let pipelines = [
        Transforms::normalized(&[0.5; 3], &[0.5; 3]).unwrap(),
        Transforms::augmented(32, 4, &CIFAR10_MEAN, &CIFAR10_STD).unwrap(),
        Transforms::normalized(&CIFAR10_MEAN, &CIFAR10_STD).unwrap().then(RandomHorizontalFlip::new(0.5).unwrap()),
        Transforms::new(),
    ];
    for (p, transforms) in pipelines.into_iter().enumerate() {
        let config = LoaderConfig {
            batch_size: 5,
            shuffle: true,
            seed: 9,
            transforms: transforms.clone(),
            ..Default::default()
        };
        let l = loader(Arc::clone(&ds), config);
        for b in collect(&l, 1) {
            for (k, &i) in b.indices.iter().enumerate() {
                let mut rng = SampleRng::for_sample(9, 1, i as u64);
                let want = match transforms.apply(Item::Image(ds.get(i).unwrap().image), &mut rng).unwrap() {
                    Item::Tensor(t) => t.data,
                    Item::Image(im) => im.to_chw_tensor().data,
                };
                assert_eq!(&b.images.data[k * 3072..(k + 1) * 3072], &want[..], "pipeline {p}, sample {i}");
            }
        }
    }
}

/// Evaluation leaves the random steps out of a chain and keeps the rest in order.
#[test]
fn evaluation_transforms_drop_augmentation() {
    let t = Transforms::augmented(32, 4, &CIFAR10_MEAN, &CIFAR10_STD).unwrap();
    let names = |t: &Transforms| t.steps().iter().map(|s| s.name()).collect::<Vec<_>>();
    assert_eq!(names(&t).len(), 4);
    let eval = t.for_evaluation();
    assert_eq!(names(&eval), names(&t)[2..].to_vec());
    assert!(eval.steps().iter().all(|s| !s.is_random()) && t.steps()[..2].iter().all(|s| s.is_random()));
}
