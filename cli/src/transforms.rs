//! The data transforms `kiln train` and `kiln eval` apply: normalisation
//! (`--normalize`, else the lecture's 0.5 / 0.5) and, for training,
//! augmentation (`--augment crop=4,flip`).

use crate::model::CliError;
use kiln::compiler::Graph;
use kiln::runtime::data::{Normalize, RandomCrop, RandomHorizontalFlip, ToTensor, Transforms};

/// Per-channel mean and standard deviation.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    mean: Vec<f32>,
    std: Vec<f32>,
}

/// `M,S` (every channel) or `m1,..,mC,s1,..,sC`, or `cifar10` (its per-channel statistics).
pub fn parse_normalize(text: &str) -> Result<Normalization, String> {
    if text == "cifar10" {
        let (mean, std) = (kiln::runtime::data::CIFAR10_MEAN, kiln::runtime::data::CIFAR10_STD);
        return Ok(Normalization { mean: mean.to_vec(), std: std.to_vec() });
    }
    let values: Vec<f32> = text
        .split(',')
        .map(|v| v.trim().parse::<f32>().map_err(|_| format!("expected numbers `MEAN,STD`, got `{v}` in `{text}`")))
        .collect::<Result<_, _>>()?;
    if !values.len().is_multiple_of(2) || values.is_empty() {
        return Err(format!(
            "expected `MEAN,STD` or a mean and a std per channel (an even count), got {} numbers",
            values.len()
        ));
    }
    let (mean, std) = values.split_at(values.len() / 2);
    if let Some(s) = std.iter().find(|s| **s <= 0.0 || !s.is_finite()) {
        return Err(format!("standard deviations must be positive, got {s}"));
    }
    Ok(Normalization { mean: mean.to_vec(), std: std.to_vec() })
}

/// Training augmentation: a random crop after zero padding, a random flip.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Augment {
    crop_padding: Option<usize>,
    flip: Option<f32>,
}

/// `crop=PAD` and/or `flip[=P]`, comma-separated (`none` for neither).
pub fn parse_augment(text: &str) -> Result<Augment, String> {
    let mut a = Augment::default();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty() && *p != "none") {
        match part.split_once('=') {
            Some(("crop", pad)) => {
                a.crop_padding = Some(pad.parse().map_err(|_| format!("crop takes a padding in pixels, got `{pad}`"))?);
            }
            None if part == "flip" => a.flip = Some(0.5),
            Some(("flip", p)) => {
                let p: f32 = p.parse().map_err(|_| format!("flip takes a probability, got `{p}`"))?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(format!("flip's probability must be in [0, 1], got {p}"));
                }
                a.flip = Some(p);
            }
            _ => return Err(format!("expected `crop=PAD`, `flip` or `flip=P`, got `{part}`")),
        }
    }
    Ok(a)
}

/// The model's input: images `[N, C, H, W]` as `(C, Some((H, W)))`, or
/// feature vectors `[N, F]` as `(F, None)`.
fn model_input(forward: &Graph) -> Result<(usize, Option<(usize, usize)>), CliError> {
    match forward.inputs.first().map(|&i| forward.node(i).shape.at_batch(1)).as_deref() {
        Some(&[_, c, h, w]) => Ok((c, Some((h, w)))),
        Some(&[_, f]) => Ok((f, None)),
        _ => Err(CliError::Usage(format!(
            "model {} takes neither images [N, C, H, W] nor feature vectors [N, F]",
            forward.name
        ))),
    }
}

/// The transforms for `forward`: augmentation (training only), `ToTensor`,
/// then the normalisation, checked against the model's channels. Feature
/// vectors are taken as they are unless `--normalize` is given (per feature).
pub fn transforms_for(
    forward: &Graph,
    normalize: Option<&Normalization>,
    augment: Augment,
) -> Result<Transforms, CliError> {
    let (c, image) = model_input(forward)?;
    let Some((h, w)) = image else {
        if augment != Augment::default() {
            return Err(CliError::Usage(format!(
                "--augment crops and flips images; model {} takes features",
                forward.name
            )));
        }
        if normalize.is_none() {
            return Ok(Transforms::new().then(ToTensor));
        }
        let mut t = Transforms::new();
        t = t.then(ToTensor);
        return Ok(t.then(normalization(forward, normalize, c)?));
    };
    let mut t = Transforms::new();
    if let Some(padding) = augment.crop_padding {
        t = t.then(RandomCrop::rect(h, w, padding));
    }
    if let Some(p) = augment.flip {
        t = t.then(RandomHorizontalFlip::new(p).map_err(|e| CliError::Usage(e.to_string()))?);
    }
    Ok(t.then(ToTensor).then(normalization(forward, normalize, c)?))
}

/// `Normalize` over `c` channels (0.5 / 0.5 without `--normalize`).
fn normalization(forward: &Graph, normalize: Option<&Normalization>, c: usize) -> Result<Normalize, CliError> {
    let (mean, std) = match normalize {
        None => (vec![0.5; c], vec![0.5; c]),
        Some(n) if n.mean.len() == 1 => (vec![n.mean[0]; c], vec![n.std[0]; c]),
        Some(n) if n.mean.len() == c => (n.mean.clone(), n.std.clone()),
        Some(n) => {
            return Err(CliError::Usage(format!(
                "--normalize gives {} channels, but model {} takes {c}",
                n.mean.len(),
                forward.name
            )));
        }
    };
    Normalize::new(&mean, &std).map_err(|e| CliError::Usage(e.to_string()))
}
