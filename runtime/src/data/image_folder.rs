//! A folder of class subfolders of images, like torchvision's `ImageFolder`.

use std::path::{Path, PathBuf};

use super::dataset::{Dataset, check_index};
use super::error::DataError;
use super::sample::{Image, Sample};

/// The file extensions [`ImageFolder`] picks up (compared without case).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The channels images are converted to when decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum ColorMode {
    /// Three channels, red, green, blue (torchvision's default loader does
    /// `convert("RGB")` too). Grey images are repeated over the channels and
    /// alpha is dropped.
    #[default]
    Rgb,
    /// One luminance channel.
    Gray,
}

impl ColorMode {
    /// Number of channels.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Rgb => 3,
            ColorMode::Gray => 1,
        }
    }
}

/// How an [`ImageFolder`] is opened.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ImageFolderOptions {
    /// The channels to decode to.
    pub color: ColorMode,
    /// Decode every image when opening and keep them in memory, checking
    /// that all have one size (right for small images such as CIFAR's: each
    /// epoch then costs no decoding). Otherwise each `get` reads and decodes
    /// its file, and images of different sizes are caught when batched.
    pub preload: bool,
}

/// `root/<class>/<image>` folders, like torchvision's `ImageFolder`: the
/// classes are the subfolder names sorted, label `i` is the `i`-th of them,
/// and every `.png`, `.jpg` or `.jpeg` file in a class folder (sorted by
/// name, no deeper) is a sample. Other files and names starting with `.` are
/// skipped.
#[derive(Clone)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<(PathBuf, usize)>,
    color: ColorMode,
    /// Decoded images, all of one size, when preloaded.
    cache: Option<Preloaded>,
}

#[derive(Clone)]
struct Preloaded {
    height: usize,
    width: usize,
    data: Vec<u8>,
}

impl std::fmt::Debug for ImageFolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageFolder")
            .field("root", &self.root)
            .field("classes", &self.classes)
            .field("len", &self.samples.len())
            .field("preloaded", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl ImageFolder {
    /// Scans `root` for class folders of images, decoding lazily, in RGB.
    ///
    /// # Errors
    /// A missing `root`; a `root` without class folders; a class folder
    /// without images; an unreadable folder.
    pub fn open(root: impl AsRef<Path>) -> Result<ImageFolder, DataError> {
        ImageFolder::open_with(root, ImageFolderOptions::default())
    }

    /// Scans `root` for class folders of images, as `options` say.
    ///
    /// # Errors
    /// As [`ImageFolder::open`], and, when preloading, as
    /// [`ImageFolder::preload`].
    pub fn open_with(root: impl AsRef<Path>, options: ImageFolderOptions) -> Result<ImageFolder, DataError> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(DataError::NotFound {
                path: root,
                what: "expected a folder of class subfolders of images".into(),
            });
        }
        let mut classes = Vec::new();
        for (name, path) in list_dir(&root)? {
            if path.is_dir() {
                classes.push(name);
            }
        }
        classes.sort();
        if classes.is_empty() {
            return Err(DataError::Empty {
                path: root,
                message: "has no class subfolders; expected root/<class>/<image>.png|jpg".into(),
            });
        }
        let mut samples = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            let mut files: Vec<PathBuf> = list_dir(&dir)?
                .into_iter()
                .filter(|(_, p)| p.is_file() && has_image_extension(p))
                .map(|(_, p)| p)
                .collect();
            if files.is_empty() {
                return Err(DataError::Empty {
                    path: dir,
                    message: format!("class folder has no images (looked for {})", IMAGE_EXTENSIONS.join(", ")),
                });
            }
            files.sort();
            samples.extend(files.into_iter().map(|p| (p, label)));
        }
        let folder = ImageFolder { root, classes, samples, color: options.color, cache: None };
        if options.preload { folder.preload() } else { Ok(folder) }
    }

    /// Decodes every image now, on all cores, and keeps them in memory as
    /// bytes.
    ///
    /// # Errors
    /// The first (in sample order) image that cannot be read or decoded,
    /// naming its path; [`DataError::SizeMismatch`] naming the first image
    /// whose size differs from the first image's.
    pub fn preload(mut self) -> Result<ImageFolder, DataError> {
        if self.cache.is_some() {
            return Ok(self);
        }
        let first = decode(&self.samples[0].0, self.color)?;
        let (height, width, ch) = (first.height(), first.width(), first.channels());
        let image_len = height * width * ch;
        let mut data = vec![0u8; image_len * self.samples.len()];
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = self.samples.len().div_ceil(threads).max(1);
        let color = self.color;
        let first_path = &self.samples[0].0;
        let results: Vec<Result<(), (usize, DataError)>> = std::thread::scope(|s| {
            let handles: Vec<_> = data
                .chunks_mut(per * image_len)
                .zip(self.samples.chunks(per))
                .enumerate()
                .map(|(t, (out, files))| {
                    s.spawn(move || {
                        for (k, ((path, _), dst)) in files.iter().zip(out.chunks_exact_mut(image_len)).enumerate() {
                            let at = t * per + k;
                            let im = decode(path, color).map_err(|e| (at, e))?;
                            if (im.height(), im.width()) != (height, width) {
                                return Err((
                                    at,
                                    DataError::SizeMismatch {
                                        path: path.clone(),
                                        found: im.size_string(),
                                        first: first_path.clone(),
                                        expected: format!("{height}x{width}x{ch}"),
                                    },
                                ));
                            }
                            if let super::sample::Pixels::U8(px) = im.pixels() {
                                dst.copy_from_slice(px);
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| Err((0, DataError::Config("an image decoding thread panicked".into()))))
                })
                .collect()
        });
        // Report the earliest failing sample, whichever thread found it.
        if let Some((_, e)) = results.into_iter().filter_map(Result::err).min_by_key(|(at, _)| *at) {
            return Err(e);
        }
        self.cache = Some(Preloaded { height, width, data });
        Ok(self)
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every sample's file and label, in index order.
    pub fn samples(&self) -> &[(PathBuf, usize)] {
        &self.samples
    }

    /// Whether the images are decoded and held in memory.
    pub fn is_preloaded(&self) -> bool {
        self.cache.is_some()
    }
}

fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let read = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, "expected a folder", e))?;
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| DataError::io(dir, "expected a folder", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        out.push((name, entry.path()));
    }
    Ok(out)
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Reads and decodes one image file (format found from its content).
#[cfg(not(feature = "images"))]
pub fn decode(path: &Path, _color: ColorMode) -> Result<Image, DataError> {
    Err(DataError::Decode {
        path: path.to_path_buf(),
        message: "kiln-runtime was built without its `images` feature, so it cannot decode PNG or JPEG files".into(),
    })
}

/// Reads and decodes one image file (format found from its content).
#[cfg(feature = "images")]
pub fn decode(path: &Path, color: ColorMode) -> Result<Image, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, "expected an image file", e))?;
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(path, "expected an image file", e))?;
    if reader.format().is_none() {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            message: "not a PNG or JPEG file (unrecognised content)".into(),
        });
    }
    let img = reader.decode().map_err(|e| DataError::Decode { path: path.to_path_buf(), message: e.to_string() })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data = match color {
        ColorMode::Rgb => img.into_rgb8().into_raw(),
        ColorMode::Gray => img.into_luma8().into_raw(),
    };
    Image::from_u8(h, w, color.channels(), data).ok_or_else(|| DataError::Decode {
        path: path.to_path_buf(),
        message: "decoder returned a buffer of the wrong size".into(),
    })
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn get(&self, index: usize) -> Result<Sample, DataError> {
        check_index(index, self.samples.len())?;
        let (path, label) = &self.samples[index];
        let image = match &self.cache {
            Some(c) => {
                let ch = self.color.channels();
                let n = c.height * c.width * ch;
                Image::from_u8(c.height, c.width, ch, c.data[index * n..(index + 1) * n].to_vec())
                    .ok_or_else(|| DataError::Config("internal: preloaded image size".into()))?
            }
            None => decode(path, self.color)?,
        };
        Ok(Sample { image, label: *label })
    }

    fn class_names(&self) -> &[String] {
        &self.classes
    }

    fn describe(&self, index: usize) -> String {
        match self.samples.get(index) {
            Some((p, _)) => p.display().to_string(),
            None => format!("sample {index} (out of range)"),
        }
    }
}
