//! Checks on the real CIFAR-10 data; ignored by default because the data is
//! not in the repository. Make it with
//!
//! ```sh
//! python3 ../shared/data/cifar10_to_bin.py /tmp/cifar        # binary batches
//! mkdir -p /tmp/cifar/jpg && tar xzf ../shared/data/cifar10-jpg.tar.gz -C /tmp/cifar/jpg
//! KILN_CIFAR_DIR=/tmp/cifar cargo test --release -p kiln-runtime --test data_real -- --ignored --nocapture
//! ```
//!
//! The image-folder check runs when `$KILN_CIFAR_DIR/jpg/train` exists; the
//! `.npy` check when `$KILN_CIFAR_DIR/test_x_u8.npy` and `test_y.npy` exist
//! (`np.save` of the test batch as `(N, 32, 32, 3)` `uint8` and `int64`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use kiln_runtime::data::*;

fn data_dir() -> PathBuf {
    match std::env::var_os("KILN_CIFAR_DIR") {
        Some(d) => PathBuf::from(d),
        None => panic!("set KILN_CIFAR_DIR to a folder holding cifar-10-batches-bin"),
    }
}

fn class_counts(ds: &dyn Dataset) -> Vec<usize> {
    let mut counts = vec![0; ds.num_classes()];
    for i in 0..ds.len() {
        counts[ds.get(i).unwrap().label] += 1;
    }
    counts
}

/// Mean of each channel over all pixels of all images, in `[0, 255]`.
fn channel_means(ds: &dyn Dataset) -> [f64; 3] {
    let mut sum = [0f64; 3];
    for i in 0..ds.len() {
        let im = ds.get(i).unwrap().image;
        if let Pixels::U8(px) = im.pixels() {
            for p in px.chunks_exact(3) {
                for c in 0..3 {
                    sum[c] += f64::from(p[c]);
                }
            }
        }
    }
    sum.map(|s| s / (ds.len() * 1024) as f64)
}

#[test]
#[ignore = "needs the real CIFAR-10 data; see the file's docs"]
fn real_cifar_binary_loads_fast_and_batches() {
    let dir = data_dir();
    let t = Instant::now();
    let train = Cifar10::open(&dir, Split::Train).unwrap();
    let load = t.elapsed();
    assert_eq!(train.len(), 50_000);
    assert_eq!(train.class_names(), CIFAR10_CLASSES.map(String::from).as_slice());
    assert_eq!(class_counts(&train), vec![5000; 10]);
    let test = Cifar10::open(&dir, Split::Test).unwrap();
    assert_eq!(test.len(), 10_000);
    let (test, layout) = open_dir(&dir, Split::Test).unwrap();
    assert_eq!((layout, test.len()), (Layout::CifarBinary, 10_000));
    let means = channel_means(&train);
    eprintln!("train channel means / 255: {:?}", means.map(|m| m / 255.0));
    for (m, want) in means.iter().zip(CIFAR10_MEAN) {
        assert!((m / 255.0 - f64::from(want)).abs() < 0.01, "{means:?}");
    }

    let train: Arc<dyn Dataset> = Arc::new(train);
    for workers in [0, 2] {
        let loader = DataLoader::new(
            Arc::clone(&train),
            LoaderConfig {
                batch_size: 128,
                shuffle: true,
                seed: 1,
                workers,
                transforms: Transforms::augmented(32, 4, &CIFAR10_MEAN, &CIFAR10_STD).unwrap(),
                ..Default::default()
            },
        )
        .unwrap();
        let t = Instant::now();
        let mut n = 0;
        for b in loader.epoch(0) {
            let b = b.unwrap();
            assert_eq!(&b.images.shape[1..], &[3, 32, 32]);
            n += b.len();
        }
        assert_eq!(n, 50_000);
        eprintln!("one augmented epoch of 50,000 with {workers} workers: {:?}", t.elapsed());
    }
    eprintln!("loading the 50,000-image training set took {load:?}");
}

#[test]
#[ignore = "needs the real CIFAR-10 data; see the file's docs"]
fn real_cifar_image_folder_matches_the_binary() {
    let dir = data_dir();
    let root = dir.join("jpg/train");
    if !root.is_dir() {
        eprintln!("skipped: {} not found", root.display());
        return;
    }
    let t = Instant::now();
    let folder = ImageFolder::open_with(&root, ImageFolderOptions { preload: true, ..Default::default() }).unwrap();
    eprintln!("decoding 50,000 JPEGs into memory took {:?}", t.elapsed());
    let (test, layout) = open_dir(dir.join("jpg"), Split::Test).unwrap();
    assert_eq!((layout, test.len()), (Layout::ImageFolder, 10_000));
    assert_eq!(folder.len(), 50_000);
    assert_eq!(folder.class_names(), CIFAR10_CLASSES.map(String::from).as_slice());
    assert_eq!(class_counts(&folder), vec![5000; 10]);
    // The binary batches are these JPEGs decoded by another decoder, in
    // another order: the statistics agree closely.
    let bin = Cifar10::open(&dir, Split::Train).unwrap();
    let (a, b) = (channel_means(&folder), channel_means(&bin));
    eprintln!("channel means: image folder {a:?}, binary {b:?}");
    for c in 0..3 {
        assert!((a[c] - b[c]).abs() < 0.5, "{a:?} vs {b:?}");
    }
}

#[test]
#[ignore = "needs the real CIFAR-10 data; see the file's docs"]
fn real_npy_matches_the_binary() {
    let dir = data_dir();
    let (x, y) = (dir.join("test_x_u8.npy"), dir.join("test_y.npy"));
    if !x.is_file() || !y.is_file() {
        eprintln!("skipped: {} or {} not found", x.display(), y.display());
        return;
    }
    let t = Instant::now();
    let npy = NpyDataset::open(&x, &y).unwrap();
    eprintln!("loading the test set from .npy took {:?}", t.elapsed());
    let bin = Cifar10::open(&dir, Split::Test).unwrap();
    assert_eq!(npy.len(), bin.len());
    for i in 0..bin.len() {
        assert_eq!(npy.get(i).unwrap(), bin.get(i).unwrap(), "sample {i}");
    }
}
