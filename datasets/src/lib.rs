//! # tresnet-data
//!
//! Getting pixels into a TResNet exactly as the Python references do: decoding real-world files
//! (EXIF orientation, grayscale/CMYK/alpha/16-bit to RGB8, decompression-bomb limits), resizing as
//! PIL does (antialiased bilinear/bicubic; squish or resize + centre crop), scaling to `[0, 1]`,
//! and walking photo folders.
//!
//! This crate depends on no model crate; preprocessing is described by [`PreprocessConfig`], read
//! from a model's `pretrained_cfg`.

mod decode;
mod error;
mod eval_transform;
mod photo_walk;
mod preprocess_config;

pub use decode::{DecodeLimits, decode_rgb8, decode_rgb8_bytes};
pub use error::{DataError, Result};
pub use eval_transform::{preprocess, resize_for_model, stack_batch, to_chw_floats};
pub use photo_walk::{IMAGE_EXTENSIONS, PhotoWalk, has_image_extension, walk_photos};
pub use preprocess_config::{Interpolation, PreprocessConfig, ResizeMode};
