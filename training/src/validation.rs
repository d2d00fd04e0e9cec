//! Scoring a state on the validation images: top-1 (single-label), ASL mAP (multi-label) or COCO
//! box AP (detection).

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use tresnet::weights::StateDict;
use tresnet::{BuildOptions, TResNet};
use tresnet_data::{ImageTransform, Loader, LoaderOptions, PreprocessConfig};
use tresnet_heads::metrics::{
    Detection, ScoreTable, asl_mean_average_precision, evaluate_boxes, top_k_accuracy,
};
use tresnet_runtime::Detector;
use tresnet_runtime::TaskKind;
use tresnet_runtime::detection_inference::{DetectionOutcome, detect_over_images};
use tresnet_runtime::inference::InferenceOptions;

use crate::checkpoint::RunDefinition;
use crate::data::{Target, TrainingData, dataset, run_preprocess};
use crate::detection_data::{detection_items, detection_transform, write_ground_truth};

/// Validation of one state: the metric (top-1 %, mAP % or COCO AP %) and the
/// `(scores, targets)` table (classification).
pub struct Validation {
    /// Top-1 accuracy, ASL mAP or COCO box AP @[0.5:0.95], in percent.
    pub metric: f64,
    /// Detection: COCO AP @0.5, in percent.
    pub ap50: Option<f64>,
    /// Row-major scores (softmax or sigmoid).
    pub scores: Vec<f32>,
    /// Row-major multi-hot targets (one-hot for single-label).
    pub targets: Vec<f32>,
}

/// Evaluates `state` on the validation images.
pub fn validate(
    definition: &RunDefinition,
    state: &StateDict,
    data: &TrainingData,
    device: &Device,
    workers: usize,
) -> Result<Validation> {
    if definition.task == TaskKind::Detection {
        return validate_detection(definition, state, data, device, workers);
    }
    let options = BuildOptions::new(device.clone(), DType::F32);
    let model = TResNet::new(&definition.model, state, &options)?;
    let cfg = run_preprocess(definition.task, &definition.train);
    let ds = dataset(&data.val, ImageTransform::Eval(cfg.clone()));
    let loader_options = LoaderOptions {
        batch_size: definition.train.batch_size,
        workers,
        ..LoaderOptions::default()
    };
    let k = data.class_names.len();
    let (mut scores, mut targets, mut classes) = (Vec::new(), Vec::new(), Vec::new());
    let mut logits_all = Vec::new();
    for batch in Loader::new(ds, &loader_options)? {
        let batch = batch?;
        if let Some((i, err)) = batch.skipped.first() {
            bail!("validation image {i}: {err}");
        }
        let (images, batch_targets) = collate(batch.items, &cfg, device)?;
        let logits = model.forward(&images)?;
        let probs = match definition.task {
            TaskKind::SingleLabel => tresnet_heads::OutputKind::Softmax,
            TaskKind::MultiLabel | TaskKind::Detection => tresnet_heads::OutputKind::Sigmoid,
        }
        .scores(&logits)?;
        scores.extend(probs.flatten_all()?.to_vec1::<f32>()?);
        logits_all.push(logits.to_device(&Device::Cpu)?.to_dtype(DType::F32)?);
        for t in batch_targets {
            match t {
                Target::Class(c) => {
                    classes.push(c);
                    targets.extend((0..k).map(|j| if j == c { 1.0 } else { 0.0 }));
                }
                Target::MultiHot(v) => targets.extend(v.iter().copied()),
                Target::Boxes(_) => bail!("box targets in a classification run"),
            }
        }
    }
    let metric = match definition.task {
        TaskKind::SingleLabel => {
            100.0 * top_k_accuracy(&Tensor::cat(&logits_all, 0)?, &classes, 1)?
        }
        TaskKind::MultiLabel | TaskKind::Detection => {
            asl_mean_average_precision(&ScoreTable::new(&scores, &targets, k)?)
        }
    };
    Ok(Validation {
        metric,
        ap50: None,
        scores,
        targets,
    })
}

/// Detection validation: the detector over the validation images, scored with the COCO box
/// protocol against their ground truth; the metric is AP @[0.5:0.95] in percent.
fn validate_detection(
    definition: &RunDefinition,
    state: &StateDict,
    data: &TrainingData,
    device: &Device,
    workers: usize,
) -> Result<Validation> {
    let detector_config = definition
        .train
        .detector
        .as_ref()
        .context("a detection run without detector settings")?;
    let detector = Detector::from_state(
        &definition.model,
        detector_config,
        state,
        &BuildOptions::new(device.clone(), DType::F32),
        detection_transform(&definition.train, false),
    )?;
    let items = detection_items(&data.val);
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let ground_truth = scratch.path().join("val_ground_truth.json");
    write_ground_truth(&ground_truth, &items, &data.class_names)?;
    let mut detections = Vec::new();
    let options = InferenceOptions {
        progress: None,
        ..InferenceOptions::new(definition.train.batch_size, workers, "")
    };
    let sources = items.iter().map(|(s, _)| s.clone()).collect();
    detect_over_images(&detector, sources, &options, |outcomes| {
        for (i, outcome) in outcomes {
            match outcome {
                DetectionOutcome::Found(found) => {
                    detections.extend(found.into_iter().map(|d| Detection {
                        image_id: items[i].1.image_id,
                        category_id: d.class as u64 + 1,
                        bbox_xywh: [
                            f64::from(d.bbox[0]),
                            f64::from(d.bbox[1]),
                            f64::from(d.bbox[2] - d.bbox[0]),
                            f64::from(d.bbox[3] - d.bbox[1]),
                        ],
                        score: f64::from(d.score),
                    }))
                }
                DetectionOutcome::Failed(reason) => bail!("validation image: {reason}"),
            }
        }
        Ok(())
    })?;
    let evaluation = evaluate_boxes(&ground_truth, &detections)?;
    // pycocotools reports −1 when nothing is defined; count that as no precision at all.
    let percent = |v: f64| 100.0 * v.max(0.0);
    Ok(Validation {
        metric: percent(evaluation.stats[0]),
        ap50: Some(percent(evaluation.stats[1])),
        scores: Vec::new(),
        targets: Vec::new(),
    })
}

/// Stacks a batch's images on `device` and returns its targets.
pub(crate) fn collate(
    items: Vec<(usize, (Vec<f32>, Target))>,
    cfg: &PreprocessConfig,
    device: &Device,
) -> Result<(Tensor, Vec<Target>)> {
    let (images, targets): (Vec<Vec<f32>>, Vec<Target>) =
        items.into_iter().map(|(_, item)| item).unzip();
    let tensor = tresnet_data::stack_batch(&images, cfg, &Device::Cpu)?.to_device(device)?;
    Ok((tensor, targets))
}
