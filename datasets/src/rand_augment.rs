//! RandAugment-style photometric and geometric operations on RGB8 images (the family timm's
//! `rand-m9-mstd0.5` and the ASL recipe draw from), each with a magnitude on timm's 0–10 scale.

use image::{Rgb, RgbImage};
use imageproc::geometric_transformations::{Border, Interpolation, warp_with};
use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

/// Pixel value used where a geometric operation uncovers the canvas (timm's default fill).
const FILL: Rgb<u8> = Rgb([128, 128, 128]);

/// One augmentation operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AugmentOp {
    /// Leave the image unchanged.
    Identity,
    /// Stretch each channel to the full 0–255 range.
    AutoContrast,
    /// Histogram equalisation per channel (Pillow's `ImageOps.equalize`).
    Equalize,
    /// `255 − v`.
    Invert,
    /// Rotate about the centre by up to ±30° (magnitude 10).
    Rotate,
    /// Keep the top `8 − ⌊4·m/10⌋` bits.
    Posterize,
    /// Invert values at or above `256 − 25.6·m`.
    Solarize,
    /// Add `11·m` to values below 128.
    SolarizeAdd,
    /// Saturation factor `1 ± 0.09·m`.
    Color,
    /// Contrast factor `1 ± 0.09·m`.
    Contrast,
    /// Brightness factor `1 ± 0.09·m`.
    Brightness,
    /// Sharpness factor `1 ± 0.09·m`.
    Sharpness,
    /// Horizontal shear up to ±0.3.
    ShearX,
    /// Vertical shear up to ±0.3.
    ShearY,
    /// Horizontal shift up to ±45% of the width.
    TranslateX,
    /// Vertical shift up to ±45% of the height.
    TranslateY,
}

/// Every operation RandAugment draws from.
pub const RAND_AUGMENT_OPS: &[AugmentOp] = &[
    AugmentOp::AutoContrast,
    AugmentOp::Equalize,
    AugmentOp::Invert,
    AugmentOp::Rotate,
    AugmentOp::Posterize,
    AugmentOp::Solarize,
    AugmentOp::SolarizeAdd,
    AugmentOp::Color,
    AugmentOp::Contrast,
    AugmentOp::Brightness,
    AugmentOp::Sharpness,
    AugmentOp::ShearX,
    AugmentOp::ShearY,
    AugmentOp::TranslateX,
    AugmentOp::TranslateY,
];

/// RandAugment: `num_ops` operations drawn uniformly, each applied with probability
/// `probability`, at magnitude `magnitude` (0–10) perturbed by `N(0, magnitude_std)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandAugment {
    /// Operations per image (timm: 2).
    pub num_ops: usize,
    /// Magnitude on the 0–10 scale (timm's `m9`).
    pub magnitude: f32,
    /// Standard deviation of the per-operation magnitude noise (timm's `mstd0.5`).
    pub magnitude_std: f32,
    /// Probability that a drawn operation is applied (timm: 0.5).
    pub probability: f32,
}

impl Default for RandAugment {
    /// timm's `rand-m9-mstd0.5`.
    fn default() -> Self {
        Self {
            num_ops: 2,
            magnitude: 9.0,
            magnitude_std: 0.5,
            probability: 0.5,
        }
    }
}

impl RandAugment {
    /// Applies the policy with randomness from `rng`.
    pub fn apply(&self, image: &RgbImage, rng: &mut StdRng) -> RgbImage {
        let mut out = image.clone();
        for _ in 0..self.num_ops {
            let op = RAND_AUGMENT_OPS[rng.random_range(0..RAND_AUGMENT_OPS.len())];
            if rng.random::<f32>() >= self.probability {
                continue;
            }
            let mut m = self.magnitude;
            if self.magnitude_std > 0.0
                && let Ok(noise) = Normal::new(0.0, self.magnitude_std)
            {
                m += noise.sample(rng);
            }
            let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
            out = apply_op(&out, op, m.clamp(0.0, 10.0), sign);
        }
        out
    }
}

/// Applies `op` at magnitude `m` (0–10); `sign` (±1) picks the direction of signed operations.
pub fn apply_op(image: &RgbImage, op: AugmentOp, m: f32, sign: f32) -> RgbImage {
    let level = m / 10.0;
    let factor = 1.0 + sign * 0.9 * level;
    match op {
        AugmentOp::Identity => image.clone(),
        AugmentOp::AutoContrast => auto_contrast(image),
        AugmentOp::Equalize => equalize(image),
        AugmentOp::Invert => map_values(image, |v| 255 - v),
        AugmentOp::Rotate => rotate(image, sign * 30.0 * level),
        AugmentOp::Posterize => {
            let bits = 8 - (4.0 * level) as u32;
            let mask = if bits >= 8 { 0xFF } else { !(0xFFu8 >> bits) };
            map_values(image, |v| v & mask)
        }
        AugmentOp::Solarize => {
            let threshold = 256.0 - 256.0 * level;
            map_values(image, |v| {
                if f32::from(v) >= threshold {
                    255 - v
                } else {
                    v
                }
            })
        }
        AugmentOp::SolarizeAdd => {
            let add = (110.0 * level) as u16;
            map_values(image, |v| {
                if v < 128 {
                    (u16::from(v) + add).min(255) as u8
                } else {
                    v
                }
            })
        }
        AugmentOp::Color => blend(&grayscale_rgb(image), image, factor),
        AugmentOp::Contrast => {
            let mean = grayscale_values(image)
                .iter()
                .map(|v| f64::from(*v))
                .sum::<f64>()
                / (image.width() as f64 * image.height() as f64).max(1.0);
            let flat = RgbImage::from_pixel(image.width(), image.height(), {
                let v = (mean + 0.5) as u8;
                Rgb([v, v, v])
            });
            blend(&flat, image, factor)
        }
        AugmentOp::Brightness => {
            blend(&RgbImage::new(image.width(), image.height()), image, factor)
        }
        AugmentOp::Sharpness => blend(&smooth(image), image, factor),
        AugmentOp::ShearX => {
            let s = sign * 0.3 * level;
            warp(image, move |x, y| (x + s * y, y))
        }
        AugmentOp::ShearY => {
            let s = sign * 0.3 * level;
            warp(image, move |x, y| (x, y + s * x))
        }
        AugmentOp::TranslateX => {
            let dx = sign * 0.45 * level * image.width() as f32;
            warp(image, move |x, y| (x + dx, y))
        }
        AugmentOp::TranslateY => {
            let dy = sign * 0.45 * level * image.height() as f32;
            warp(image, move |x, y| (x, y + dy))
        }
    }
}

fn map_values(image: &RgbImage, f: impl Fn(u8) -> u8) -> RgbImage {
    let lut: Vec<u8> = (0..=255u8).map(f).collect();
    let mut out = image.clone();
    for v in out.iter_mut() {
        *v = lut[*v as usize];
    }
    out
}

/// ITU-R 601-2 luma as Pillow's `convert('L')` computes it.
fn grayscale_values(image: &RgbImage) -> Vec<u8> {
    image
        .pixels()
        .map(|p| {
            let l = u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471;
            ((l + 0x8000) >> 16) as u8
        })
        .collect()
}

fn grayscale_rgb(image: &RgbImage) -> RgbImage {
    let gray = grayscale_values(image);
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let v = gray[(y * image.width() + x) as usize];
        Rgb([v, v, v])
    })
}

/// `degenerate + factor · (image − degenerate)`, clamped (Pillow's `ImageEnhance`).
fn blend(degenerate: &RgbImage, image: &RgbImage, factor: f32) -> RgbImage {
    let mut out = image.clone();
    for (o, (d, i)) in out.iter_mut().zip(degenerate.iter().zip(image.iter())) {
        let v = f32::from(*d) + factor * (f32::from(*i) - f32::from(*d));
        *o = v.round().clamp(0.0, 255.0) as u8;
    }
    out
}

fn auto_contrast(image: &RgbImage) -> RgbImage {
    let mut out = image.clone();
    for c in 0..3 {
        let values = image.pixels().map(|p| p[c]);
        let (lo, hi) = values.fold((255u8, 0u8), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if hi <= lo {
            continue;
        }
        let scale = 255.0 / f32::from(hi - lo);
        for p in out.pixels_mut() {
            p[c] = ((f32::from(p[c] - lo)) * scale).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Pillow's equalisation: a per-channel lookup built from the histogram without its last bin.
fn equalize(image: &RgbImage) -> RgbImage {
    let mut out = image.clone();
    for c in 0..3 {
        let mut hist = [0usize; 256];
        for p in image.pixels() {
            hist[p[c] as usize] += 1;
        }
        let nonzero: Vec<usize> = hist.iter().copied().filter(|h| *h > 0).collect();
        let step = if nonzero.len() <= 1 {
            0
        } else {
            (nonzero.iter().sum::<usize>() - nonzero[nonzero.len() - 1]) / 255
        };
        if step == 0 {
            continue;
        }
        let mut lut = [0u8; 256];
        let mut n = step / 2;
        for (v, h) in hist.iter().enumerate() {
            lut[v] = (n / step).min(255) as u8;
            n += h;
        }
        for p in out.pixels_mut() {
            p[c] = lut[p[c] as usize];
        }
    }
    out
}

/// Pillow's `SMOOTH` filter (`[[1,1,1],[1,5,1],[1,1,1]] / 13`), borders kept.
fn smooth(image: &RgbImage) -> RgbImage {
    let (w, h) = image.dimensions();
    let mut out = image.clone();
    if w < 3 || h < 3 {
        return out;
    }
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for c in 0..3 {
                let mut sum = 0u32;
                for dy in 0..3 {
                    for dx in 0..3 {
                        let weight = if dx == 1 && dy == 1 { 5 } else { 1 };
                        sum += weight * u32::from(image.get_pixel(x + dx - 1, y + dy - 1)[c]);
                    }
                }
                out.get_pixel_mut(x, y)[c] = ((sum + 6) / 13) as u8;
            }
        }
    }
    out
}

fn rotate(image: &RgbImage, degrees: f32) -> RgbImage {
    let (cx, cy) = (image.width() as f32 / 2.0, image.height() as f32 / 2.0);
    let (sin, cos) = degrees.to_radians().sin_cos();
    // Output pixel → input pixel: rotate back around the centre.
    warp(image, move |x, y| {
        let (dx, dy) = (x - cx, y - cy);
        (cx + cos * dx - sin * dy, cy + sin * dx + cos * dy)
    })
}

/// Resamples with `output → input` coordinate mapping, bilinear, grey outside.
fn warp(image: &RgbImage, to_input: impl Fn(f32, f32) -> (f32, f32) + Sync + Send) -> RgbImage {
    warp_with(
        image,
        to_input,
        Interpolation::Bilinear,
        Border::Constant(FILL),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gradient() -> RgbImage {
        RgbImage::from_fn(16, 12, |x, y| {
            Rgb([
                (x * 12 + 20) as u8,
                (y * 15 + 30) as u8,
                ((x + y) * 5) as u8,
            ])
        })
    }

    #[test]
    fn neutral_magnitudes_leave_the_image_unchanged() {
        let img = gradient();
        for op in [
            AugmentOp::Identity,
            AugmentOp::Rotate,
            AugmentOp::Posterize,
            AugmentOp::Solarize,
            AugmentOp::SolarizeAdd,
            AugmentOp::Color,
            AugmentOp::Contrast,
            AugmentOp::Brightness,
            AugmentOp::Sharpness,
            AugmentOp::ShearX,
            AugmentOp::ShearY,
            AugmentOp::TranslateX,
            AugmentOp::TranslateY,
        ] {
            assert_eq!(apply_op(&img, op, 0.0, 1.0), img, "{op:?} at magnitude 0");
        }
        assert_eq!(
            apply_op(
                &apply_op(&img, AugmentOp::Invert, 5.0, 1.0),
                AugmentOp::Invert,
                5.0,
                1.0
            ),
            img
        );
    }

    #[test]
    fn operations_do_what_they_say() {
        let img = gradient();
        let stretched = apply_op(&img, AugmentOp::AutoContrast, 10.0, 1.0);
        for c in 0..3 {
            assert_eq!(stretched.pixels().map(|p| p[c]).min(), Some(0));
            assert_eq!(stretched.pixels().map(|p| p[c]).max(), Some(255));
        }
        let dark = apply_op(&img, AugmentOp::Brightness, 10.0, -1.0);
        assert!(dark.iter().zip(img.iter()).all(|(d, i)| d <= i));
        let posterized = apply_op(&img, AugmentOp::Posterize, 10.0, 1.0);
        assert!(posterized.iter().all(|v| v & 0x0F == 0));
        let solarized = apply_op(&img, AugmentOp::Solarize, 10.0, 1.0);
        assert_eq!(solarized, apply_op(&img, AugmentOp::Invert, 0.0, 1.0));
        let shifted = apply_op(&img, AugmentOp::TranslateX, 10.0, 1.0);
        assert_eq!(*shifted.get_pixel(15, 5), FILL, "uncovered area is filled");
        let gray = apply_op(&img, AugmentOp::Color, 10.0, -1.0);
        assert!(
            gray.pixels()
                .all(|p| (i16::from(p[0]) - i16::from(p[1])).abs() <= 30)
        );
        let eq = apply_op(&img, AugmentOp::Equalize, 0.0, 1.0);
        assert_eq!(eq.dimensions(), img.dimensions());
    }

    #[test]
    fn the_same_seed_gives_the_same_augmentation() {
        let img = gradient();
        let policy = RandAugment {
            probability: 1.0,
            ..RandAugment::default()
        };
        let a = policy.apply(&img, &mut StdRng::seed_from_u64(5));
        let b = policy.apply(&img, &mut StdRng::seed_from_u64(5));
        let c = policy.apply(&img, &mut StdRng::seed_from_u64(6));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
