//! The evaluation transform: decoded RGB8 image → normalised CHW float input.

use candle_core::{Device, Tensor};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

use crate::error::{DataError, Result};
use crate::preprocess_config::{Interpolation, PreprocessConfig, ResizeMode};

/// Resizes (antialiased, like PIL) and, in crop mode, centre-crops an image to the configured
/// input size: `(H₀, W₀)` RGB8 → `(height, width)` RGB8.
pub fn resize_for_model(image: &RgbImage, cfg: &PreprocessConfig) -> Result<RgbImage> {
    let (w0, h0) = image.dimensions();
    let (rw, rh) = resize_target(cfg, (w0 as usize, h0 as usize));
    match cfg.resize_mode {
        ResizeMode::Squish => resize(image, rw, rh, cfg.interpolation),
        ResizeMode::CenterCrop => {
            // Ordinary photos: the whole resized image, then the crop, exactly as Pillow +
            // torchvision compute it (published numbers reproduce bit for bit). Only an aspect
            // ratio that would make the intermediate far larger than the crop goes through the
            // region path, which never makes it.
            let crop_pixels = cfg.width.saturating_mul(cfg.height);
            if rw.saturating_mul(rh) <= crop_pixels.saturating_mul(WHOLE_RESIZE_FACTOR) {
                let resized = resize(image, rw, rh, cfg.interpolation)?;
                Ok(center_crop(&resized, cfg.width, cfg.height))
            } else {
                center_crop_of_resized(image, (rw, rh), cfg)
            }
        }
    }
}

/// The `(width, height)` an image of `(w0, h0)` pixels is resized to before any crop: the input
/// size when squishing; timm's scale size when centre cropping.
pub(crate) fn resize_target(cfg: &PreprocessConfig, (w0, h0): (usize, usize)) -> (usize, usize) {
    match cfg.resize_mode {
        ResizeMode::Squish => (cfg.width, cfg.height),
        ResizeMode::CenterCrop => {
            // timm: scale size ⌊size / crop_pct⌋; one number resizes the shorter side
            // (torchvision: long side = int(short_target · long / short)), two numbers are exact.
            let scale_h = (cfg.height as f64 / cfg.crop_pct).floor() as usize;
            let scale_w = (cfg.width as f64 / cfg.crop_pct).floor() as usize;
            let (rw, rh) = if scale_h == scale_w {
                if w0 <= h0 {
                    (
                        scale_w,
                        (scale_w as f64 * h0 as f64 / w0.max(1) as f64) as usize,
                    )
                } else {
                    (
                        (scale_h as f64 * w0 as f64 / h0.max(1) as f64) as usize,
                        scale_h,
                    )
                }
            } else {
                (scale_w, scale_h)
            };
            (rw.max(1), rh.max(1))
        }
    }
}

/// Largest resized image, in multiples of the crop, that centre cropping makes whole (a 4:3 photo
/// at timm's 224/0.875 is 1.7 crops; 16 crops is a 1:12 panorama).
const WHOLE_RESIZE_FACTOR: usize = 16;

/// torchvision's `CenterCrop`: offsets `int(round((side − crop) / 2))` with round-half-to-even;
/// a crop larger than the image is padded with black, as torchvision does.
fn center_crop(image: &RgbImage, width: usize, height: usize) -> RgbImage {
    let (w0, h0) = (image.width() as i64, image.height() as i64);
    let offset =
        |side: i64, crop: usize| ((side - crop as i64) as f64 / 2.0).round_ties_even() as i64;
    let (left, top) = (offset(w0, width), offset(h0, height));
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let (sx, sy) = (x as i64 + left, y as i64 + top);
        if (0..w0).contains(&sx) && (0..h0).contains(&sy) {
            *image.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

/// The centre `cfg.width × cfg.height` crop of `image` resized to `resized` = `(rw, rh)`, computed
/// without making the resized image: only the source region under the crop is resampled (same
/// filter centres and supports as resizing the whole image), so a 1×100000 strip costs a crop's
/// worth of memory, not the 256×25600000 intermediate. Parts of the crop outside the resized image
/// are black, as torchvision pads.
fn center_crop_of_resized(
    image: &RgbImage,
    (rw, rh): (usize, usize),
    cfg: &PreprocessConfig,
) -> Result<RgbImage> {
    let (w0, h0) = (image.width() as f64, image.height() as f64);
    let (width, height) = (cfg.width, cfg.height);
    let offset =
        |side: usize, crop: usize| ((side as f64 - crop as f64) / 2.0).round_ties_even() as i64;
    let (left, top) = (offset(rw, width), offset(rh, height));
    // The crop window clipped to the resized image, in resized pixels.
    let x0 = left.max(0);
    let y0 = top.max(0);
    let x1 = (left + width as i64).min(rw as i64);
    let y1 = (top + height as i64).min(rh as i64);
    if x1 <= x0 || y1 <= y0 {
        return Ok(RgbImage::new(width as u32, height as u32));
    }
    let (sx, sy) = (w0 / rw as f64, h0 / rh as f64);
    let region = (
        x0 as f64 * sx,
        y0 as f64 * sy,
        (x1 - x0) as f64 * sx,
        (y1 - y0) as f64 * sy,
    );
    let (cw, ch) = ((x1 - x0) as usize, (y1 - y0) as usize);
    let inner = resize_region(image, Some(region), cw, ch, cfg.interpolation)?;
    if (cw, ch) == (width, height) {
        return Ok(inner);
    }
    let mut canvas = RgbImage::new(width as u32, height as u32);
    image::imageops::replace(&mut canvas, &inner, x0 - left, y0 - top);
    Ok(canvas)
}

/// Largest image a resize may make (64 M pixels, 192 MiB of RGB8): model inputs, crops and
/// thumbnails are far below it; only a size computed from a hostile aspect ratio reaches it.
pub const MAX_RESIZED_PIXELS: usize = 1 << 26;

fn resize(
    image: &RgbImage,
    width: usize,
    height: usize,
    filter: Interpolation,
) -> Result<RgbImage> {
    resize_region(image, None, width, height, filter)
}

/// Resizes the region `(left, top, width, height)` of `image` (all of it when `None`) to
/// `width × height`, antialiased as Pillow does.
pub(crate) fn resize_region(
    image: &RgbImage,
    region: Option<(f64, f64, f64, f64)>,
    width: usize,
    height: usize,
    filter: Interpolation,
) -> Result<RgbImage> {
    let (w0, h0) = image.dimensions();
    if region.is_none() && (w0 as usize, h0 as usize) == (width, height) {
        return Ok(image.clone());
    }
    let too_large = || {
        DataError::Config(format!(
            "resize to {width}×{height}: above the limit of {MAX_RESIZED_PIXELS} pixels"
        ))
    };
    if width == 0
        || height == 0
        || width
            .checked_mul(height)
            .is_none_or(|p| p > MAX_RESIZED_PIXELS)
    {
        return Err(too_large());
    }
    let (width32, height32) = (
        u32::try_from(width).map_err(|_| too_large())?,
        u32::try_from(height).map_err(|_| too_large())?,
    );
    let src = ImageRef::new(w0, h0, image.as_raw(), PixelType::U8x3)
        .map_err(|e| DataError::Config(format!("resize source: {e}")))?;
    let mut dst = Image::new(width32, height32, PixelType::U8x3);
    let filter = match filter {
        Interpolation::Bilinear => FilterType::Bilinear,
        Interpolation::Bicubic => FilterType::CatmullRom,
    };
    let mut options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter));
    if let Some((left, top, w, h)) = region {
        options = options.crop(left, top, w, h);
    }
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| DataError::Config(format!("resize to {width}×{height}: {e}")))?;
    RgbImage::from_raw(width32, height32, dst.into_vec())
        .ok_or_else(|| DataError::Config("resize produced a buffer of the wrong size".into()))
}

/// Scales an RGB8 image of the input size to `[0, 1]`, applies mean/std, and lays it out as CHW
/// floats (`3 · height · width` values).
pub fn to_chw_floats(image: &RgbImage, cfg: &PreprocessConfig) -> Vec<f32> {
    let plane = image.width() as usize * image.height() as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(pixel[c]) / 255.0 - cfg.mean[c]) / cfg.std[c];
        }
    }
    out
}

/// The full evaluation transform of one image: `(3, height, width)` floats.
pub fn preprocess(image: &RgbImage, cfg: &PreprocessConfig) -> Result<Vec<f32>> {
    Ok(to_chw_floats(&resize_for_model(image, cfg)?, cfg))
}

/// Stacks preprocessed images into a `(N, 3, height, width)` f32 tensor on `device`.
pub fn stack_batch(images: &[Vec<f32>], cfg: &PreprocessConfig, device: &Device) -> Result<Tensor> {
    let data: Vec<f32> = images.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(
        data,
        (images.len(), 3, cfg.height, cfg.width),
        device,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(w: u32, h: u32) -> RgbImage {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        RgbImage::from_fn(w, h, |_, _| {
            let mut px = [0u8; 3];
            for v in &mut px {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *v = (state >> 56) as u8;
            }
            image::Rgb(px)
        })
    }

    /// The whole resized image, then torchvision's centre crop (black padding).
    fn resize_then_crop(
        image: &RgbImage,
        rw: usize,
        rh: usize,
        cfg: &PreprocessConfig,
    ) -> RgbImage {
        center_crop(
            &resize(image, rw, rh, cfg.interpolation).unwrap(),
            cfg.width,
            cfg.height,
        )
    }

    #[test]
    fn the_region_path_matches_resizing_the_whole_image() {
        for (w, h, crop_pct) in [
            (157, 211, 0.875),
            (300, 120, 0.875),
            (90, 60, 1.5),
            (64, 64, 1.0),
        ] {
            let image = noise(w, h);
            let mut cfg = PreprocessConfig::imagenet_eval(64);
            cfg.crop_pct = crop_pct;
            let scale = (64.0 / crop_pct).floor() as usize;
            let (rw, rh) = if w <= h {
                (scale, (scale as f64 * h as f64 / w as f64) as usize)
            } else {
                ((scale as f64 * w as f64 / h as f64) as usize, scale)
            };
            let ours = center_crop_of_resized(&image, (rw, rh), &cfg).unwrap();
            let reference = resize_then_crop(&image, rw, rh, &cfg);
            let worst = ours
                .as_raw()
                .iter()
                .zip(reference.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(
                worst <= 1,
                "{w}×{h} crop_pct {crop_pct}: differs by {worst}"
            );
        }
    }

    #[test]
    fn a_hostile_aspect_ratio_costs_only_the_crop() {
        let strip = RgbImage::new(1, 100_000);
        let out = resize_for_model(&strip, &PreprocessConfig::imagenet_eval(224)).unwrap();
        assert_eq!(out.dimensions(), (224, 224));
        let mut huge = PreprocessConfig::imagenet_eval(224);
        huge.resize_mode = crate::preprocess_config::ResizeMode::Squish;
        huge.width = 1 << 20;
        huge.height = 1 << 20;
        assert!(resize_for_model(&strip, &huge).is_err());
    }
}
