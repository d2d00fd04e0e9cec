//! Detection data for a run: the box-aware training set, the evaluation transform, and the
//! validation split's ground truth written as a COCO instances file for the box evaluator.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use serde_json::json;
use tresnet_data::{
    Dataset, DecodeLimits, DetectionDataset, DetectionTransform, ImageSource, PreprocessConfig,
};

use crate::config::{Augment, TrainConfig};
use crate::data::{DetectionTarget, Target};

/// The canvas transform of a detection run: `train` adds the horizontal flip its augmentation
/// asks for.
pub fn detection_transform(config: &TrainConfig, train: bool) -> DetectionTransform {
    DetectionTransform {
        preprocess: PreprocessConfig::multilabel(config.input_size),
        fit: config.canvas_fit,
        hflip: if train && config.augment != Augment::None {
            0.5
        } else {
            0.0
        },
    }
}

/// The detection targets of labelled items (items whose target is not boxes are an error of the
/// caller and are skipped).
pub fn detection_items(
    items: &[(ImageSource, Target)],
) -> Vec<(ImageSource, Arc<DetectionTarget>)> {
    items
        .iter()
        .filter_map(|(source, target)| match target {
            Target::Boxes(t) => Some((source.clone(), Arc::clone(t))),
            _ => None,
        })
        .collect()
}

/// A [`DetectionDataset`] whose items carry their image's target, boxes moved onto the canvas.
pub struct DetectionTrainingSet {
    inner: DetectionDataset,
    targets: Vec<Arc<DetectionTarget>>,
}

impl DetectionTrainingSet {
    /// The set over `items` with `transform`.
    pub fn new(items: &[(ImageSource, Target)], transform: DetectionTransform) -> Self {
        let items = detection_items(items);
        Self {
            inner: DetectionDataset {
                items: items
                    .iter()
                    .map(|(s, t)| (s.clone(), t.boxes.clone()))
                    .collect(),
                transform,
                limits: DecodeLimits::default(),
            },
            targets: items.into_iter().map(|(_, t)| t).collect(),
        }
    }
}

impl Dataset for DetectionTrainingSet {
    type Item = (Vec<f32>, Target);

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn get(&self, index: usize, rng: &mut StdRng) -> tresnet_data::Result<Self::Item> {
        let sample = self.inner.get(index, rng)?;
        let target = DetectionTarget {
            boxes: sample.boxes,
            ..(*self.targets[index]).clone()
        };
        Ok((sample.image, Target::Boxes(Arc::new(target))))
    }
}

/// Writes the ground truth of `items` as a COCO instances file (category id = class index + 1,
/// named after `class_names`), atomically.
pub fn write_ground_truth(
    path: &Path,
    items: &[(ImageSource, Arc<DetectionTarget>)],
    class_names: &[String],
) -> Result<()> {
    let mut annotations = Vec::new();
    for (_, t) in items {
        for (b, crowd) in t
            .boxes
            .iter()
            .map(|b| (b, 0))
            .chain(t.crowd.iter().map(|b| (b, 1)))
        {
            let [x1, y1, x2, y2] = b.bbox;
            annotations.push(json!({
                "id": annotations.len() + 1,
                "image_id": t.image_id,
                "category_id": b.class + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": crowd,
            }));
        }
    }
    let document = json!({
        "images": items.iter().map(|(_, t)| json!({
            "id": t.image_id, "file_name": t.file_name, "width": t.size.0, "height": t.size.1,
        })).collect::<Vec<_>>(),
        "annotations": annotations,
        "categories": class_names.iter().enumerate().map(|(i, n)| json!({
            "id": i + 1, "name": n,
        })).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&document)?;
    tresnet_io::atomic_write(path, tresnet_io::Durability::Durable, |w| {
        std::io::Write::write_all(w, &bytes)
    })
    .with_context(|| format!("writing {}", path.display()))
}
