//! The COCO instances json, as stored (serde). Fields not listed here (segmentations, `info`,
//! `licenses`) are skipped without being built.

use serde::Deserialize;

/// One entry of `images`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CocoImage {
    /// Image id (unique, not necessarily contiguous or sorted).
    pub id: u64,
    /// File name relative to the image folder.
    pub file_name: String,
    /// Width in pixels (0 when absent).
    #[serde(default)]
    pub width: u32,
    /// Height in pixels (0 when absent).
    #[serde(default)]
    pub height: u32,
}

/// One entry of `categories`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CocoCategory {
    /// Category id (COCO: 1..90 with gaps).
    pub id: u64,
    /// Class name.
    pub name: String,
    /// Supercategory, when given.
    #[serde(default)]
    pub supercategory: Option<String>,
}

/// One entry of `annotations`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CocoAnnotation {
    /// Annotation id, when given.
    #[serde(default)]
    pub id: Option<u64>,
    /// The image it belongs to.
    pub image_id: u64,
    /// Its category.
    pub category_id: u64,
    /// `[x, y, width, height]` in pixels.
    #[serde(default)]
    pub bbox: Option<Vec<f64>>,
    /// Segmentation area (COCO's `area`, not the box's).
    #[serde(default)]
    pub area: Option<f64>,
    /// 1 for crowd regions.
    #[serde(default)]
    pub iscrowd: u8,
}

/// The three arrays of an instances file (`info`, `licenses` and unknown keys are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct CocoInstances {
    /// `images`.
    pub images: Vec<CocoImage>,
    /// `annotations` (absent in test-split files).
    #[serde(default)]
    pub annotations: Vec<CocoAnnotation>,
    /// `categories`.
    pub categories: Vec<CocoCategory>,
}
