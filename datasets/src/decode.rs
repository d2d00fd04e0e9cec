//! Decoding image files to upright 8-bit RGB, the way PIL's `Image.open(p)` + EXIF transpose +
//! `convert('RGB')` sees them.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::error::{DataError, Result};

/// Limits that keep a hostile or broken file from exhausting memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted width × height (default 178,956,970, twice PIL's `MAX_IMAGE_PIXELS`, the
    /// size at which PIL refuses an image as a decompression bomb).
    pub max_pixels: u64,
    /// Largest accepted file size in bytes (default 512 MiB).
    pub max_file_bytes: u64,
}

impl Default for DecodeLimits {
    /// The documented defaults, each replaced by `TRESNET_MAX_IMAGE_PIXELS` /
    /// `TRESNET_MAX_IMAGE_BYTES` when set (e.g. `TRESNET_MAX_IMAGE_PIXELS=400000000`).
    fn default() -> Self {
        Self {
            max_pixels: tresnet_io::env_limit("TRESNET_MAX_IMAGE_PIXELS", 178_956_970),
            max_file_bytes: tresnet_io::env_limit("TRESNET_MAX_IMAGE_BYTES", 512 << 20),
        }
    }
}

/// Decodes `path` (JPEG, PNG, WebP, BMP, TIFF, GIF's first frame; the format is read from the
/// content, not the extension) into an upright RGB8 image: EXIF orientation applied; grayscale,
/// palette, alpha (dropped, as PIL's `convert('RGB')`), 16-bit and CMYK converted to RGB8.
pub fn decode_rgb8(path: &Path, limits: &DecodeLimits) -> Result<RgbImage> {
    decode_rgb8_bytes(&read_image_file(path, limits)?, path, limits)
}

/// How much of an image to decode.
/// Named `exact` and `reduced` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum DecodeMode {
    /// Every pixel, as Pillow decodes it (evaluation: published numbers reproduce).
    #[default]
    Exact,
    /// JPEGs at the coarsest DCT scale that still covers the model's resize (see
    /// [`crate::decode_rgb8_for_model`]); other formats exactly.
    #[cfg_attr(feature = "clap", value(name = "reduced"))]
    ReducedForModel,
}

/// The bytes of the image file at `path`, read through the size limit.
pub(crate) fn read_image_file(path: &Path, limits: &DecodeLimits) -> Result<Vec<u8>> {
    // Regular files only (a FIFO or a device named as a photo is refused, not read for ever),
    // read through the size limit.
    tresnet_io::read_limited(path, limits.max_file_bytes).map_err(|source| {
        if source.kind() == std::io::ErrorKind::InvalidData {
            DataError::TooLarge {
                path: path.to_path_buf(),
                reason: source.to_string(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// [`decode_rgb8`] on bytes already in memory; `path` is used in messages only.
pub fn decode_rgb8_bytes(bytes: &[u8], path: &Path, limits: &DecodeLimits) -> Result<RgbImage> {
    let fail = |reason: String| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(fail("the file is empty".into()));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?;
    if reader.format().is_none() {
        return Err(fail(
            "not an image in a supported format (JPEG, PNG, WebP, BMP, TIFF, GIF)".into(),
        ));
    }
    if reader.format() == Some(ImageFormat::Jpeg) {
        refuse_truncated_jpeg(bytes, path)?;
    }
    // PNG's decoder reads up to the first image data before it reports a size, so check the
    // header's declared size first: a bomb is refused before any of its data is touched.
    if reader.format() == Some(ImageFormat::Png)
        && let Some((width, height)) = png_declared_size(bytes)
    {
        check_pixels(width, height, path, limits)?;
    }
    let mut reader = reader;
    let mut alloc = image::Limits::default();
    // Room for the largest accepted image at 16-bit RGBA plus the decoder's working buffers.
    alloc.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(alloc);
    let mut decoder = reader.into_decoder().map_err(|e| fail(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, path, limits)?;
    let orientation = decoder.orientation().map_err(|e| fail(e.to_string()))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| fail(e.to_string()))?;
    image.apply_orientation(orientation);
    Ok(to_rgb8_like_pillow(image))
}

/// `convert('RGB')` as Pillow does it. Pillow keeps the high byte of 16-bit colour channels
/// (`v >> 8`) but opens 16-bit grayscale as mode `I;16` and *clips* it at 255 when converting;
/// alpha is dropped, not composited. Everything else converts as the `image` crate does.
fn to_rgb8_like_pillow(image: DynamicImage) -> RgbImage {
    let (w, h) = (image.width(), image.height());
    match image {
        DynamicImage::ImageLuma16(gray) => RgbImage::from_fn(w, h, |x, y| {
            let v = gray.get_pixel(x, y)[0].min(255) as u8;
            image::Rgb([v, v, v])
        }),
        DynamicImage::ImageLumaA16(gray) => RgbImage::from_fn(w, h, |x, y| {
            let v = (gray.get_pixel(x, y)[0] >> 8) as u8;
            image::Rgb([v, v, v])
        }),
        DynamicImage::ImageRgb16(rgb) => RgbImage::from_fn(w, h, |x, y| {
            let p = rgb.get_pixel(x, y);
            image::Rgb([(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
        }),
        DynamicImage::ImageRgba16(rgba) => RgbImage::from_fn(w, h, |x, y| {
            let p = rgba.get_pixel(x, y);
            image::Rgb([(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
        }),
        other => other.into_rgb8(),
    }
}

/// JPEG decoders fill a cut-off scan with grey instead of failing; PIL refuses such files
/// ("image file is truncated"), and so do we.
pub(crate) fn refuse_truncated_jpeg(bytes: &[u8], path: &Path) -> Result<()> {
    if jpeg_scan_is_terminated(bytes) {
        Ok(())
    } else {
        Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: "truncated JPEG: the data ends before the end-of-image marker".into(),
        })
    }
}

/// Whether an end-of-image marker (`FF D9`) follows the last start-of-scan marker (`FF DA`).
/// Entropy-coded data never holds `FF` followed by a marker byte other than restart markers, so a
/// file cut inside its last scan has no `FF D9` after that scan's header.
fn jpeg_scan_is_terminated(bytes: &[u8]) -> bool {
    // Equivalently: the last `FF D9` lies after the last `FF DA`. Searching backwards from the end
    // finds the end-of-image marker in the last few bytes of an intact file, so only the tail is
    // read, not the megabytes of scan data.
    match last_marker(bytes, 0xD9) {
        Some(end) => last_marker(&bytes[end..], 0xDA).is_none(),
        None => false,
    }
}

/// Offset of the last `FF <second>` pair in `bytes`.
fn last_marker(bytes: &[u8], second: u8) -> Option<usize> {
    memchr::memrchr_iter(second, bytes)
        .find(|&at| at > 0 && bytes[at - 1] == 0xFF)
        .map(|at| at - 1)
}

pub(crate) fn check_pixels(
    width: u32,
    height: u32,
    path: &Path,
    limits: &DecodeLimits,
) -> Result<()> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            reason: format!(
                "{width}×{height} = {pixels} pixels exceeds the limit of {} (possible \
                 decompression bomb)",
                limits.max_pixels
            ),
        });
    }
    Ok(())
}

/// Width and height from a PNG's IHDR chunk (bytes 16..24 after the signature and chunk header).
fn png_declared_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Some((be(16), be(20)))
}
