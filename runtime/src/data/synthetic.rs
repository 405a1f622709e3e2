//! A generated image-classification data set that needs no files.

use super::dataset::{Dataset, check_index};
use super::error::DataError;
use super::rng::{Purpose, SampleRng};
use super::sample::{Image, Sample};

/// Ten classes of 32x32 RGB images, made on demand and deterministic from a
/// seed: what kiln trains on when no data folder is given.
///
/// Class `c` is a pattern of stripes of its own colour (hue `36 * c`
/// degrees) at its own angle (`((3 * c) % 10) * 18` degrees) and stripe
/// period, on a grey background. Each sample jitters the hue, the angle, the
/// phase, the period, the contrast and the background, and adds per-pixel
/// noise, so neither one pixel nor the mean colour alone gives the class
/// away reliably, but a small CNN learns it well above chance. Sample `i`
/// has label `i % 10`, so the classes are balanced.
///
/// Use different seeds for a training and a test set.
#[derive(Clone, Debug)]
pub struct SyntheticImages {
    len: usize,
    seed: u64,
    classes: Vec<String>,
}

/// Names of the ten synthetic classes: the colour and the stripe angle.
const CLASS_NAMES: [&str; 10] = [
    "red-0",
    "orange-54",
    "lime-108",
    "green-162",
    "spring-36",
    "cyan-90",
    "azure-144",
    "blue-18",
    "violet-72",
    "rose-126",
];

impl SyntheticImages {
    /// Number of classes.
    pub const NUM_CLASSES: usize = 10;
    /// Image side in pixels.
    pub const SIDE: usize = 32;

    /// `len` samples generated from `seed`.
    pub fn new(len: usize, seed: u64) -> SyntheticImages {
        SyntheticImages {
            len,
            seed,
            classes: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Draws sample `index` (without the bounds check).
    fn generate(&self, index: usize) -> Option<Image> {
        const S: usize = SyntheticImages::SIDE;
        let class = index % Self::NUM_CLASSES;
        let mut rng = SampleRng::keyed(self.seed, Purpose::Synthetic, 0, index as u64);
        let hue = 36.0 * class as f32 + rng.uniform(-14.0, 14.0);
        let angle = (((3 * class) % 10) as f32 * 18.0 + rng.uniform(-6.0, 6.0)).to_radians();
        let period = 5.0 + (class % 3) as f32 * 2.5 + rng.uniform(-0.8, 0.8);
        let phase = rng.uniform(0.0, std::f32::consts::TAU);
        let contrast = rng.uniform(0.45, 0.8);
        let background = rng.uniform(0.15, 0.45);
        let colour = hsv_to_rgb(hue, rng.uniform(0.6, 0.95), 1.0);
        let (dx, dy) = (angle.cos(), angle.sin());
        let k = std::f32::consts::TAU / period;
        let mut data = Vec::with_capacity(S * S * 3);
        for y in 0..S {
            for x in 0..S {
                let t = 0.5 + 0.5 * ((x as f32 * dx + y as f32 * dy) * k + phase).sin();
                for &c in &colour {
                    let noise = rng.uniform(-0.12, 0.12);
                    let v = background * (1.0 - contrast * t) + contrast * t * c + noise;
                    data.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
                }
            }
        }
        Image::from_u8(S, S, 3, data)
    }
}

/// Hue in degrees, saturation and value in `[0, 1]`, to RGB in `[0, 1]`.
fn hsv_to_rgb(hue: f32, s: f32, v: f32) -> [f32; 3] {
    let h = hue.rem_euclid(360.0) / 60.0;
    let c = v * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

impl Dataset for SyntheticImages {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize) -> Result<Sample, DataError> {
        check_index(index, self.len)?;
        let image = self
            .generate(index)
            .ok_or_else(|| DataError::Config("internal: synthetic image size".into()))?;
        Ok(Sample {
            image,
            label: index % Self::NUM_CLASSES,
        })
    }

    fn class_names(&self) -> &[String] {
        &self.classes
    }

    fn describe(&self, index: usize) -> String {
        format!("synthetic sample {index} (seed {})", self.seed)
    }
}
