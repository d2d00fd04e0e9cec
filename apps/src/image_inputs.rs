//! Turning image files into network inputs in parallel, keeping every failure with its file.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tresnet_data::{
    DataError, DecodeLimits, PreprocessConfig, decode_rgb8, decode_rgb8_bytes, preprocess,
};

/// Where an image comes from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// A file on disk.
    File(PathBuf),
    /// Bytes compiled into the binary (the embedded examples).
    Embedded {
        /// A file-like name for reports.
        name: &'static str,
        /// The encoded image.
        bytes: &'static [u8],
    },
}

impl ImageSource {
    /// The name used in reports.
    pub fn name(&self) -> String {
        match self {
            ImageSource::File(p) => p.display().to_string(),
            ImageSource::Embedded { name, .. } => format!("embedded:{name}"),
        }
    }
}

/// Example photos compiled into the binary, used when an app is run without inputs.
pub fn embedded_examples() -> Vec<ImageSource> {
    vec![
        ImageSource::Embedded {
            name: "astronaut.jpg",
            bytes: include_bytes!("../assets/examples/astronaut.jpg"),
        },
        ImageSource::Embedded {
            name: "chelsea.png",
            bytes: include_bytes!("../assets/examples/chelsea.png"),
        },
    ]
}

/// Decodes and preprocesses every source (in parallel, results in input order): each entry is the
/// `(3, H, W)` CHW floats or the error that names the file.
pub fn prepare_images(
    sources: &[ImageSource],
    cfg: &PreprocessConfig,
    limits: &DecodeLimits,
) -> Vec<Result<Vec<f32>, DataError>> {
    sources
        .par_iter()
        .map(|source| {
            let image = match source {
                ImageSource::File(path) => decode_rgb8(path, limits)?,
                ImageSource::Embedded { name, bytes } => {
                    decode_rgb8_bytes(bytes, Path::new(name), limits)?
                }
            };
            preprocess(&image, cfg)
        })
        .collect()
}
