//! Per-sample transforms: `ToTensor`, `Normalize`, `RandomCrop`,
//! `RandomHorizontalFlip`, and a pipeline to chain them.

use std::fmt;
use std::sync::Arc;

use kiln_compiler::Tensor;

use super::error::DataError;
use super::rng::SampleRng;
use super::sample::{Image, Item, Pixels};

/// Why a transform could not be applied (the loader adds the sample).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TransformError(pub String);

impl fmt::Display for TransformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransformError {}

/// One step of per-sample preprocessing.
///
/// A random transform must draw from `rng` only, so that its result depends
/// on nothing but the loader's seed, the epoch and the sample's index. A
/// transform should draw the same number of values whatever the sample holds
/// where it can (then adding data does not shift other samples' draws).
pub trait Transform: Send + Sync + fmt::Debug {
    /// Short name for error messages, e.g. `"RandomCrop(32, padding=4)"`.
    fn name(&self) -> String;

    /// Transforms one sample.
    ///
    /// # Errors
    /// When the input is not something this transform takes.
    fn apply(&self, item: Item, rng: &mut SampleRng) -> Result<Item, TransformError>;

    /// Whether the step draws random numbers (augmentation), so that
    /// evaluation leaves it out ([`Transforms::for_evaluation`]).
    fn is_random(&self) -> bool {
        false
    }

    /// Whether this step turns an image into its `[C, H, W]` tensor exactly
    /// as the loader batches a left-over image ([`ToTensor`]), so the loader
    /// may write the image straight into its batch slot instead.
    fn is_to_tensor(&self) -> bool {
        false
    }

    /// Whether [`Transform::apply_in_place`] does this step's work: a
    /// deterministic step that keeps a tensor's shape (like [`Normalize`]).
    fn works_in_place(&self) -> bool {
        false
    }

    /// This step on a `[C, H, W]` tensor already written into its batch
    /// slot; only called when [`Transform::works_in_place`] says so. Saves
    /// a per-sample tensor and its copy into the batch.
    ///
    /// # Errors
    /// As [`Transform::apply`] on the same tensor.
    fn apply_in_place(&self, _shape: &[usize], _data: &mut [f32]) -> Result<(), TransformError> {
        Err(TransformError(format!("{} cannot run in place", self.name())))
    }
}

/// A sample after the steps that need their own storage: an image whose
/// remaining steps run in place once it is written into its batch slot, or
/// a finished tensor.
#[derive(Debug)]
pub(crate) enum Staged<'a> {
    /// Write with [`Image::write_chw`], then run these steps in place.
    Image(Image, &'a [Arc<dyn Transform>]),
    /// Copy as it is.
    Tensor(Tensor),
}

/// A chain of transforms applied in order, like torchvision's `Compose`.
///
/// Cheap to clone (the transforms are shared).
#[derive(Clone, Default, Debug)]
pub struct Transforms {
    steps: Vec<Arc<dyn Transform>>,
}

impl Transforms {
    /// No transforms: images are batched as [`ToTensor`] makes them.
    pub fn new() -> Transforms {
        Transforms::default()
    }

    /// This chain followed by `t`.
    #[must_use]
    pub fn then(mut self, t: impl Transform + 'static) -> Transforms {
        self.steps.push(Arc::new(t));
        self
    }

    /// Appends a shared transform.
    pub fn push(&mut self, t: Arc<dyn Transform>) {
        self.steps.push(t);
    }

    /// The transforms, in order.
    pub fn steps(&self) -> &[Arc<dyn Transform>] {
        &self.steps
    }

    /// Number of transforms.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// `ToTensor` then `Normalize(mean, std)`: the usual evaluation pipeline.
    ///
    /// # Errors
    /// As [`Normalize::new`].
    pub fn normalized(mean: &[f32], std: &[f32]) -> Result<Transforms, DataError> {
        Ok(Transforms::new().then(ToTensor).then(Normalize::new(mean, std)?))
    }

    /// `RandomCrop(size, padding)`, `RandomHorizontalFlip(0.5)`, `ToTensor`,
    /// `Normalize(mean, std)`: the usual CIFAR training augmentation
    /// (`size` 32, `padding` 4).
    ///
    /// # Errors
    /// As [`Normalize::new`].
    pub fn augmented(size: usize, padding: usize, mean: &[f32], std: &[f32]) -> Result<Transforms, DataError> {
        Ok(Transforms::new()
            .then(RandomCrop::new(size, padding))
            .then(RandomHorizontalFlip::new(0.5)?)
            .then(ToTensor)
            .then(Normalize::new(mean, std)?))
    }

    /// The chain without its random steps: what evaluation applies (as
    /// torchvision's test transform leaves out augmentation).
    pub fn for_evaluation(&self) -> Transforms {
        Transforms { steps: self.steps.iter().filter(|t| !t.is_random()).cloned().collect() }
    }

    /// Runs the chain on one item.
    ///
    /// # Errors
    /// The first failing transform's error, as `(name, error)`.
    pub fn apply(&self, mut item: Item, rng: &mut SampleRng) -> Result<Item, (String, TransformError)> {
        for t in &self.steps {
            item = t.apply(item, rng).map_err(|e| (t.name(), e))?;
        }
        Ok(item)
    }

    /// Runs the chain up to the point from which the rest can run in the
    /// batch slot: a `ToTensor` of an image followed only by in-place steps
    /// (the lecture's `ToTensor, Normalize`). The result equals
    /// [`Transforms::apply`]'s once the remaining steps have run.
    ///
    /// # Errors
    /// As [`Transforms::apply`].
    pub(crate) fn stage(&self, mut item: Item, rng: &mut SampleRng) -> Result<Staged<'_>, (String, TransformError)> {
        for (i, t) in self.steps.iter().enumerate() {
            let rest = &self.steps[i + 1..];
            if t.is_to_tensor()
                && rest.iter().all(|r| r.works_in_place())
                && let Item::Image(im) = item
            {
                return Ok(Staged::Image(im, rest));
            }
            item = t.apply(item, rng).map_err(|e| (t.name(), e))?;
        }
        Ok(match item {
            Item::Image(im) => Staged::Image(im, &[]),
            Item::Tensor(t) => Staged::Tensor(t),
        })
    }
}

/// HWC image to `[C, H, W]` `f32` tensor; bytes are divided by 255 (so land
/// in `[0, 1]`), floats are copied as they are. Like torchvision's
/// `ToTensor`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ToTensor;

impl Transform for ToTensor {
    fn name(&self) -> String {
        "ToTensor".into()
    }

    fn apply(&self, item: Item, _rng: &mut SampleRng) -> Result<Item, TransformError> {
        match item {
            Item::Image(im) => Ok(Item::Tensor(im.to_chw_tensor())),
            Item::Tensor(_) => {
                Err(TransformError("input is already a tensor; ToTensor appears twice in the pipeline".into()))
            }
        }
    }

    fn is_to_tensor(&self) -> bool {
        true
    }
}

/// `(x - mean[c]) / std[c]` for each channel `c` of a `[C, H, W]` tensor,
/// like torchvision's `Normalize`. Needs a tensor: put [`ToTensor`] first.
/// A single mean and std apply to every channel.
#[derive(Clone, PartialEq, Debug)]
pub struct Normalize {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    std: Vec<f32>,
}

impl Normalize {
    /// Per-channel `mean` and `std`.
    ///
    /// # Errors
    /// [`DataError::Config`] when the lengths differ or are 0, or a std is
    /// not a positive finite number, or a mean is not finite.
    pub fn new(mean: &[f32], std: &[f32]) -> Result<Normalize, DataError> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(DataError::Config(format!(
                "Normalize needs as many means as stds, at least one; got {} and {}",
                mean.len(),
                std.len()
            )));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(DataError::Config(format!("Normalize std {s} is not a positive number")));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(DataError::Config(format!("Normalize mean {m} is not finite")));
        }
        Ok(Normalize { mean: mean.to_vec(), inv_std: std.iter().map(|s| 1.0 / s).collect(), std: std.to_vec() })
    }

    /// The means.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// The standard deviations.
    pub fn std(&self) -> &[f32] {
        &self.std
    }
}

impl Transform for Normalize {
    fn name(&self) -> String {
        format!("Normalize(mean={:?}, std={:?})", self.mean, self.std)
    }

    fn apply(&self, item: Item, _rng: &mut SampleRng) -> Result<Item, TransformError> {
        let mut t = match item {
            Item::Tensor(t) => t,
            Item::Image(_) => {
                return Err(TransformError(
                    "input is an image; Normalize needs a tensor, so put ToTensor before it".into(),
                ));
            }
        };
        self.apply_in_place(&t.shape, &mut t.data)?;
        Ok(Item::Tensor(t))
    }

    fn works_in_place(&self) -> bool {
        true
    }

    fn apply_in_place(&self, shape: &[usize], data: &mut [f32]) -> Result<(), TransformError> {
        let [c, h, w] = shape[..] else {
            return Err(TransformError(format!("expected a [C, H, W] tensor, got {shape:?}")));
        };
        if self.mean.len() != 1 && self.mean.len() != c {
            return Err(TransformError(format!(
                "the image has {c} channels but {} means and stds were given",
                self.mean.len()
            )));
        }
        let plane = h * w;
        if plane > 0 {
            for (ch, values) in data.chunks_exact_mut(plane).enumerate() {
                let k = if self.mean.len() == 1 { 0 } else { ch };
                let (m, s) = (self.mean[k], self.inv_std[k]);
                for v in values {
                    *v = (*v - m) * s;
                }
            }
        }
        Ok(())
    }
}

/// Pads each side with `padding` zeros, then cuts a `height x width` window
/// at a random place, like torchvision's `RandomCrop(size, padding)` (fill
/// 0, constant padding). Works on images and on `[C, H, W]` tensors.
///
/// Draws two numbers: the top row, then the left column.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RandomCrop {
    height: usize,
    width: usize,
    padding: usize,
}

impl RandomCrop {
    /// A square `size x size` crop after `padding` zeros on each side.
    pub fn new(size: usize, padding: usize) -> RandomCrop {
        RandomCrop { height: size, width: size, padding }
    }

    /// A `height x width` crop after `padding` zeros on each side.
    pub fn rect(height: usize, width: usize, padding: usize) -> RandomCrop {
        RandomCrop { height, width, padding }
    }

    /// Picks the window: `(top, left)` in padded coordinates.
    fn window(&self, h: usize, w: usize, rng: &mut SampleRng) -> Result<(usize, usize), TransformError> {
        let (ph, pw) = (h + 2 * self.padding, w + 2 * self.padding);
        let top = rng.below((ph + 1).saturating_sub(self.height));
        let left = rng.below((pw + 1).saturating_sub(self.width));
        if self.height > ph || self.width > pw || self.height == 0 || self.width == 0 {
            return Err(TransformError(format!(
                "cannot crop {}x{} from a {h}x{w} image padded by {} to {ph}x{pw}",
                self.height, self.width, self.padding
            )));
        }
        Ok((top, left))
    }
}

/// Copies a window of a padded plane-or-interleaved buffer. `px` is the
/// number of values per pixel in `src` rows (channels for HWC, 1 for a CHW
/// plane).
#[allow(clippy::too_many_arguments)]
fn crop_rows<T: Copy + Default>(
    src: &[T],
    h: usize,
    w: usize,
    px: usize,
    pad: usize,
    top: usize,
    left: usize,
    out_h: usize,
    out_w: usize,
    dst: &mut Vec<T>,
) {
    let zero_row = out_w * px;
    for y in 0..out_h {
        let sy = (top + y).wrapping_sub(pad);
        if sy >= h {
            dst.extend(std::iter::repeat_n(T::default(), zero_row));
            continue;
        }
        // Columns [left - pad, left - pad + out_w) of the source, clipped.
        let x0 = left as isize - pad as isize;
        let lo = x0.max(0) as usize;
        let hi = ((x0 + out_w as isize).max(0) as usize).min(w);
        let before = (lo as isize - x0) as usize;
        dst.extend(std::iter::repeat_n(T::default(), before.min(out_w) * px));
        if hi > lo {
            dst.extend_from_slice(&src[(sy * w + lo) * px..(sy * w + hi) * px]);
        }
        let done = before.min(out_w) + hi.saturating_sub(lo);
        dst.extend(std::iter::repeat_n(T::default(), (out_w - done) * px));
    }
}

impl Transform for RandomCrop {
    fn is_random(&self) -> bool {
        true
    }

    fn name(&self) -> String {
        format!("RandomCrop({}x{}, padding={})", self.height, self.width, self.padding)
    }

    fn apply(&self, item: Item, rng: &mut SampleRng) -> Result<Item, TransformError> {
        let (oh, ow, pad) = (self.height, self.width, self.padding);
        match item {
            Item::Image(im) => {
                let (h, w, c) = (im.height(), im.width(), im.channels());
                let (top, left) = self.window(h, w, rng)?;
                let pixels = match im.pixels() {
                    Pixels::U8(src) => {
                        let mut dst = Vec::with_capacity(oh * ow * c);
                        crop_rows(src, h, w, c, pad, top, left, oh, ow, &mut dst);
                        Pixels::U8(dst)
                    }
                    Pixels::F32(src) => {
                        let mut dst = Vec::with_capacity(oh * ow * c);
                        crop_rows(src, h, w, c, pad, top, left, oh, ow, &mut dst);
                        Pixels::F32(dst)
                    }
                };
                Image::new(oh, ow, c, pixels)
                    .map(Item::Image)
                    .ok_or_else(|| TransformError("internal: crop size".into()))
            }
            Item::Tensor(t) => {
                let [c, h, w] = t.shape[..] else {
                    return Err(TransformError(format!("expected a [C, H, W] tensor, got {:?}", t.shape)));
                };
                let (top, left) = self.window(h, w, rng)?;
                let mut dst = Vec::with_capacity(c * oh * ow);
                if h * w > 0 {
                    for plane in t.data.chunks_exact(h * w) {
                        crop_rows(plane, h, w, 1, pad, top, left, oh, ow, &mut dst);
                    }
                }
                Ok(Item::Tensor(Tensor { shape: vec![c, oh, ow], data: dst }))
            }
        }
    }
}

/// Mirrors the sample left to right with probability `p`, like
/// torchvision's `RandomHorizontalFlip(p)`. Works on images and on
/// `[C, H, W]` tensors. Draws one number.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct RandomHorizontalFlip {
    p: f32,
}

impl RandomHorizontalFlip {
    /// Flips with probability `p`.
    ///
    /// # Errors
    /// [`DataError::Config`] when `p` is not in `[0, 1]`.
    pub fn new(p: f32) -> Result<RandomHorizontalFlip, DataError> {
        if !(0.0..=1.0).contains(&p) {
            return Err(DataError::Config(format!("RandomHorizontalFlip probability {p} is not in [0, 1]")));
        }
        Ok(RandomHorizontalFlip { p })
    }

    /// The flip probability.
    pub fn p(&self) -> f32 {
        self.p
    }
}

/// Reverses the order of `px`-value pixels within each row of `w` pixels.
fn flip_rows<T>(data: &mut [T], w: usize, px: usize) {
    if w == 0 || px == 0 {
        return;
    }
    for row in data.chunks_exact_mut(w * px) {
        if px == 1 {
            row.reverse();
        } else {
            for x in 0..w / 2 {
                let (a, b) = row.split_at_mut((w - 1 - x) * px);
                a[x * px..(x + 1) * px].swap_with_slice(&mut b[..px]);
            }
        }
    }
}

impl Transform for RandomHorizontalFlip {
    fn is_random(&self) -> bool {
        true
    }

    fn name(&self) -> String {
        format!("RandomHorizontalFlip(p={})", self.p)
    }

    fn apply(&self, item: Item, rng: &mut SampleRng) -> Result<Item, TransformError> {
        if !rng.bernoulli(self.p) {
            return Ok(item);
        }
        match item {
            Item::Image(mut im) => {
                let (w, c) = (im.width(), im.channels());
                match im.pixels_mut() {
                    super::sample::PixelsMut::U8(v) => flip_rows(v, w, c),
                    super::sample::PixelsMut::F32(v) => flip_rows(v, w, c),
                }
                Ok(Item::Image(im))
            }
            Item::Tensor(mut t) => {
                let [_, _, w] = t.shape[..] else {
                    return Err(TransformError(format!("expected a [C, H, W] tensor, got {:?}", t.shape)));
                };
                flip_rows(&mut t.data, w, 1);
                Ok(Item::Tensor(t))
            }
        }
    }
}
