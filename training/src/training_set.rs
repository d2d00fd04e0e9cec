//! The training images of a run with their augmentation, as the loader reads them.

use std::sync::Arc;

use anyhow::Result;
use tresnet_data::{ImageListDataset, ImageSource, Loader, LoaderOptions};
use tresnet_runtime::TaskKind;

use crate::config::TrainConfig;
use crate::data::{Target, dataset, train_transform};
use crate::detection_data::{DetectionTrainingSet, detection_transform};

/// A run's training set: images with class or multi-hot targets, or images with boxes (their
/// geometry transformed with the image).
pub enum TrainingSet {
    /// Single- and multi-label runs.
    Classification(Arc<ImageListDataset<Target>>),
    /// Detection runs.
    Detection(Arc<DetectionTrainingSet>),
}

impl TrainingSet {
    /// The training images of a `task` run with `config`'s augmentation.
    pub fn new(task: TaskKind, images: &[(ImageSource, Target)], config: &TrainConfig) -> Self {
        match task {
            TaskKind::Detection => Self::Detection(Arc::new(DetectionTrainingSet::new(
                images,
                detection_transform(config, true),
            ))),
            TaskKind::SingleLabel | TaskKind::MultiLabel => {
                Self::Classification(dataset(images, train_transform(task, config)))
            }
        }
    }

    /// A loader over the set: `(image, target)` pairs, `options.batch_size` at a time.
    pub fn loader(&self, options: &LoaderOptions) -> Result<Loader<(Vec<f32>, Target)>> {
        Ok(match self {
            Self::Classification(set) => Loader::new(Arc::clone(set), options)?,
            Self::Detection(set) => Loader::new(Arc::clone(set), options)?,
        })
    }
}
