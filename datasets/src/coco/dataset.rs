//! A validated COCO dataset: contiguous class indices, per-image objects, multi-hot targets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::instances::{CocoCategory, CocoImage, CocoInstances};
use crate::error::{DataError, Result};
use crate::safe_path::join_inside;

/// How category ids map to class indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClassOrder {
    /// Ascending category id (COCO's 1..90 with gaps → 0..79). This project's convention.
    #[default]
    AscendingId,
    /// The order of the `categories` array (what the ASL repository's loader does).
    FileOrder,
}

/// Which images a dataset keeps, in which order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageSelection {
    /// Every image, in `images` order.
    #[default]
    All,
    /// Images with at least one annotation, in `images` order (the multi-label protocol).
    Annotated,
    /// Images with at least one annotation, in the order of their first annotation in the file
    /// (exactly the ASL repository's `list(coco.imgToAnns.keys())`).
    AnnotatedInFirstAnnotationOrder,
}

/// Options for [`CocoDataset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CocoOptions {
    /// Class index order.
    pub class_order: ClassOrder,
    /// Image selection and order.
    pub images: ImageSelection,
}

impl CocoOptions {
    /// The multi-label evaluation protocol: classes by ascending id, annotated images only.
    pub fn multilabel() -> Self {
        Self {
            class_order: ClassOrder::AscendingId,
            images: ImageSelection::Annotated,
        }
    }

    /// The ASL repository's view of a COCO file (classes in file order, images in order of first
    /// annotation).
    pub fn asl_repo() -> Self {
        Self {
            class_order: ClassOrder::FileOrder,
            images: ImageSelection::AnnotatedInFirstAnnotationOrder,
        }
    }
}

/// One annotated object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CocoObject {
    /// Contiguous class index.
    pub class: usize,
    /// `[x1, y1, x2, y2]` in pixels.
    pub bbox_xyxy: [f32; 4],
    /// COCO's `area` (segmentation area; the box area when absent).
    pub area: f32,
    /// A crowd region.
    pub iscrowd: bool,
    /// The box is missing or has zero width or height: the object counts for labels, not boxes.
    pub degenerate: bool,
}

/// A COCO instances file, validated and indexed.
#[derive(Debug, Clone)]
pub struct CocoDataset {
    /// The json it was read from.
    pub source: PathBuf,
    /// Categories in class-index order.
    pub categories: Vec<CocoCategory>,
    /// The selected images, in dataset order.
    pub images: Vec<CocoImage>,
    /// Objects of each selected image (same indexing as `images`), in file order.
    pub objects: Vec<Vec<CocoObject>>,
    /// Entries accepted with a caveat (zero-size boxes), each naming the entry.
    pub warnings: Vec<String>,
}

impl CocoDataset {
    /// Reads and validates an instances file.
    pub fn from_file(path: &Path, options: CocoOptions) -> Result<Self> {
        let bytes = tresnet_io::read_limited(
            path,
            tresnet_io::env_limit("TRESNET_MAX_JSON_BYTES", 4 << 30),
        )
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_bytes(&bytes, path, options)
    }

    /// Parses and validates the bytes of an instances file; `path` names it in messages.
    pub fn from_json_bytes(bytes: &[u8], path: &Path, options: CocoOptions) -> Result<Self> {
        let bad = |reason: String| DataError::Annotations {
            path: path.to_path_buf(),
            reason,
        };
        let raw: CocoInstances =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("malformed COCO json: {e}")))?;

        let mut categories = raw.categories;
        if options.class_order == ClassOrder::AscendingId {
            categories.sort_by_key(|c| c.id);
        }
        let mut class_of = HashMap::with_capacity(categories.len());
        for (index, category) in categories.iter().enumerate() {
            if class_of.insert(category.id, index).is_some() {
                return Err(bad(format!("category id {} appears twice", category.id)));
            }
        }
        let mut image_index = HashMap::with_capacity(raw.images.len());
        for (index, image) in raw.images.iter().enumerate() {
            if image_index.insert(image.id, index).is_some() {
                return Err(bad(format!("image id {} appears twice", image.id)));
            }
            if join_inside(Path::new(""), &image.file_name).is_none() {
                return Err(DataError::EscapesRoot {
                    path: path.to_path_buf(),
                    entry: format!("image {}: {}", image.id, image.file_name),
                });
            }
        }

        let mut warnings = Vec::new();
        let mut objects: Vec<Vec<CocoObject>> = vec![Vec::new(); raw.images.len()];
        let mut first_annotation: Vec<usize> = Vec::new();
        for (n, ann) in raw.annotations.iter().enumerate() {
            let name = match ann.id {
                Some(id) => format!("annotation {id}"),
                None => format!("annotation #{n}"),
            };
            let &image = image_index.get(&ann.image_id).ok_or_else(|| {
                bad(format!(
                    "{name} refers to image_id {}, which is not in `images`",
                    ann.image_id
                ))
            })?;
            let &class = class_of.get(&ann.category_id).ok_or_else(|| {
                bad(format!(
                    "{name} refers to category_id {}, which is not in `categories`",
                    ann.category_id
                ))
            })?;
            let (bbox_xyxy, degenerate) = match ann.bbox.as_deref() {
                None => {
                    warnings.push(format!("{name}: no bbox; counted as a label only"));
                    ([0.0; 4], true)
                }
                Some(&[x, y, w, h]) => {
                    if ![x, y, w, h].iter().all(|v| v.is_finite()) {
                        return Err(bad(format!(
                            "{name}: bbox {:?} holds a non-number",
                            [x, y, w, h]
                        )));
                    }
                    if w < 0.0 || h < 0.0 {
                        return Err(bad(format!(
                            "{name}: bbox [{x}, {y}, {w}, {h}] has a negative width or height"
                        )));
                    }
                    let degenerate = w == 0.0 || h == 0.0;
                    if degenerate {
                        warnings.push(format!(
                            "{name}: bbox [{x}, {y}, {w}, {h}] has zero size; counted as a label only"
                        ));
                    }
                    let xyxy = [x as f32, y as f32, (x + w) as f32, (y + h) as f32];
                    if !xyxy.iter().all(|v| v.is_finite()) {
                        return Err(bad(format!(
                            "{name}: bbox [{x}, {y}, {w}, {h}] lies outside the range of 32-bit \
                             floats"
                        )));
                    }
                    let (bw, bh) = (xyxy[2] - xyxy[0], xyxy[3] - xyxy[1]);
                    if !(bw * bh).is_finite() {
                        return Err(bad(format!(
                            "{name}: bbox [{x}, {y}, {w}, {h}] has an area outside the range of \
                             32-bit floats"
                        )));
                    }
                    (xyxy, degenerate)
                }
                Some(other) => {
                    return Err(bad(format!(
                        "{name}: bbox {other:?} is not [x, y, width, height]"
                    )));
                }
            };
            if objects[image].is_empty() {
                first_annotation.push(image);
            }
            let box_area = (bbox_xyxy[2] - bbox_xyxy[0]) * (bbox_xyxy[3] - bbox_xyxy[1]);
            if let Some(a) = ann.area
                && !((a as f32).is_finite() && a >= 0.0)
            {
                return Err(bad(format!(
                    "{name}: area {a} is not a finite non-negative 32-bit number"
                )));
            }
            objects[image].push(CocoObject {
                class,
                bbox_xyxy,
                area: ann.area.map_or(box_area, |a| a as f32),
                iscrowd: ann.iscrowd != 0,
                degenerate,
            });
        }

        let order: Vec<usize> = match options.images {
            ImageSelection::All => (0..raw.images.len()).collect(),
            ImageSelection::Annotated => (0..raw.images.len())
                .filter(|&i| !objects[i].is_empty())
                .collect(),
            ImageSelection::AnnotatedInFirstAnnotationOrder => first_annotation,
        };
        let mut images_by_index: Vec<Option<CocoImage>> =
            raw.images.into_iter().map(Some).collect();
        let mut objects_by_index: Vec<Option<Vec<CocoObject>>> =
            objects.into_iter().map(Some).collect();
        let (images, objects) = order
            .into_iter()
            .map(|i| {
                (
                    images_by_index[i].take().expect("each image selected once"),
                    objects_by_index[i]
                        .take()
                        .expect("each image selected once"),
                )
            })
            .unzip();
        Ok(Self {
            source: path.to_path_buf(),
            categories,
            images,
            objects,
            warnings,
        })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.categories.len()
    }

    /// Class names in class-index order.
    pub fn class_names(&self) -> Vec<String> {
        self.categories.iter().map(|c| c.name.clone()).collect()
    }

    /// Number of selected images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether no image was selected.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The multi-hot target of image `index`: 1 for every class with at least one object (crowd
    /// regions included, as the ASL repository counts them).
    pub fn multi_hot(&self, index: usize) -> Vec<f32> {
        let mut target = vec![0.0; self.num_classes()];
        for object in &self.objects[index] {
            target[object.class] = 1.0;
        }
        target
    }

    /// The file of image `index` under `image_root` (names were checked not to escape it).
    pub fn image_path(&self, image_root: &Path, index: usize) -> PathBuf {
        join_inside(image_root, &self.images[index].file_name)
            .expect("file names are validated when the dataset is read")
    }

    /// Selected images whose file does not exist under `image_root`: `(image id, path)`.
    pub fn missing_images(&self, image_root: &Path) -> Vec<(u64, PathBuf)> {
        (0..self.len())
            .map(|i| (self.images[i].id, self.image_path(image_root, i)))
            .filter(|(_, p)| !p.is_file())
            .collect()
    }
}
