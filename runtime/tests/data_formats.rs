//! Data set readers on small files made here: CIFAR-10 binary batches, image
//! folders of PNG and JPEG files, and `.npy` arrays; good data and bad.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_runtime::data::*;
use npyz::WriterBuilder;

// ---------------------------------------------------------------- CIFAR-10

/// The byte at channel `c`, row `y`, column `x` of test record `rec`.
fn cifar_px(rec: usize, c: usize, y: usize, x: usize) -> u8 {
    ((rec * 7 + c * 50 + y * 3 + x * 5) % 256) as u8
}

/// CIFAR-10 records for record numbers `recs`, with the given labels.
fn cifar_records(recs: std::ops::Range<usize>, label: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut out = Vec::new();
    for rec in recs {
        out.push(label(rec));
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    out.push(cifar_px(rec, c, y, x));
                }
            }
        }
    }
    out
}

/// A `cifar-10-batches-bin` folder: 2 records in each training file (global
/// record numbers 0..10, label = record % 10), 3 in the test file.
fn cifar_dir(meta: bool) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&dir).unwrap();
    for f in 0..5 {
        let bytes = cifar_records(2 * f..2 * f + 2, |r| (r % 10) as u8);
        std::fs::write(dir.join(format!("data_batch_{}.bin", f + 1)), bytes).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), cifar_records(100..103, |r| (9 - r % 10) as u8)).unwrap();
    if meta {
        let names = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
        std::fs::write(dir.join("batches.meta.txt"), names.join("\n") + "\n\n").unwrap();
    }
    (tmp, dir)
}

#[test]
fn cifar_train_split_pixels_land_in_chw_and_hwc_places() {
    let (tmp, _) = cifar_dir(true);
    // Open through the parent folder.
    let ds = Cifar10::open(tmp.path(), Split::Train).unwrap();
    assert_eq!(ds.len(), 10);
    assert_eq!(ds.class_names()[0], "plane");
    assert_eq!(ds.num_classes(), 10);
    for rec in 0..10 {
        let s = ds.get(rec).unwrap();
        assert_eq!(s.label, rec % 10);
        assert_eq!((s.image.height(), s.image.width(), s.image.channels()), (32, 32, 3));
        let t = s.image.to_chw_tensor();
        assert_eq!(t.shape, vec![3, 32, 32]);
        for c in 0..3 {
            for (y, x) in [(0, 0), (0, 31), (31, 0), (17, 5), (31, 31)] {
                let want = cifar_px(rec, c, y, x);
                assert_eq!(s.image.get(y, x, c), Some(f32::from(want)), "rec {rec} c {c} y {y} x {x}");
                assert_eq!(t.data[c * 1024 + y * 32 + x], f32::from(want) / 255.0);
            }
        }
        // The stored record is the file's CHW bytes.
        assert_eq!(ds.raw_chw(rec).unwrap()[1024 + 32 + 1], cifar_px(rec, 1, 1, 1));
    }
    assert!(ds.describe(5).ends_with("data_batch_3.bin record 1"), "{}", ds.describe(5));
    assert!(matches!(ds.get(10), Err(DataError::Index { index: 10, len: 10 })));
}

#[test]
fn cifar_test_split_from_batches_bin_folder_without_meta() {
    let (_tmp, dir) = cifar_dir(false);
    let ds = Cifar10::open(&dir, Split::Test).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.class_names()[0], "airplane");
    assert_eq!(ds.labels(), &[9, 8, 7]);
    assert_eq!(ds.get(2).unwrap().image.get(3, 4, 2), Some(f32::from(cifar_px(102, 2, 3, 4))));
}

fn err_text<T: std::fmt::Debug>(r: Result<T, DataError>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn cifar_truncated_file_names_file_and_partial_record() {
    let (_tmp, dir) = cifar_dir(true);
    let path = dir.join("data_batch_2.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[1u8; 100]);
    std::fs::write(&path, bytes).unwrap();
    let err = Cifar10::open(&dir, Split::Train).unwrap_err();
    assert!(matches!(err, DataError::CifarTruncated { record: 2, partial: 100, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("data_batch_2.bin"), "{msg}");
    assert!(msg.contains("record 2"), "{msg}");
    assert!(msg.contains("100 of 3073"), "{msg}");
}

#[test]
fn cifar_bad_label_names_file_and_record() {
    let (_tmp, dir) = cifar_dir(true);
    let path = dir.join("data_batch_4.bin");
    std::fs::write(&path, cifar_records(0..3, |r| if r == 1 { 10 } else { 0 })).unwrap();
    let msg = err_text(Cifar10::open(&dir, Split::Train));
    assert!(msg.contains("data_batch_4.bin"), "{msg}");
    assert!(msg.contains("record 1"), "{msg}");
    assert!(msg.contains("label byte 10"), "{msg}");
}

#[test]
fn cifar_missing_empty_and_bad_meta_files_are_errors() {
    let (_tmp, dir) = cifar_dir(true);
    std::fs::remove_file(dir.join("data_batch_3.bin")).unwrap();
    let err = Cifar10::open(&dir, Split::Train).unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("data_batch_3.bin"), "{err}");

    std::fs::write(dir.join("test_batch.bin"), b"").unwrap();
    let msg = err_text(Cifar10::open(&dir, Split::Test));
    assert!(msg.contains("test_batch.bin") && msg.contains("empty"), "{msg}");

    std::fs::write(dir.join("test_batch.bin"), cifar_records(0..1, |_| 3)).unwrap();
    std::fs::write(dir.join("batches.meta.txt"), "a\nb\nc\n").unwrap();
    let msg = err_text(Cifar10::open(&dir, Split::Test));
    assert!(msg.contains("batches.meta.txt") && msg.contains("lists 3 class names"), "{msg}");

    let msg = err_text(Cifar10::open(dir.join("nowhere"), Split::Test));
    assert!(msg.contains("nowhere") && msg.contains("not found"), "{msg}");
}

#[test]
fn cifar_from_files_loads_any_list() {
    let (_tmp, dir) = cifar_dir(true);
    let files = vec![dir.join("test_batch.bin"), dir.join("data_batch_1.bin")];
    let names: Vec<String> = CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
    let ds = Cifar10::from_files(&files, names).unwrap();
    assert_eq!(ds.len(), 5);
    assert_eq!(ds.get(3).unwrap().label, 0);
    assert_eq!(ds.files()[1].1, 3);
}

// ------------------------------------------------------------ image folder

fn rgb_pixels(w: u32, h: u32, seed: u32) -> Vec<u8> {
    (0..w * h * 3).map(|i| ((i * 37 + seed * 11) % 251) as u8).collect()
}

fn save_png(path: &Path, w: u32, h: u32, seed: u32) -> Vec<u8> {
    let px = rgb_pixels(w, h, seed);
    image::RgbImage::from_raw(w, h, px.clone()).unwrap().save_with_format(path, image::ImageFormat::Png).unwrap();
    px
}

fn save_jpeg(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    let im = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
    im.save_with_format(path, image::ImageFormat::Jpeg).unwrap();
}

/// `root/cat/{a.png, b.PNG}`, `root/dog/{c.jpg, d.jpeg, notes.txt}`,
/// `root/.cache/x.png`, all 4x6 (H x W).
fn image_folder() -> (tempfile::TempDir, Vec<Vec<u8>>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for d in ["cat", "dog", ".cache"] {
        std::fs::create_dir(root.join(d)).unwrap();
    }
    let a = save_png(&root.join("cat/a.png"), 6, 4, 1);
    let b = save_png(&root.join("cat/b.PNG"), 6, 4, 2);
    save_jpeg(&root.join("dog/c.jpg"), 6, 4, [200, 30, 90]);
    save_jpeg(&root.join("dog/d.jpeg"), 6, 4, [20, 220, 140]);
    std::fs::write(root.join("dog/notes.txt"), "not an image").unwrap();
    save_png(&root.join(".cache/x.png"), 6, 4, 3);
    (tmp, vec![a, b])
}

#[test]
fn image_folder_classes_sorted_png_exact_jpeg_close() {
    let (tmp, pngs) = image_folder();
    for preload in [false, true] {
        let opts = ImageFolderOptions { preload, ..Default::default() };
        let ds = ImageFolder::open_with(tmp.path(), opts).unwrap();
        assert_eq!(ds.is_preloaded(), preload);
        assert_eq!(ds.class_names(), &["cat".to_string(), "dog".to_string()]);
        assert_eq!(ds.len(), 4);
        let labels: Vec<usize> = (0..4).map(|i| ds.get(i).unwrap().label).collect();
        assert_eq!(labels, vec![0, 0, 1, 1]);
        for (i, want) in pngs.iter().enumerate() {
            let im = ds.get(i).unwrap().image;
            assert_eq!((im.height(), im.width(), im.channels()), (4, 6, 3));
            assert_eq!(im.pixels(), &Pixels::U8(want.clone()), "png {i} preload {preload}");
        }
        for (i, rgb) in [(2, [200u8, 30, 90]), (3, [20, 220, 140])] {
            let im = ds.get(i).unwrap().image;
            for y in 0..4 {
                for x in 0..6 {
                    for (c, &want) in rgb.iter().enumerate() {
                        let v = im.get(y, x, c).unwrap();
                        assert!((v - f32::from(want)).abs() <= 8.0, "jpeg {i} ({y},{x},{c}) = {v}");
                    }
                }
            }
        }
        assert!(ds.describe(2).ends_with("c.jpg"), "{}", ds.describe(2));
    }
}

#[test]
fn image_folder_gray_and_rgb_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("only")).unwrap();
    let gray: Vec<u8> = (0..12).map(|i| i * 20).collect();
    image::GrayImage::from_raw(4, 3, gray.clone())
        .unwrap()
        .save_with_format(tmp.path().join("only/g.png"), image::ImageFormat::Png)
        .unwrap();
    let rgb = ImageFolder::open(tmp.path()).unwrap().get(0).unwrap().image;
    assert_eq!(rgb.channels(), 3);
    assert_eq!(rgb.get(2, 1, 0), Some(f32::from(gray[9])));
    assert_eq!(rgb.get(2, 1, 2), Some(f32::from(gray[9])));
    let opts = ImageFolderOptions { color: ColorMode::Gray, preload: true };
    let g = ImageFolder::open_with(tmp.path(), opts).unwrap().get(0).unwrap().image;
    assert_eq!(g.pixels(), &Pixels::U8(gray));
}

#[test]
fn image_folder_corrupt_image_names_the_file() {
    let (tmp, _) = image_folder();
    let bad = tmp.path().join("dog/e.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 this is not really a jpeg").unwrap();
    // Lazy: opening works, reading that sample fails.
    let ds = ImageFolder::open(tmp.path()).unwrap();
    let msg = err_text(ds.get(4));
    assert!(msg.contains("e.jpg") && msg.contains("cannot decode image"), "{msg}");
    // Preloaded: opening fails.
    let msg = err_text(ImageFolder::open_with(tmp.path(), ImageFolderOptions { preload: true, ..Default::default() }));
    assert!(msg.contains("e.jpg") && msg.contains("cannot decode image"), "{msg}");
    // Garbage without any image signature.
    std::fs::write(&bad, b"hello").unwrap();
    let msg = err_text(ds.get(4));
    assert!(msg.contains("e.jpg") && msg.contains("not a PNG or JPEG"), "{msg}");
}

#[test]
fn image_folder_differing_sizes_are_an_error() {
    let (tmp, _) = image_folder();
    save_png(&tmp.path().join("dog/z.png"), 5, 4, 9);
    let msg = err_text(ImageFolder::open_with(tmp.path(), ImageFolderOptions { preload: true, ..Default::default() }));
    assert!(msg.contains("z.png") && msg.contains("4x5x3") && msg.contains("a.png") && msg.contains("4x6x3"), "{msg}");

    // Lazily opened, the loader reports it when batching, naming the file.
    let ds = Arc::new(ImageFolder::open(tmp.path()).unwrap());
    let loader = DataLoader::new(ds, LoaderConfig { batch_size: 8, ..Default::default() }).unwrap();
    let msg = err_text(loader.epoch(0).next().unwrap());
    assert!(msg.contains("z.png") && msg.contains("[3, 4, 5]") && msg.contains("[3, 4, 6]"), "{msg}");
}

#[test]
fn image_folder_empty_and_missing_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let msg = err_text(ImageFolder::open(tmp.path()));
    assert!(msg.contains("no class subfolders"), "{msg}");
    std::fs::create_dir(tmp.path().join("cls")).unwrap();
    std::fs::write(tmp.path().join("cls/readme.md"), "x").unwrap();
    let msg = err_text(ImageFolder::open(tmp.path()));
    assert!(msg.contains("cls") && msg.contains("no images"), "{msg}");
    let msg = err_text(ImageFolder::open(tmp.path().join("missing")));
    assert!(msg.contains("missing") && msg.contains("not found"), "{msg}");
}

// --------------------------------------------------------------------- npy

fn write_npy<T: npyz::AutoSerialize + Clone>(path: &Path, shape: &[u64], data: &[T]) {
    let mut out = Vec::new();
    {
        let mut w = npyz::WriteOptions::new().default_dtype().shape(shape).writer(&mut out).begin_nd().unwrap();
        w.extend(data.iter().cloned()).unwrap();
        w.finish().unwrap();
    }
    std::fs::write(path, out).unwrap();
}

/// A version-1.0 `.npy` file written by hand.
fn npy_bytes(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let order = if fortran { "True" } else { "False" };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn npy_u8_images_with_int64_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let (xi, yi) = (tmp.path().join("x.npy"), tmp.path().join("y.npy"));
    let pixels: Vec<u8> = (0..3 * 2 * 4 * 3).map(|i| (i * 3) as u8).collect();
    write_npy(&xi, &[3, 2, 4, 3], &pixels);
    write_npy(&yi, &[3], &[2i64, 0, 4]);
    let ds = NpyDataset::open(&xi, &yi).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.image_shape(), (2, 4, 3));
    assert_eq!(ds.labels(), &[2, 0, 4]);
    assert_eq!(ds.class_names().len(), 5);
    let s = ds.get(1).unwrap();
    assert_eq!(s.label, 0);
    // (n, y, x, c) = (1, 1, 2, 0) is at ((1 * 2 + 1) * 4 + 2) * 3.
    assert_eq!(s.image.get(1, 2, 0), Some(f32::from(pixels[42])));
    assert_eq!(s.image.to_chw_tensor().data[4 + 2], f32::from(pixels[42]) / 255.0);
    assert!(ds.describe(1).ends_with("x.npy[1]"));
    let named = ds.with_class_names((0..5).map(|i| format!("c{i}")).collect()).unwrap();
    assert_eq!(named.class_names()[4], "c4");
}

#[test]
fn npy_f32_images_with_int32_and_u8_labels_and_rank3() {
    let tmp = tempfile::tempdir().unwrap();
    let (xi, yi) = (tmp.path().join("x.npy"), tmp.path().join("y.npy"));
    let pixels: Vec<f32> = (0..2 * 3 * 3).map(|i| i as f32 * 0.25 - 1.0).collect();
    write_npy(&xi, &[2, 3, 3, 1], &pixels);
    write_npy(&yi, &[2], &[1i32, 0]);
    let ds = NpyDataset::open(&xi, &yi).unwrap();
    let s = ds.get(1).unwrap();
    assert_eq!(s.image.pixels(), &Pixels::F32(pixels[9..].to_vec()));
    // Floats go through ToTensor unscaled.
    assert_eq!(s.image.to_chw_tensor().data, pixels[9..].to_vec());

    write_npy(&xi, &[2, 3, 3], &[7u8; 18]);
    write_npy(&yi, &[2, 1], &[3u8, 1]);
    let ds = NpyDataset::open(&xi, &yi).unwrap();
    assert_eq!(ds.image_shape(), (3, 3, 1));
    assert_eq!(ds.labels(), &[3, 1]);
}

#[test]
fn npy_big_endian_floats_read_right() {
    let tmp = tempfile::tempdir().unwrap();
    let (xi, yi) = (tmp.path().join("x.npy"), tmp.path().join("y.npy"));
    let vals = [1.5f32, -2.0, 0.125, 3.0];
    let data: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
    std::fs::write(&xi, npy_bytes(">f4", false, &[1, 2, 2, 1], &data)).unwrap();
    std::fs::write(&yi, npy_bytes(">i8", false, &[1], &7i64.to_be_bytes())).unwrap();
    let ds = NpyDataset::open(&xi, &yi).unwrap();
    assert_eq!(ds.get(0).unwrap().image.pixels(), &Pixels::F32(vals.to_vec()));
    assert_eq!(ds.labels(), &[7]);
}

#[test]
fn npy_bad_inputs_name_file_and_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let (xi, yi) = (tmp.path().join("images.npy"), tmp.path().join("labels.npy"));
    write_npy(&yi, &[2], &[0i64, 1]);

    // float64 images.
    write_npy(&xi, &[2, 2, 2, 3], &[0.5f64; 24]);
    let msg = err_text(NpyDataset::open(&xi, &yi));
    assert!(msg.contains("images.npy") && msg.contains("<f8") && msg.contains("float32"), "{msg}");

    // Wrong rank (rank 2 is a table of features, one 1x1 image of F channels per row).
    write_npy(&xi, &[2, 3, 2, 2, 1], &[0u8; 24]);
    let msg = err_text(NpyDataset::open(&xi, &yi));
    assert!(msg.contains("images.npy") && msg.contains("[2, 3, 2, 2, 1]") && msg.contains("(N, F) features"), "{msg}");
    write_npy(&xi, &[2, 12], &[0u8; 24]);
    assert_eq!(NpyDataset::open(&xi, &yi).expect("a feature table").image_shape(), (1, 1, 12));

    // Labels count.
    write_npy(&xi, &[3, 2, 2, 1], &[0u8; 12]);
    let msg = err_text(NpyDataset::open(&xi, &yi));
    assert!(msg.contains("labels.npy has 2 labels") && msg.contains("images.npy has 3 images"), "{msg}");

    // Float labels.
    write_npy(&xi, &[2, 2, 2, 1], &[0u8; 8]);
    write_npy(&yi, &[2], &[0.0f32, 1.0]);
    let msg = err_text(NpyDataset::open(&xi, &yi));
    assert!(msg.contains("labels.npy") && msg.contains("<f4") && msg.contains("int64"), "{msg}");

    // Labels of rank 2 (N, 3).
    write_npy(&yi, &[2, 3], &[0i64; 6]);
    let msg = err_text(NpyDataset::open(&xi, &yi));
    assert!(msg.contains("labels.npy") && msg.contains("[2, 3]"), "{msg}");

    // Negative label.
    write_npy(&yi, &[2], &[0i32, -1]);
    let msg = err_text(NpyDataset::open(&xi, &yi));
    assert!(msg.contains("labels.npy") && msg.contains("entry 1") && msg.contains("-1"), "{msg}");

    // Truncated data.
    write_npy(&yi, &[2], &[0i64, 1]);
    let mut bytes = std::fs::read(&xi).unwrap();
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&xi, bytes).unwrap();
    let msg = err_text(NpyDataset::open(&xi, &yi));
    assert!(msg.contains("images.npy") && msg.contains("truncated") && msg.contains("needs 8"), "{msg}");

    // Not an npy file at all.
    std::fs::write(&xi, b"PK\x03\x04 zip, not npy").unwrap();
    let msg = err_text(NpyDataset::open(&xi, &yi));
    assert!(msg.contains("images.npy") && msg.contains("not a valid .npy"), "{msg}");

    // Fortran order.
    std::fs::write(&xi, npy_bytes("|u1", true, &[2, 2, 2, 1], &[0; 8])).unwrap();
    let msg = err_text(NpyDataset::open(&xi, &yi));
    assert!(msg.contains("images.npy") && msg.contains("Fortran"), "{msg}");

    // No images.
    std::fs::write(&xi, npy_bytes("|u1", false, &[0, 2, 2, 1], &[])).unwrap();
    let msg = err_text(NpyDataset::open(&xi, &yi));
    assert!(msg.contains("images.npy") && msg.contains("no images"), "{msg}");

    // Missing.
    let msg = err_text(NpyDataset::open(tmp.path().join("nope.npy"), &yi));
    assert!(msg.contains("nope.npy") && msg.contains("not found"), "{msg}");

    // Too few class names.
    write_npy(&xi, &[2, 2, 2, 1], &[0u8; 8]);
    let ds = NpyDataset::open(&xi, &yi).unwrap();
    let msg = err_text(ds.with_class_names(vec!["only".into()]));
    assert!(msg.contains("labels.npy") && msg.contains("entry 1"), "{msg}");
}

#[test]
fn subset_picks_samples() {
    let ds: Arc<dyn Dataset> = Arc::new(SyntheticImages::new(20, 3));
    let sub = Subset::new(Arc::clone(&ds), vec![5, 2, 19]).unwrap();
    assert_eq!(sub.len(), 3);
    assert_eq!(sub.get(1).unwrap(), ds.get(2).unwrap());
    assert!(Subset::new(Arc::clone(&ds), vec![20]).is_err());
    assert_eq!(Subset::first(ds, 100).len(), 20);
}

#[test]
fn open_dir_recognises_each_layout() {
    let (tmp, dir) = cifar_dir(true);
    let (ds, layout) = open_dir(tmp.path(), Split::Train).unwrap();
    assert_eq!((layout, ds.len()), (Layout::CifarBinary, 10));
    let (ds, layout) = open_dir(&dir, Split::Test).unwrap();
    assert_eq!((layout, ds.len()), (Layout::CifarBinary, 3));

    let (folder, _) = image_folder();
    let split_root = tempfile::tempdir().unwrap();
    std::fs::rename(folder.path(), split_root.path().join("val")).unwrap();
    let (ds, layout) = open_dir(split_root.path(), Split::Test).unwrap();
    assert_eq!((layout, ds.len(), ds.num_classes()), (Layout::ImageFolder, 4, 2));
    let msg = err_text(open_dir(split_root.path(), Split::Train));
    assert!(msg.contains("no train data") && msg.contains("train/<class>/") && msg.contains("x_train.npy"), "{msg}");

    let npy = tempfile::tempdir().unwrap();
    write_npy(&npy.path().join("x_train.npy"), &[2, 2, 2, 3], &[9u8; 24]);
    write_npy(&npy.path().join("y_train.npy"), &[2], &[1i64, 0]);
    let (ds, layout) = open_dir(npy.path(), Split::Train).unwrap();
    assert_eq!((layout, ds.len()), (Layout::Npy, 2));

    let msg = err_text(open_dir(npy.path().join("absent"), Split::Train));
    assert!(msg.contains("absent") && msg.contains("not found"), "{msg}");
}
