//! What a data set hands out: compact images with labels, and the values
//! transforms pass along.

use kiln_compiler::Tensor;

/// `v / 255` for every byte `v`, exactly as a division gives it (as
/// torchvision's `ToTensor` computes it), without dividing per pixel.
static U8_TO_UNIT: [f32; 256] = {
    let mut table = [0.0; 256];
    let mut v = 0;
    while v < 256 {
        table[v] = v as f32 / 255.0;
        v += 1;
    }
    table
};

/// Pixel storage of an [`Image`], in height-width-channel order.
#[derive(Clone, PartialEq, Debug)]
pub enum Pixels {
    /// Bytes, 0 to 255 (what image files and CIFAR hold).
    U8(Vec<u8>),
    /// Floats, taken as they are (what a float32 `.npy` file holds).
    F32(Vec<f32>),
}

impl Pixels {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Pixels::U8(v) => v.len(),
            Pixels::F32(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An image in height-width-channel (HWC) order, as image files, CIFAR and
/// numpy arrays keep them: row `y`, column `x`, channel `c` is at
/// `(y * width + x) * channels + c`.
///
/// Images stay compact (one byte a value for 8-bit data) until
/// [`ToTensor`](super::ToTensor) or batching turns them into `f32`.
#[derive(Clone, PartialEq, Debug)]
pub struct Image {
    height: usize,
    width: usize,
    channels: usize,
    pixels: Pixels,
}

impl Image {
    /// An image from its parts; `None` when `pixels` does not hold
    /// `height * width * channels` values.
    pub fn new(height: usize, width: usize, channels: usize, pixels: Pixels) -> Option<Image> {
        let n = height.checked_mul(width)?.checked_mul(channels)?;
        (pixels.len() == n).then_some(Image { height, width, channels, pixels })
    }

    /// An 8-bit image from HWC bytes; `None` when the length is wrong.
    pub fn from_u8(height: usize, width: usize, channels: usize, data: Vec<u8>) -> Option<Image> {
        Image::new(height, width, channels, Pixels::U8(data))
    }

    /// A float image from HWC values; `None` when the length is wrong.
    pub fn from_f32(height: usize, width: usize, channels: usize, data: Vec<f32>) -> Option<Image> {
        Image::new(height, width, channels, Pixels::F32(data))
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of channels (3 for RGB).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The HWC pixel values.
    pub fn pixels(&self) -> &Pixels {
        &self.pixels
    }

    /// Mutable access to the HWC pixel values (their number cannot change).
    pub fn pixels_mut(&mut self) -> PixelsMut<'_> {
        match &mut self.pixels {
            Pixels::U8(v) => PixelsMut::U8(v),
            Pixels::F32(v) => PixelsMut::F32(v),
        }
    }

    /// The pixel storage, giving up the image.
    pub fn into_pixels(self) -> Pixels {
        self.pixels
    }

    /// `"HxWxC"`, for messages.
    pub fn size_string(&self) -> String {
        format!("{}x{}x{}", self.height, self.width, self.channels)
    }

    /// The value at row `y`, column `x`, channel `c` as `f32` (bytes are not
    /// scaled); `None` outside the image.
    pub fn get(&self, y: usize, x: usize, c: usize) -> Option<f32> {
        if y >= self.height || x >= self.width || c >= self.channels {
            return None;
        }
        let i = (y * self.width + x) * self.channels + c;
        Some(match &self.pixels {
            Pixels::U8(v) => f32::from(v[i]),
            Pixels::F32(v) => v[i],
        })
    }

    /// Writes the image into `out` in channel-height-width (CHW) order, as
    /// [`ToTensor`](super::ToTensor) does: bytes are divided by 255, floats
    /// are copied.
    ///
    /// # Panics
    /// When `out` does not hold exactly `height * width * channels` values
    /// (a caller's mistake, not a data problem).
    pub fn write_chw(&self, out: &mut [f32]) {
        let (h, w, ch) = (self.height, self.width, self.channels);
        assert_eq!(out.len(), h * w * ch, "write_chw: output length does not match the image");
        let plane = h * w;
        if plane == 0 {
            return;
        }
        match &self.pixels {
            Pixels::U8(v) => {
                let lut = &U8_TO_UNIT;
                if ch == 1 {
                    for (o, &p) in out.iter_mut().zip(v) {
                        *o = lut[usize::from(p)];
                    }
                    return;
                }
                // One output plane at a time: sequential writes, no bounds checks.
                for (c, dst) in out.chunks_exact_mut(plane).enumerate() {
                    for (o, px) in dst.iter_mut().zip(v.chunks_exact(ch)) {
                        *o = lut[usize::from(px[c])];
                    }
                }
            }
            Pixels::F32(v) => {
                for (c, dst) in out.chunks_exact_mut(plane).enumerate() {
                    for (o, px) in dst.iter_mut().zip(v.chunks_exact(ch)) {
                        *o = px[c];
                    }
                }
            }
        }
    }

    /// The image as a `[C, H, W]` tensor, as [`ToTensor`](super::ToTensor)
    /// makes it.
    pub fn to_chw_tensor(&self) -> Tensor {
        let mut data = vec![0.0; self.pixels.len()];
        self.write_chw(&mut data);
        Tensor { shape: vec![self.channels, self.height, self.width], data }
    }
}

/// Mutable view of an image's pixel values.
#[derive(Debug)]
pub enum PixelsMut<'a> {
    /// Bytes.
    U8(&'a mut [u8]),
    /// Floats.
    F32(&'a mut [f32]),
}

/// One example of a data set: an image and its class index.
#[derive(Clone, PartialEq, Debug)]
pub struct Sample {
    /// The image, HWC.
    pub image: Image,
    /// The class index, `0..num_classes`.
    pub label: usize,
}

/// The value a [`Transform`](super::Transform) takes and returns: still an
/// image (HWC, compact) or already a tensor (CHW `f32`, after
/// [`ToTensor`](super::ToTensor)).
#[derive(Clone, PartialEq, Debug)]
pub enum Item {
    /// An HWC image.
    Image(Image),
    /// A `[C, H, W]` tensor.
    Tensor(Tensor),
}

impl Item {
    /// The shape the item will have in a batch: `[C, H, W]` for an image,
    /// the tensor's shape otherwise.
    pub fn batch_shape(&self) -> Vec<usize> {
        match self {
            Item::Image(im) => vec![im.channels, im.height, im.width],
            Item::Tensor(t) => t.shape.clone(),
        }
    }
}
