//! Training and validation sets from a user's folder or COCO json, with their transforms.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tresnet_data::coco::{CocoDataset, CocoOptions};
use tresnet_data::{
    DecodeLimits, ImageFolder, ImageListDataset, ImageSource, ImageTransform, LabelTable,
    LabelledBox, PreprocessConfig, TrainCrop, TrainTransform,
};

use crate::config::{Augment, TrainConfig};
use tresnet_runtime::TaskKind;

/// The label of one training image.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A class index (single-label).
    Class(usize),
    /// One 0/1 value per class (multi-label).
    MultiHot(Arc<[f32]>),
    /// The objects of an image (detection).
    Boxes(Arc<DetectionTarget>),
}

/// The objects of one detection image.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionTarget {
    /// The image's COCO id.
    pub image_id: u64,
    /// Original `(width, height)` from the json.
    pub size: (u32, u32),
    /// File name from the json.
    pub file_name: String,
    /// Boxes to learn (not crowd, not degenerate), in original-image pixels (on the canvas
    /// once a training transform has run).
    pub boxes: Vec<LabelledBox>,
    /// Crowd regions (evaluation ignores detections on them; training leaves them out).
    pub crowd: Vec<LabelledBox>,
}

/// Images with their labels.
pub type LabelledImages = Vec<(ImageSource, Target)>;

/// Labelled images split into training and validation.
#[derive(Debug, Clone)]
pub struct TrainingData {
    /// Single- or multi-label.
    pub task: TaskKind,
    /// Class names in index order.
    pub class_names: Vec<String>,
    /// Training images.
    pub train: LabelledImages,
    /// Validation images.
    pub val: LabelledImages,
}

/// Holds out a seeded `fraction` of `items` (at least one item when there are two or more).
fn split<T>(mut items: Vec<T>, fraction: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x5EED_5EED));
    let n_val =
        ((items.len() as f64 * fraction).ceil() as usize).min(items.len().saturating_sub(1));
    let val_set: std::collections::HashSet<usize> = order[..n_val].iter().copied().collect();
    let mut train = Vec::new();
    let mut val = Vec::new();
    for (i, item) in items.drain(..).enumerate() {
        if val_set.contains(&i) {
            val.push(item)
        } else {
            train.push(item)
        }
    }
    (train, val)
}

fn folder_items(folder: &ImageFolder) -> LabelledImages {
    folder
        .samples
        .iter()
        .map(|(p, c)| (ImageSource::File(p.clone()), Target::Class(*c)))
        .collect()
}

fn coco_items(json: &Path, images: &Path, task: TaskKind) -> Result<(Vec<String>, LabelledImages)> {
    let options = match task {
        // Every image: those without objects teach the detector what background is.
        TaskKind::Detection => CocoOptions::default(),
        _ => CocoOptions::multilabel(),
    };
    let ds = CocoDataset::from_file(json, options)?;
    let missing = ds.missing_images(images);
    if let Some((id, path)) = missing.first() {
        bail!(
            "{}: {} image files are missing, e.g. image {id} at {}",
            json.display(),
            missing.len(),
            path.display()
        );
    }
    let items = (0..ds.len())
        .map(|i| {
            (
                ImageSource::File(ds.image_path(images, i)),
                match task {
                    TaskKind::Detection => Target::Boxes(Arc::new(detection_target(&ds, i))),
                    _ => Target::MultiHot(Arc::from(ds.multi_hot(i))),
                },
            )
        })
        .collect();
    Ok((ds.class_names(), items))
}

/// The boxes of image `i` of a COCO dataset.
fn detection_target(ds: &CocoDataset, i: usize) -> DetectionTarget {
    let image = &ds.images[i];
    let mut target = DetectionTarget {
        image_id: image.id,
        size: (image.width, image.height),
        file_name: image.file_name.clone(),
        boxes: Vec::new(),
        crowd: Vec::new(),
    };
    for o in ds.objects[i].iter().filter(|o| !o.degenerate) {
        let b = LabelledBox {
            class: o.class,
            bbox: o.bbox_xyxy,
        };
        if o.iscrowd {
            target.crowd.push(b);
        } else {
            target.boxes.push(b);
        }
    }
    target
}

impl TrainingData {
    /// Single-label data from an ImageFolder tree; validation from `val_dir` (same classes) or a
    /// seeded fraction of the training images.
    pub fn from_image_folder(
        dir: &Path,
        val_dir: Option<&Path>,
        val_fraction: f64,
        seed: u64,
    ) -> Result<Self> {
        let folder = ImageFolder::open(dir)?;
        if folder.is_empty() {
            bail!("{}: no images under the class folders", dir.display());
        }
        let items = folder_items(&folder);
        let (train, val) = match val_dir {
            Some(v) => {
                let val = ImageFolder::open(v)?;
                if val.classes != folder.classes {
                    bail!(
                        "{}: classes {:?} differ from the training set's {:?}",
                        v.display(),
                        val.classes,
                        folder.classes
                    );
                }
                (items, folder_items(&val))
            }
            None => split(items, val_fraction, seed),
        };
        Ok(Self {
            task: TaskKind::SingleLabel,
            class_names: folder.classes,
            train,
            val,
        })
    }

    /// Multi-label or detection data from a COCO instances json and its image folder;
    /// validation from another json + folder or a seeded fraction.
    pub fn from_coco(
        json: &Path,
        images: &Path,
        val: Option<(&Path, &Path)>,
        task: TaskKind,
        val_fraction: f64,
        seed: u64,
    ) -> Result<Self> {
        if task == TaskKind::SingleLabel {
            bail!(
                "{}: a COCO json trains multi-label or detection",
                json.display()
            );
        }
        let (class_names, items) = coco_items(json, images, task)?;
        let (train, val) = match val {
            Some((vj, vi)) => {
                let (val_names, val_items) = coco_items(vj, vi, task)?;
                if val_names != class_names {
                    bail!(
                        "{}: categories differ from {}",
                        vj.display(),
                        json.display()
                    );
                }
                (items, val_items)
            }
            None => split(items, val_fraction, seed),
        };
        Ok(Self {
            task,
            class_names,
            train,
            val,
        })
    }

    /// Reads the data a [`DataSpec`] names: folders are single-label, COCO files multi-label.
    pub fn load(spec: &crate::checkpoint::DataSpec, val_fraction: f64, seed: u64) -> Result<Self> {
        let task = match spec {
            crate::checkpoint::DataSpec::Folder { .. } => TaskKind::SingleLabel,
            crate::checkpoint::DataSpec::Coco { .. } => TaskKind::MultiLabel,
            crate::checkpoint::DataSpec::LabelFile {
                images,
                labels,
                val_labels,
            } => {
                return Self::from_label_file(
                    images,
                    labels,
                    val_labels.as_deref(),
                    None,
                    val_fraction,
                    seed,
                );
            }
        };
        Self::load_task(spec, task, val_fraction, seed)
    }

    /// Reads the data a [`DataSpec`] names for `task` (a COCO file can also train detection).
    pub fn load_task(
        spec: &crate::checkpoint::DataSpec,
        task: TaskKind,
        val_fraction: f64,
        seed: u64,
    ) -> Result<Self> {
        match spec {
            crate::checkpoint::DataSpec::Folder { train, val } => {
                if task != TaskKind::SingleLabel {
                    bail!(
                        "{}: an image folder trains single-label only",
                        train.display()
                    );
                }
                Self::from_image_folder(train, val.as_deref(), val_fraction, seed)
            }
            crate::checkpoint::DataSpec::LabelFile {
                images,
                labels,
                val_labels,
            } => Self::from_label_file(
                images,
                labels,
                val_labels.as_deref(),
                Some(task),
                val_fraction,
                seed,
            ),
            crate::checkpoint::DataSpec::Coco {
                train_json,
                train_images,
                val,
            } => Self::from_coco(
                train_json,
                train_images,
                val.as_ref().map(|(j, i)| (j.as_path(), i.as_path())),
                task,
                val_fraction,
                seed,
            ),
        }
    }

    /// A flat image folder labelled by a CSV/TSV file (`file,labels`, several labels separated
    /// by `;`). The task is `task`, else multi-label when any image has several labels, else
    /// single-label; the classes are the training file's distinct labels, sorted. A separate
    /// validation file may use only those labels.
    pub fn from_label_file(
        images: &Path,
        labels: &Path,
        val_labels: Option<&Path>,
        task: Option<TaskKind>,
        val_fraction: f64,
        seed: u64,
    ) -> Result<Self> {
        let table = LabelTable::read(labels, images)?;
        let task = task.unwrap_or(if table.is_multi_label() {
            TaskKind::MultiLabel
        } else {
            TaskKind::SingleLabel
        });
        let class_names = table.label_names();
        let items = |table: &LabelTable, file: &Path| -> Result<LabelledImages> {
            table
                .rows
                .iter()
                .map(|row| {
                    let index = |label: &String| {
                        class_names.binary_search(label).map_err(|_| {
                            anyhow::anyhow!(
                                "{}: `{label}` ({}) is not a label of the training file {}",
                                file.display(),
                                row.path.display(),
                                labels.display()
                            )
                        })
                    };
                    let target = match task {
                        TaskKind::SingleLabel => {
                            if row.labels.len() != 1 {
                                bail!(
                                    "{}: {} has {} labels; a single-label task needs one                                      (or train with --task multi_label)",
                                    file.display(),
                                    row.path.display(),
                                    row.labels.len()
                                );
                            }
                            Target::Class(index(&row.labels[0])?)
                        }
                        TaskKind::MultiLabel => {
                            let mut hot = vec![0f32; class_names.len()];
                            for label in &row.labels {
                                hot[index(label)?] = 1.0;
                            }
                            Target::MultiHot(Arc::from(hot))
                        }
                        TaskKind::Detection => {
                            bail!("{}: a label file has no boxes to detect", file.display())
                        }
                    };
                    Ok((ImageSource::File(row.path.clone()), target))
                })
                .collect()
        };
        let train_items = items(&table, labels)?;
        let (train, val) = match val_labels {
            Some(v) => (train_items, items(&LabelTable::read(v, images)?, v)?),
            None => split(train_items, val_fraction, seed),
        };
        Ok(Self {
            task,
            class_names,
            train,
            val,
        })
    }

    /// Checks that both sets are usable.
    pub fn validate(&self, batch_size: usize) -> Result<()> {
        if self.train.len() < batch_size {
            bail!(
                "{} training images for a batch size of {batch_size}",
                self.train.len()
            );
        }
        if self.val.is_empty() {
            bail!("no validation images (give a validation set or a val_fraction > 0)");
        }
        Ok(())
    }
}

/// The evaluation preprocessing matching a run's training.
pub fn eval_preprocess(task: TaskKind, size: usize) -> PreprocessConfig {
    match task {
        TaskKind::SingleLabel => PreprocessConfig::imagenet_eval(size),
        TaskKind::MultiLabel | TaskKind::Detection => PreprocessConfig::multilabel(size),
    }
}

/// The evaluation preprocessing of a run: its `pretrained_cfg` when it has one (checked by
/// [`TrainConfig::validate`]), else the task's default, at the run's `input_size`.
pub fn run_preprocess(task: TaskKind, config: &TrainConfig) -> PreprocessConfig {
    config
        .pretrained_cfg
        .as_ref()
        .and_then(|cfg| PreprocessConfig::from_pretrained_cfg(cfg).ok())
        .map_or_else(
            || eval_preprocess(task, config.input_size),
            |p| p.with_input_size(config.input_size),
        )
}

/// The training transform of a run.
pub fn train_transform(task: TaskKind, config: &TrainConfig) -> ImageTransform {
    let size = config.input_size;
    let mut t = match task {
        TaskKind::SingleLabel => TrainTransform::imagenet(size),
        TaskKind::MultiLabel | TaskKind::Detection => TrainTransform::multilabel(size),
    };
    if config.pretrained_cfg.is_some() {
        // Interpolation and normalisation as the weights were trained; the crop policy stays
        // the task's.
        let run = run_preprocess(task, config);
        t.output.interpolation = run.interpolation;
        t.output.mean = run.mean;
        t.output.std = run.std;
    }
    match config.augment {
        Augment::Full => ImageTransform::Train(t),
        Augment::Light => {
            t.rand_augment = None;
            t.cutout = None;
            if task == TaskKind::MultiLabel {
                t.hflip = 0.5;
            }
            if let TrainCrop::RandomResized { scale, .. } = &mut t.crop {
                scale.0 = scale.0.max(0.25);
            }
            ImageTransform::Train(t)
        }
        Augment::None => ImageTransform::Eval(run_preprocess(task, config)),
    }
}

/// A dataset over `items` with `transform`.
pub fn dataset(
    items: &[(ImageSource, Target)],
    transform: ImageTransform,
) -> Arc<ImageListDataset<Target>> {
    Arc::new(ImageListDataset {
        items: items.to_vec(),
        transform,
        limits: DecodeLimits::default(),
        decode: tresnet_data::DecodeMode::Exact,
    })
}

/// Reads a recipe file if given, else the defaults.
pub fn load_recipe(path: Option<&Path>) -> Result<TrainConfig> {
    path.map(TrainConfig::from_toml_file)
        .transpose()
        .map(Option::unwrap_or_default)
        .context("recipe")
}
