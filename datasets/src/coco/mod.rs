//! COCO instances files: reading (serde), validation, class mapping, multi-hot targets.

mod dataset;
mod instances;

pub use dataset::{ClassOrder, CocoDataset, CocoObject, CocoOptions, ImageSelection};
pub use instances::{CocoAnnotation, CocoCategory, CocoImage, CocoInstances};
