//! # tresnet-data
//!
//! Getting pixels into a TResNet exactly as the Python references do: decoding real-world files
//! (EXIF orientation, grayscale/CMYK/alpha/16-bit to RGB8, decompression-bomb limits), resizing as
//! PIL does (antialiased bilinear/bicubic; squish or resize + centre crop), scaling to `[0, 1]`,
//! and walking photo folders.
//!
//! This crate depends on no model crate; preprocessing is described by [`PreprocessConfig`], read
//! from a model's `pretrained_cfg`.

mod background_priority;
mod baseline_jpeg;
mod box_transform;
pub mod coco;
mod decode;
mod detection_dataset;
mod error;
mod eval_transform;
mod image_folder;
mod image_list_dataset;
mod label_table;
mod loader;
mod photo_walk;
mod preprocess_config;
mod rand_augment;
mod safe_path;
mod scaled_jpeg;
mod synthetic;
mod train_transform;

pub use box_transform::{BoxXyxy, Placement, hflip_with_boxes, letterbox, squish};
pub use decode::{DecodeLimits, DecodeMode, decode_rgb8, decode_rgb8_bytes};
pub use detection_dataset::{
    CanvasFit, DetectionDataset, DetectionSample, DetectionTransform, LabelledBox,
};
pub use error::{DataError, Result};
pub use eval_transform::{preprocess, resize_for_model, stack_batch, to_chw_floats};
pub use image_folder::ImageFolder;
pub use image_list_dataset::{ImageListDataset, ImageSource, ImageTransform};
pub use label_table::{LABEL_DELIMITER, LabelTable, LabelledFile};
pub use loader::{BadItemPolicy, Batch, Dataset, Loader, LoaderOptions};
pub use photo_walk::{IMAGE_EXTENSIONS, PhotoWalk, has_image_extension, walk_photos};
pub use preprocess_config::{Interpolation, PreprocessConfig, ResizeMode};
pub use rand_augment::{AugmentOp, RAND_AUGMENT_OPS, RandAugment, apply_op};
pub use safe_path::join_inside;
pub use scaled_jpeg::decode_rgb8_for_model;
pub use synthetic::{
    SHAPES, Shape, SyntheticCoco, SyntheticConfig, SyntheticFormat, SyntheticObject, render_scene,
    write_synthetic_coco, write_synthetic_image_folder,
};
pub use train_transform::{TrainCrop, TrainTransform, cutout, random_resized_crop};
