//! A [`Dataset`] over a list of images with targets, decoded and transformed on load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::rngs::StdRng;

use crate::decode::{DecodeLimits, DecodeMode, decode_rgb8, decode_rgb8_bytes, read_image_file};
use crate::error::Result;
use crate::eval_transform::preprocess;
use crate::loader::Dataset;
use crate::preprocess_config::PreprocessConfig;
use crate::scaled_jpeg::decode_rgb8_for_model;
use crate::train_transform::TrainTransform;

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A file on disk.
    File(PathBuf),
    /// Encoded bytes in memory (e.g. compiled into a binary), with a name for reports.
    Bytes {
        /// A file-like name.
        name: String,
        /// The encoded image.
        bytes: Arc<[u8]>,
    },
}

impl ImageSource {
    /// The name used in reports.
    pub fn name(&self) -> String {
        match self {
            ImageSource::File(p) => p.display().to_string(),
            ImageSource::Bytes { name, .. } => name.clone(),
        }
    }

    /// Decodes the image (see [`decode_rgb8`]).
    pub fn decode(&self, limits: &DecodeLimits) -> Result<image::RgbImage> {
        match self {
            ImageSource::File(path) => decode_rgb8(path, limits),
            ImageSource::Bytes { name, bytes } => decode_rgb8_bytes(bytes, Path::new(name), limits),
        }
    }

    /// Decodes the image for a model whose evaluation preprocessing is `cfg`: exactly, or (in
    /// [`DecodeMode::ReducedForModel`]) no larger than `cfg`'s resize needs.
    pub fn decode_for(
        &self,
        limits: &DecodeLimits,
        mode: DecodeMode,
        cfg: &PreprocessConfig,
    ) -> Result<image::RgbImage> {
        match (mode, self) {
            (DecodeMode::Exact, _) => self.decode(limits),
            (DecodeMode::ReducedForModel, ImageSource::File(path)) => {
                decode_rgb8_for_model(&read_image_file(path, limits)?, path, limits, cfg)
            }
            (DecodeMode::ReducedForModel, ImageSource::Bytes { name, bytes }) => {
                decode_rgb8_for_model(bytes, Path::new(name), limits, cfg)
            }
        }
    }
}

/// Evaluation or training preprocessing.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageTransform {
    /// Deterministic resize / crop.
    Eval(PreprocessConfig),
    /// Random crop, flip and augmentation from the sample's random stream.
    Train(TrainTransform),
}

impl ImageTransform {
    /// Output `(height, width)`.
    pub fn output_size(&self) -> (usize, usize) {
        let cfg = match self {
            ImageTransform::Eval(cfg) => cfg,
            ImageTransform::Train(t) => &t.output,
        };
        (cfg.height, cfg.width)
    }
}

/// Images with targets of any type; an item is `((3, H, W) floats, target)`.
#[derive(Debug, Clone)]
pub struct ImageListDataset<T> {
    /// Sources and their targets.
    pub items: Vec<(ImageSource, T)>,
    /// How each image is prepared.
    pub transform: ImageTransform,
    /// Decoding limits.
    pub limits: DecodeLimits,
    /// Exact or model-sized decoding (the latter applies to [`ImageTransform::Eval`] only;
    /// training crops need every pixel).
    pub decode: DecodeMode,
}

impl<T: Clone + Send + Sync + 'static> Dataset for ImageListDataset<T> {
    type Item = (Vec<f32>, T);

    fn len(&self) -> usize {
        self.items.len()
    }

    fn get(&self, index: usize, rng: &mut StdRng) -> Result<Self::Item> {
        let (source, target) = &self.items[index];
        let floats = match &self.transform {
            ImageTransform::Eval(cfg) => {
                preprocess(&source.decode_for(&self.limits, self.decode, cfg)?, cfg)?
            }
            ImageTransform::Train(t) => t.apply(&source.decode(&self.limits)?, rng)?,
        };
        Ok((floats, target.clone()))
    }
}
