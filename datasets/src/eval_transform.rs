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
    let (w0, h0) = (w0 as usize, h0 as usize);
    match cfg.resize_mode {
        ResizeMode::Squish => resize(image, cfg.width, cfg.height, cfg.interpolation),
        ResizeMode::CenterCrop => {
            // timm: scale size ⌊size / crop_pct⌋; one number resizes the shorter side
            // (torchvision: long side = int(short_target · long / short)), two numbers are exact.
            let scale_h = (cfg.height as f64 / cfg.crop_pct).floor() as usize;
            let scale_w = (cfg.width as f64 / cfg.crop_pct).floor() as usize;
            let (rw, rh) = if scale_h == scale_w {
                if w0 <= h0 {
                    (scale_w, (scale_w as f64 * h0 as f64 / w0 as f64) as usize)
                } else {
                    ((scale_h as f64 * w0 as f64 / h0 as f64) as usize, scale_h)
                }
            } else {
                (scale_w, scale_h)
            };
            let resized = resize(image, rw.max(1), rh.max(1), cfg.interpolation)?;
            Ok(center_crop(&resized, cfg.width, cfg.height))
        }
    }
}

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
    let src = ImageRef::new(w0, h0, image.as_raw(), PixelType::U8x3)
        .map_err(|e| DataError::Config(format!("resize source: {e}")))?;
    let mut dst = Image::new(width as u32, height as u32, PixelType::U8x3);
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
    RgbImage::from_raw(width as u32, height as u32, dst.into_vec())
        .ok_or_else(|| DataError::Config("resize produced a buffer of the wrong size".into()))
}

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
