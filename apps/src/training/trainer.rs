//! The training loop: batches through the trainable network, the loss and its gradient, the
//! optimiser, EMA, validation, checkpoints, and the best model exported as a bundle.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use tresnet::weights::StateDict;
use tresnet::{BuildOptions, TResNet};
use tresnet_data::{BadItemPolicy, ImageTransform, Loader, LoaderOptions, PreprocessConfig};
use tresnet_heads::HeadsError;
use tresnet_heads::losses::{
    AsymmetricLoss, AsymmetricSingleLabelLoss, asymmetric_loss, single_label_loss,
};
use tresnet_heads::metrics::{Detection, evaluate_boxes};
use tresnet_heads::metrics::{
    ScoreTable, asl_mean_average_precision, calibrate_thresholds, top_k_accuracy,
};

use super::checkpoint::{
    Checkpoint, EpochRecord, RunDefinition, RunState, TaskKind, save_checkpoint,
};
use super::config::TrainConfig;
use super::data::{Target, TrainingData, dataset, eval_preprocess, train_transform};
use super::detection_data::{
    DetectionTrainingSet, detection_items, detection_transform, write_ground_truth,
};
use super::ema::Ema;
use super::loss_scale::{LossScaler, ScaledStep};
use super::optimizer::{Optimizer, named_gradients};
use super::progress::Progress;
use super::trainable_net::TrainableNet;
use crate::detection_inference::{DetectionOutcome, Detector, detect_over_images};
use crate::inference::InferenceOptions;
use crate::model_bundle::{BundleInfo, write_bundle};

/// A run to start or continue.
pub struct TrainRun<'a> {
    /// Settings, architecture, task and classes.
    pub definition: RunDefinition,
    /// The images.
    pub data: &'a TrainingData,
    /// Where checkpoints and the best bundle go.
    pub run_dir: PathBuf,
    /// Where to train.
    pub device: Device,
    /// Starting weights (timm names, classifier already sized for the classes).
    pub init: StateDict,
    /// No progress lines.
    pub quiet: bool,
    /// Stop (as if killed) after this many optimiser steps in total, right after a checkpoint.
    pub stop_after_steps: Option<usize>,
    /// For tests of the guard: treat the loss at this optimiser step as infinite.
    pub inject_nonfinite_loss_at: Option<usize>,
}

/// How a run ended.
#[derive(Debug)]
pub struct TrainOutcome {
    /// Finished epochs.
    pub history: Vec<EpochRecord>,
    /// Best validation metric (top-1 % or mAP %).
    pub best_metric: Option<f64>,
    /// The exported best model.
    pub bundle_dir: PathBuf,
    /// Final weights.
    pub final_state: StateDict,
    /// Steps whose loss was NaN/inf and that were skipped, with the message.
    pub skipped_steps: Vec<(usize, String)>,
    /// Whether the run stopped early at `stop_after_steps`.
    pub stopped_early: bool,
    /// Optimiser steps skipped because an f16 gradient overflowed at the loss scale (the scale
    /// was halved each time; a few at the start of an `f16-mixed` run are normal).
    pub overflow_steps: usize,
}

/// Mean over the batch of the task's loss: a scalar that backpropagates.
fn loss_of(
    task: TaskKind,
    cfg: &TrainConfig,
    logits: &Tensor,
    targets: &[Target],
    device: &Device,
) -> tresnet_heads::Result<Tensor> {
    let smoothing = cfg.label_smoothing;
    match task {
        TaskKind::SingleLabel => {
            let classes: Vec<usize> = targets
                .iter()
                .map(|t| if let Target::Class(c) = t { *c } else { 0 })
                .collect();
            single_label_loss(
                &AsymmetricSingleLabelLoss::cross_entropy(smoothing),
                logits,
                &classes,
            )
        }
        TaskKind::MultiLabel | TaskKind::Detection => {
            let k = logits.dims()[1];
            let flat: Vec<f32> = targets
                .iter()
                .flat_map(|t| match t {
                    Target::MultiHot(v) => v.to_vec(),
                    Target::Class(_) | Target::Boxes(_) => vec![0.0; k],
                })
                .collect();
            let y = Tensor::from_vec(flat, (targets.len(), k), device)?;
            let m = cfg.multilabel_loss;
            let loss = AsymmetricLoss {
                gamma_neg: m.gamma_neg,
                gamma_pos: m.gamma_pos,
                clip: m.clip,
                ..AsymmetricLoss::default()
            };
            asymmetric_loss(&loss, logits, &y)
        }
    }
}

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
    let cfg = eval_preprocess(definition.task, definition.train.input_size);
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
    let (backbone, detector) = Detector::from_state(
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
    detect_over_images(&backbone, &detector, sources, &options, |outcomes| {
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
fn collate(
    items: Vec<(usize, (Vec<f32>, Target))>,
    cfg: &PreprocessConfig,
    device: &Device,
) -> Result<(Tensor, Vec<Target>)> {
    let (images, targets): (Vec<Vec<f32>>, Vec<Target>) =
        items.into_iter().map(|(_, item)| item).unzip();
    let tensor = tresnet_data::stack_batch(&images, cfg, &Device::Cpu)?.to_device(device)?;
    Ok((tensor, targets))
}

fn clip_gradients(grads: &mut HashMap<String, Tensor>, max_norm: f64) -> Result<f64> {
    let mut total = 0.0f64;
    for g in grads.values() {
        total += g
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    let norm = total.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

/// Runs (or continues, with `resume`) a training run to its last epoch.
pub fn train(run: TrainRun<'_>, resume: Option<Checkpoint>) -> Result<TrainOutcome> {
    let def = &run.definition;
    let cfg = &def.train;
    cfg.validate()?;
    run.data.validate(cfg.batch_size)?;
    let (start, mut state, ema_start, optimizer_state) = match resume {
        Some(ckpt) => {
            if ckpt.definition != *def {
                bail!(
                    "the checkpoint was written by a run with other settings; resume without changing them"
                );
            }
            (ckpt.model, ckpt.state, ckpt.ema, Some(ckpt.optimizer))
        }
        None => (
            run.init.clone(),
            RunState {
                step: 0,
                epoch: 0,
                batch_in_epoch: 0,
                best_metric: None,
                history: Vec::new(),
                epoch_loss: (0.0, 0),
                loss_scale: None,
            },
            None,
            None,
        ),
    };
    let model = TrainableNet::new(def, &start, &run.device)?;
    let mut optimizer = Optimizer::new(cfg.optimizer, cfg.weight_decay, model.parameters());
    if let Some(s) = &optimizer_state {
        optimizer.load_state(s)?;
    }
    let mut scaler = LossScaler::new(cfg.precision.needs_loss_scaling());
    if let Some(s) = state.loss_scale {
        scaler.load_state(s);
    }
    let mut overflow_steps = 0usize;
    let mut ema = match cfg.ema_decay {
        Some(decay) => Some(Ema::new(
            decay,
            match ema_start {
                Some(e) => e,
                None => model.state_dict()?,
            },
        )),
        None => None,
    };
    let (classification_set, detection_set) = match def.task {
        TaskKind::Detection => (
            None,
            Some(Arc::new(DetectionTrainingSet::new(
                &run.data.train,
                detection_transform(cfg, true),
            ))),
        ),
        _ => (
            Some(dataset(&run.data.train, train_transform(def.task, cfg))),
            None,
        ),
    };
    let batches_per_epoch = run.data.train.len() / cfg.batch_size;
    let accumulate = cfg.accumulate.max(1);
    let steps_per_epoch = (batches_per_epoch / accumulate).max(1);
    let total_steps = steps_per_epoch * cfg.epochs;
    let out_cfg = eval_preprocess(def.task, cfg.input_size);
    let bundle_dir = run.run_dir.join("best");
    let mut skipped_steps = Vec::new();
    let (mut injected, mut consecutive_bad) = (false, 0usize);
    let all_stages: Vec<String> = vec!["body.".into()];

    while state.epoch < cfg.epochs {
        let epoch = state.epoch;
        let frozen = cfg.frozen_prefixes(epoch);
        model.set_frozen(&all_stages, false);
        model.set_frozen(&frozen, true);
        let options = LoaderOptions {
            batch_size: cfg.batch_size,
            workers: cfg.workers,
            shuffle_seed: Some(cfg.seed),
            seed: cfg.seed,
            epoch: epoch as u64,
            drop_last: true,
            bad_items: BadItemPolicy::Fail,
            start_batch: state.batch_in_epoch,
            ..LoaderOptions::default()
        };
        let loader = match (&classification_set, &detection_set) {
            (Some(set), _) => Loader::new(Arc::clone(set), &options)?,
            (None, Some(set)) => Loader::new(Arc::clone(set), &options)?,
            (None, None) => unreachable!("one of the two sets is built"),
        };
        let mut progress = Progress::new(
            format!("epoch {}/{}", epoch + 1, cfg.epochs),
            loader.num_batches(),
            run.quiet,
        );
        let mut pending: Option<HashMap<String, Tensor>> = None;
        let mut micro = 0usize;
        for batch in loader {
            let batch = batch.context("training data")?;
            let n = batch.items.len();
            let (images, targets) = collate(batch.items, &out_cfg, &run.device)?;
            let inject = !injected && run.inject_nonfinite_loss_at == Some(state.step);
            injected |= inject;
            let loss = if inject {
                Err(HeadsError::NonFinite {
                    value: f64::INFINITY,
                    context: "injected".into(),
                })
            } else if def.task == TaskKind::Detection {
                model.detection_loss(&images, &targets)?
            } else {
                loss_of(
                    def.task,
                    cfg,
                    &model.logits(&images)?,
                    &targets,
                    &run.device,
                )
            };
            let loss = match loss {
                Ok(l) => {
                    consecutive_bad = 0;
                    l
                }
                Err(HeadsError::NonFinite { value, context }) => {
                    // No gradient from this batch: the weights stay as they were.
                    let message = format!(
                        "epoch {} batch {}: loss is {value} ({context}); batch skipped, weights unchanged",
                        epoch + 1,
                        state.batch_in_epoch + 1
                    );
                    progress.step(n, &format!("[{message}]"));
                    skipped_steps.push((state.step, message));
                    consecutive_bad += 1;
                    if consecutive_bad >= 10 {
                        bail!(
                            "10 consecutive batches had a non-finite loss; stopping (lower the learning rate?)"
                        );
                    }
                    state.batch_in_epoch += 1;
                    pending = None;
                    micro = 0;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let value = f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
            let grads = named_gradients(model.parameters(), &scaler.scale_loss(&loss)?.backward()?);
            pending = Some(match pending.take() {
                None => grads,
                Some(mut sum) => {
                    for (k, g) in grads {
                        let total = match sum.remove(&k) {
                            Some(s) => (s + g)?,
                            None => g,
                        };
                        sum.insert(k, total);
                    }
                    sum
                }
            });
            micro += 1;
            state.batch_in_epoch += 1;
            state.epoch_loss.0 += value;
            state.epoch_loss.1 += 1;
            if micro < accumulate {
                progress.step(n, &format!("loss {value:.4}"));
                continue;
            }
            let mut grads = pending.take().unwrap_or_default();
            if accumulate > 1 {
                for g in grads.values_mut() {
                    *g = (&*g / accumulate as f64)?;
                }
            }
            if let ScaledStep::Overflow { scale } = scaler.unscale(&mut grads)? {
                // No update from these batches; an f16 run retries at half the loss scale.
                let message = if scaler.is_enabled() {
                    overflow_steps += 1;
                    format!(
                        "gradient overflow at loss scale {scale}; step skipped, scale now {}",
                        scaler.scale()
                    )
                } else {
                    let message = format!(
                        "epoch {} batch {}: a gradient is NaN or infinite; step skipped, weights unchanged",
                        epoch + 1,
                        state.batch_in_epoch
                    );
                    skipped_steps.push((state.step, message.clone()));
                    message
                };
                state.loss_scale = scaler.is_enabled().then(|| scaler.state());
                micro = 0;
                progress.step(n, &format!("[{message}]"));
                continue;
            }
            state.loss_scale = scaler.is_enabled().then(|| scaler.state());
            if let Some(max) = cfg.clip_grad {
                clip_gradients(&mut grads, max)?;
            }
            let lr = cfg.schedule.lr(cfg.lr, state.step, total_steps);
            optimizer.step(&grads, lr, &frozen)?;
            micro = 0;
            state.step += 1;
            if let Some(e) = ema.as_mut() {
                e.update(&model.state_dict()?)?;
            }
            progress.step(n, &format!("loss {value:.4} lr {lr:.2e}"));
            let due = cfg
                .checkpoint_every
                .is_some_and(|k| k > 0 && state.step.is_multiple_of(k));
            let stop = run.stop_after_steps.is_some_and(|s| state.step >= s);
            if due || stop {
                save_checkpoint(
                    &run.run_dir,
                    def,
                    &state,
                    &model.state_dict()?,
                    ema.as_ref().map(Ema::state),
                    &optimizer.state()?,
                )?;
            }
            if stop {
                return Ok(TrainOutcome {
                    history: state.history,
                    best_metric: state.best_metric,
                    bundle_dir,
                    final_state: model.state_dict()?,
                    skipped_steps,
                    stopped_early: true,
                    overflow_steps,
                });
            }
        }
        // End of epoch: validate the weights (and their average), keep the best.
        let current = model.state_dict()?;
        let raw = validate(def, &current, run.data, &run.device, cfg.workers)?;
        let averaged = match &ema {
            Some(e) => Some(validate(
                def,
                e.state(),
                run.data,
                &run.device,
                cfg.workers,
            )?),
            None => None,
        };
        let record = EpochRecord {
            epoch,
            train_loss: state.epoch_loss.0 / state.epoch_loss.1.max(1) as f64,
            metric: raw.metric,
            ap50: raw.ap50,
            ema_metric: averaged.as_ref().map(|v| v.metric),
            img_per_sec: progress.rate(),
        };
        let (best_of_epoch, best_state) = match (&averaged, &ema) {
            (Some(a), Some(e)) if a.metric > raw.metric => (a, e.state().clone()),
            _ => (&raw, current),
        };
        if state.best_metric.is_none_or(|b| best_of_epoch.metric > b) {
            state.best_metric = Some(best_of_epoch.metric);
            let thresholds = (def.task == TaskKind::MultiLabel).then(|| {
                let table = ScoreTable::new(
                    &best_of_epoch.scores,
                    &best_of_epoch.targets,
                    run.data.class_names.len(),
                );
                table.map(|t| {
                    calibrate_thresholds(&t)
                        .iter()
                        .map(|c| c.threshold)
                        .collect::<Vec<f32>>()
                })
            });
            let thresholds = thresholds.transpose()?;
            write_bundle(
                &bundle_dir,
                &best_state,
                &BundleInfo {
                    config: def.model.clone(),
                    task: def.task,
                    class_names: run.data.class_names.clone(),
                    preprocess: out_cfg.clone(),
                    thresholds,
                    detector: cfg.detector.clone(),
                    canvas_fit: cfg.canvas_fit,
                },
            )?;
        }
        state.history.push(record);
        state.epoch += 1;
        state.batch_in_epoch = 0;
        state.epoch_loss = (0.0, 0);
        save_checkpoint(
            &run.run_dir,
            def,
            &state,
            &model.state_dict()?,
            ema.as_ref().map(Ema::state),
            &optimizer.state()?,
        )?;
    }
    Ok(TrainOutcome {
        history: state.history,
        best_metric: state.best_metric,
        bundle_dir,
        final_state: model.state_dict()?,
        skipped_steps,
        stopped_early: false,
        overflow_steps,
    })
}
