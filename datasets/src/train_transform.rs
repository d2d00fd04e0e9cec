//! Training-time transforms: random resized crop or squish, horizontal flip, Cutout and
//! RandAugment, all drawn from a seeded generator so a run can be reproduced.

use image::{Rgb, RgbImage};
use rand::Rng;
use rand::rngs::StdRng;

use crate::error::Result;
use crate::eval_transform::{resize_region, to_chw_floats};
use crate::preprocess_config::{PreprocessConfig, ResizeMode};
use crate::rand_augment::RandAugment;

/// How the training crop is taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrainCrop {
    /// torchvision's `RandomResizedCrop(scale, ratio)`: a random area fraction and aspect ratio.
    RandomResized {
        /// Area fraction range (timm: 0.08–1).
        scale: (f32, f32),
        /// Aspect ratio range (timm: 3/4–4/3).
        ratio: (f32, f32),
    },
    /// Resize the whole image to the input size (the ASL multi-label recipe).
    Squish,
}

/// A training transform; [`TrainTransform::apply`] turns a decoded image into CHW floats.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainTransform {
    /// Output size, interpolation and normalisation.
    pub output: PreprocessConfig,
    /// Crop policy.
    pub crop: TrainCrop,
    /// Probability of a horizontal flip.
    pub hflip: f32,
    /// Cutout: a box of this fraction of each side, filled with a random colour (ASL: 0.5).
    pub cutout: Option<f32>,
    /// RandAugment, applied after cropping.
    pub rand_augment: Option<RandAugment>,
}

impl TrainTransform {
    /// timm's ImageNet training recipe core: random resized crop (0.08–1, 3/4–4/3), flip 0.5,
    /// RandAugment m9-mstd0.5.
    pub fn imagenet(size: usize) -> Self {
        Self {
            output: PreprocessConfig::imagenet_eval(size),
            crop: TrainCrop::RandomResized {
                scale: (0.08, 1.0),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
            },
            hflip: 0.5,
            cutout: None,
            rand_augment: Some(RandAugment::default()),
        }
    }

    /// The ASL / ML-Decoder multi-label recipe: squish to `size`, Cutout 0.5, RandAugment.
    pub fn multilabel(size: usize) -> Self {
        Self {
            output: PreprocessConfig::multilabel(size),
            crop: TrainCrop::Squish,
            hflip: 0.0,
            cutout: Some(0.5),
            rand_augment: Some(RandAugment::default()),
        }
    }

    /// Crops, flips and augments `image` to the output size (RGB8).
    pub fn apply_image(&self, image: &RgbImage, rng: &mut StdRng) -> Result<RgbImage> {
        let (w, h) = (self.output.width, self.output.height);
        let filter = self.output.interpolation;
        let mut out = match self.crop {
            TrainCrop::Squish => resize_region(image, None, w, h, filter)?,
            TrainCrop::RandomResized { scale, ratio } => {
                let region = random_resized_crop(image.width(), image.height(), scale, ratio, rng);
                resize_region(image, Some(region), w, h, filter)?
            }
        };
        if self.hflip > 0.0 && rng.random::<f32>() < self.hflip {
            image::imageops::flip_horizontal_in_place(&mut out);
        }
        if let Some(factor) = self.cutout {
            cutout(&mut out, factor, rng);
        }
        if let Some(policy) = &self.rand_augment {
            out = policy.apply(&out, rng);
        }
        Ok(out)
    }

    /// The full transform: `(3, H, W)` floats.
    pub fn apply(&self, image: &RgbImage, rng: &mut StdRng) -> Result<Vec<f32>> {
        Ok(to_chw_floats(&self.apply_image(image, rng)?, &self.output))
    }

    /// The evaluation transform that matches this training transform's geometry.
    pub fn eval(&self) -> PreprocessConfig {
        let mut cfg = self.output.clone();
        cfg.resize_mode = match self.crop {
            TrainCrop::Squish => ResizeMode::Squish,
            TrainCrop::RandomResized { .. } => ResizeMode::CenterCrop,
        };
        cfg
    }
}

/// torchvision's `RandomResizedCrop.get_params`: `(left, top, width, height)`.
pub fn random_resized_crop(
    width: u32,
    height: u32,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut StdRng,
) -> (f64, f64, f64, f64) {
    let (w0, h0) = (width as f64, height as f64);
    let area = w0 * h0;
    let (log_lo, log_hi) = ((ratio.0 as f64).ln(), (ratio.1 as f64).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0 as f64..=scale.1 as f64);
        let aspect = rng.random_range(log_lo..=log_hi).exp();
        let w = (target * aspect).sqrt().round();
        let h = (target / aspect).sqrt().round();
        if w > 0.0 && h > 0.0 && w <= w0 && h <= h0 {
            let top = rng.random_range(0..=(h0 - h) as u32) as f64;
            let left = rng.random_range(0..=(w0 - w) as u32) as f64;
            return (left, top, w, h);
        }
    }
    // Fallback: the largest centred crop within the ratio range.
    let in_ratio = w0 / h0;
    let (w, h) = if in_ratio < ratio.0 as f64 {
        (w0, (w0 / ratio.0 as f64).round())
    } else if in_ratio > ratio.1 as f64 {
        ((h0 * ratio.1 as f64).round(), h0)
    } else {
        (w0, h0)
    };
    (((w0 - w) / 2.0).floor(), ((h0 - h) / 2.0).floor(), w, h)
}

/// Fills a box of `factor` × each side, centred at a random pixel and clipped to the image, with
/// a random colour (the ASL repository's `CutoutPIL`).
pub fn cutout(image: &mut RgbImage, factor: f32, rng: &mut StdRng) {
    let (w, h) = (image.width() as i64, image.height() as i64);
    if w == 0 || h == 0 {
        return;
    }
    let (cw, ch) = (
        (factor * w as f32 + 0.5) as i64,
        (factor * h as f32 + 0.5) as i64,
    );
    let (cx, cy) = (rng.random_range(0..w), rng.random_range(0..h));
    let colour = Rgb([rng.random(), rng.random(), rng.random()]);
    let (x1, x2) = ((cx - cw / 2).clamp(0, w), (cx + cw / 2).clamp(0, w));
    let (y1, y2) = ((cy - ch / 2).clamp(0, h), (cy + ch / 2).clamp(0, h));
    for y in y1..y2 {
        for x in x1..x2 {
            image.put_pixel(x as u32, y as u32, colour);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn crops_stay_inside_and_follow_the_ranges() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let (l, t, w, h) =
                random_resized_crop(640, 480, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(l >= 0.0 && t >= 0.0 && l + w <= 640.0 && t + h <= 480.0);
            let frac = w * h / (640.0 * 480.0);
            assert!((0.07..=1.0).contains(&frac), "{frac}");
        }
        // A very wide image falls back to a centred crop of the widest allowed ratio.
        let mut rng = StdRng::seed_from_u64(2);
        let (l, t, w, h) = random_resized_crop(1000, 10, (0.9, 1.0), (0.75, 4.0 / 3.0), &mut rng);
        assert_eq!((t, h), (0.0, 10.0));
        assert!((w - 13.0).abs() < 1e-9 && l > 0.0);
    }

    #[test]
    fn cutout_paints_one_clipped_box() {
        let mut img = RgbImage::from_pixel(40, 20, Rgb([1, 2, 3]));
        cutout(&mut img, 0.5, &mut StdRng::seed_from_u64(4));
        let changed: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|p| *p.2 != Rgb([1, 2, 3]))
            .map(|p| (p.0, p.1))
            .collect();
        assert!(!changed.is_empty() && changed.len() <= 20 * 10);
        let xs: Vec<u32> = changed.iter().map(|p| p.0).collect();
        let ys: Vec<u32> = changed.iter().map(|p| p.1).collect();
        let (x1, x2) = (*xs.iter().min().unwrap(), *xs.iter().max().unwrap());
        let (y1, y2) = (*ys.iter().min().unwrap(), *ys.iter().max().unwrap());
        assert_eq!(
            changed.len() as u32,
            (x2 - x1 + 1) * (y2 - y1 + 1),
            "a filled rectangle"
        );
    }

    #[test]
    fn transforms_are_reproducible_and_sized() {
        let img = RgbImage::from_fn(97, 61, |x, y| Rgb([(x * 2) as u8, (y * 4) as u8, 77]));
        for t in [TrainTransform::imagenet(64), TrainTransform::multilabel(48)] {
            let a = t.apply(&img, &mut StdRng::seed_from_u64(11)).unwrap();
            let b = t.apply(&img, &mut StdRng::seed_from_u64(11)).unwrap();
            assert_eq!(a, b);
            assert_eq!(a.len(), 3 * t.output.width * t.output.height);
            assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        assert_eq!(
            TrainTransform::multilabel(48).eval().resize_mode,
            ResizeMode::Squish
        );
    }
}
