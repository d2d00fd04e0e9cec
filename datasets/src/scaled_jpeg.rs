//! Decoding a JPEG no larger than the model needs: the inverse DCT run at 1/2, 1/4 or 1/8 of the
//! stored size (what libjpeg's `scale_num / scale_denom` and PIL's `Image.draft` do), choosing the
//! smallest scale whose output still covers the size the model's resize asks for.
//!
//! A 4032×3024 phone photo squished to 224×224 decodes at 1008×756: the entropy decoding is the
//! same, but the inverse transforms, colour conversion and the resize see 1/16 of the pixels.
//! The result is not Pillow's pixels (each 8×8 block's 1/8-scale value is its DCT average rather
//! than a filtered sample), which is why evaluation keeps [`crate::decode_rgb8`].
//!
//! Camera and phone JPEGs (sequential, grey or YCbCr in one scan) go through this crate's own
//! scaled decoder (`baseline_jpeg`), whose entropy decoding is faster; every other JPEG, and any
//! file that decoder does not take cleanly, goes through `jpeg-decoder`'s scaled decode.

use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};
use jpeg_decoder::PixelFormat;

use crate::baseline_jpeg;
use crate::decode::{DecodeLimits, check_pixels, decode_rgb8_bytes, refuse_truncated_jpeg};
use crate::error::{DataError, Result};
use crate::eval_transform::resize_target;
use crate::preprocess_config::PreprocessConfig;

/// How many times the resize target the DCT-scaled image must be on each side (Pillow's
/// `thumbnail` uses the same default `reducing_gap`): the antialiased resize then does the last
/// factor of two or more, so the result stays within a level or so of resizing every pixel,
/// where decoding straight to the target size would be visibly sharper (aliased).
const REDUCING_GAP: usize = 2;

/// The DCT scale denominators the decoder offers, coarsest first.
const DENOMINATORS: [u32; 3] = [8, 4, 2];

/// Decodes `bytes` to upright RGB8 as [`decode_rgb8_bytes`] does, except that a JPEG is decoded
/// at the coarsest DCT scale (1/8, 1/4, 1/2) whose upright output is still at least twice the size that
/// [`crate::resize_for_model`] resizes it to under `cfg`. Non-JPEG files, JPEGs already small
/// enough, and JPEGs this decoder does not convert as Pillow does (CMYK, 12/16-bit) take the exact
/// path. `path` is used in messages only.
pub fn decode_rgb8_for_model(
    bytes: &[u8],
    path: &Path,
    limits: &DecodeLimits,
    cfg: &PreprocessConfig,
) -> Result<RgbImage> {
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return decode_rgb8_bytes(bytes, path, limits);
    }
    match decode_scaled(bytes, path, limits, cfg)? {
        Some(image) => Ok(image),
        None => decode_rgb8_bytes(bytes, path, limits),
    }
}

/// The scaled decode, or `None` where the exact path must decide (no smaller scale fits, or a
/// pixel format converted elsewhere). Broken files are errors naming `path`.
fn decode_scaled(
    bytes: &[u8],
    path: &Path,
    limits: &DecodeLimits,
    cfg: &PreprocessConfig,
) -> Result<Option<RgbImage>> {
    let fail = |reason: String| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    refuse_truncated_jpeg(bytes, path)?;
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().map_err(|e| fail(e.to_string()))?;
    let Some(info) = decoder.info() else {
        return Ok(None);
    };
    if !matches!(info.pixel_format, PixelFormat::L8 | PixelFormat::RGB24) {
        return Ok(None);
    }
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    check_pixels(width, height, path, limits)?;
    let orientation = decoder
        .exif_data()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    let Some(denominator) = coarsest_scale((width, height), orientation, cfg) else {
        return Ok(None);
    };
    let request = (width.div_ceil(denominator), height.div_ceil(denominator));
    let channels = if info.pixel_format == PixelFormat::L8 {
        1
    } else {
        3
    };
    // The stored image at the chosen scale, plus the decoders' working planes and rows.
    let output_bytes = (request.0 as usize)
        .saturating_mul(request.1 as usize)
        .saturating_mul(channels);
    let budget = output_bytes.saturating_mul(4).saturating_add(16 << 20);
    let fast = baseline_jpeg::decode_scaled(bytes, denominator, budget).filter(|image| {
        (image.width, image.height, image.channels)
            == (request.0 as usize, request.1 as usize, channels)
    });
    let pixels = match fast {
        Some(image) => image.pixels,
        None => {
            let (out_w, out_h) = decoder
                .scale(request.0 as u16, request.1 as u16)
                .map_err(|e| fail(e.to_string()))?;
            if (u32::from(out_w), u32::from(out_h)) != request {
                // The decoder chose another scale (only possible for images a few pixels wide).
                return Ok(None);
            }
            decoder.set_max_decoding_buffer_size(output_bytes.saturating_add(16 << 20));
            decoder.decode().map_err(|e| fail(e.to_string()))?
        }
    };
    let wrong_size = || fail("the JPEG decoder returned a buffer of the wrong size".into());
    let mut image = if channels == 1 {
        DynamicImage::ImageLuma8(
            GrayImage::from_raw(request.0, request.1, pixels).ok_or_else(wrong_size)?,
        )
    } else {
        DynamicImage::ImageRgb8(
            RgbImage::from_raw(request.0, request.1, pixels).ok_or_else(wrong_size)?,
        )
    };
    image.apply_orientation(orientation);
    Ok(Some(image.into_rgb8()))
}

/// The largest denominator `d` in 8, 4, 2 for which the stored `(width, height)` decoded at
/// `1/d` (each side rounded up) and turned upright is still [`REDUCING_GAP`] times the resize
/// target of `cfg` on each side, or `None` when only the full size is.
fn coarsest_scale(
    (width, height): (u32, u32),
    orientation: Orientation,
    cfg: &PreprocessConfig,
) -> Option<u32> {
    let swaps = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let upright = |(w, h): (u32, u32)| if swaps { (h, w) } else { (w, h) };
    DENOMINATORS.into_iter().find(|&d| {
        let (w, h) = upright((width.div_ceil(d), height.div_ceil(d)));
        let (need_w, need_h) = resize_target(cfg, (w as usize, h as usize));
        w as usize >= need_w.saturating_mul(REDUCING_GAP)
            && h as usize >= need_h.saturating_mul(REDUCING_GAP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_covers_twice_the_resize_target_in_both_axes() {
        let squish = PreprocessConfig::multilabel(224);
        // 4032×3024 at 1/4 is 1008×756, twice 224 both ways; at 1/8, 378 rows are not.
        assert_eq!(
            coarsest_scale((4032, 3024), Orientation::NoTransforms, &squish),
            Some(4)
        );
        // 2000×400: even 1/2 gives 200 rows (< 448): no scale fits.
        assert_eq!(
            coarsest_scale((2000, 400), Orientation::NoTransforms, &squish),
            None
        );
        // 3000×1000 at 1/2 is 1500×500: fits; at 1/4, 750×250 does not.
        assert_eq!(
            coarsest_scale((3000, 1000), Orientation::NoTransforms, &squish),
            Some(2)
        );
        // Rotation swaps the axes the target applies to: a 1000×3600 stored image shown as
        // 3600×1000 fits 2 × (112×56) at 1/8 (450×125); left as stored, only 1/4 (250×900) does.
        let wide = PreprocessConfig {
            width: 112,
            ..PreprocessConfig::multilabel(56)
        };
        assert_eq!(
            coarsest_scale((1000, 3600), Orientation::Rotate90, &wide),
            Some(8)
        );
        assert_eq!(
            coarsest_scale((1000, 3600), Orientation::NoTransforms, &wide),
            Some(4)
        );
    }

    #[test]
    fn centre_crop_targets_the_scale_size_of_the_short_side() {
        // 224 at crop_pct 0.875 resizes the short side to 256, so 512 rows are needed:
        // 3024/4 = 756 fits, 3024/8 = 378 does not.
        let crop = PreprocessConfig::imagenet_eval(224);
        assert_eq!(
            coarsest_scale((4032, 3024), Orientation::NoTransforms, &crop),
            Some(4)
        );
        // 1600×1200: 1/2 is 600 rows (≥ 512), 1/4 is 300.
        assert_eq!(
            coarsest_scale((1600, 1200), Orientation::NoTransforms, &crop),
            Some(2)
        );
    }
}
