//! Training runs end to end on generated data: resuming a killed run reproduces the
//! uninterrupted one, a non-finite loss is caught and reported, the exported bundle loads.

use std::path::Path;

use candle_core::{DType, Device};
use std::ops::ControlFlow;
use tresnet::weights::{StateDict, random_state_dict, resolve_weights};
use tresnet::{BuildOptions, Layout, TResNet, TResNetConfig};

use candle_core::Tensor;
use tresnet_data::{SyntheticConfig, write_synthetic_coco, write_synthetic_image_folder};
use tresnet_runtime::{BundleConfig, HeadName, TaskKind};
use tresnet_training::{
    Augment, Checkpoint, DataSpec, INITIAL_LOSS_SCALE, Precision, RunDefinition, Schedule,
    StepOutcome, Target, TrainConfig, TrainOutcome, TrainRun, Trainer, TrainingData,
    epochs_without_improvement, load_latest_checkpoint, train_with,
};

fn tiny_config(classes: usize) -> TResNetConfig {
    TResNetConfig {
        layers: [1, 1, 1, 1],
        width_factor: 0.125,
        num_classes: classes,
        ..TResNetConfig::variant("tresnet_m").unwrap()
    }
}

fn settings() -> TrainConfig {
    TrainConfig {
        epochs: 2,
        batch_size: 8,
        lr: 3e-3,
        input_size: 48,
        augment: Augment::Full,
        ema_decay: Some(0.9),
        clip_grad: Some(5.0),
        schedule: Schedule::one_cycle(),
        workers: 2,
        val_fraction: 0.25,
        seed: 3,
        ..TrainConfig::default()
    }
}

fn definition(data: &TrainingData, spec: DataSpec, train: TrainConfig) -> RunDefinition {
    RunDefinition {
        train,
        model: tiny_config(data.class_names.len()),
        task: data.task,
        class_names: data.class_names.clone(),
        data: spec,
    }
}

fn run<'a>(def: &RunDefinition, data: &'a TrainingData, dir: &Path) -> TrainRun<'a> {
    TrainRun {
        definition: def.clone(),
        data,
        run_dir: dir.to_path_buf(),
        device: Device::Cpu,
        init: random_state_dict(&Layout::new(&def.model).unwrap(), def.train.seed).unwrap(),
        quiet: true,
    }
}

/// Trains, stopping (as if killed right after a checkpoint) once `stop` optimiser steps are
/// done in total.
fn train_until(run: TrainRun<'_>, resume: Option<Checkpoint>, stop: Option<usize>) -> TrainOutcome {
    train_with(run, resume, |state| {
        if stop.is_some_and(|s| state.step >= s) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap()
}

/// A synthetic multi-label COCO set of `num_images` 48×48 images under `dir`, loaded with a
/// quarter held out.
fn synthetic_multilabel(dir: &Path, num_images: usize, seed: u64) -> (DataSpec, TrainingData) {
    let cfg = SyntheticConfig {
        num_images,
        width: 48,
        height: 48,
        min_size: 12,
        max_size: 20,
        seed,
        ..SyntheticConfig::default()
    };
    let coco = write_synthetic_coco(&dir.join("data"), &cfg).unwrap();
    let spec = DataSpec::Coco {
        train_json: coco.annotations.clone(),
        train_images: coco.images.clone(),
        val: None,
    };
    let data = TrainingData::load(&spec, 0.25, 3).unwrap();
    (spec, data)
}

fn assert_same_state(a: &StateDict, b: &StateDict) {
    assert_eq!(a.len(), b.len());
    for (k, t) in a.iter() {
        let u = b.get(k).unwrap();
        let d = (t.to_dtype(DType::F64).unwrap() - u.to_dtype(DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d == 0.0, "{k} differs by {d}");
    }
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, data) = synthetic_multilabel(dir.path(), 48, 5);
    assert_eq!(data.task, TaskKind::MultiLabel);
    // Mixup, CutMix, stochastic depth and class-balanced draws on: their draws follow the
    // run's position, not a generator's state.
    let mixing = TrainConfig {
        mixup: 0.4,
        cutmix: 1.0,
        drop_path: 0.2,
        balance: true,
        ..settings()
    };
    let def = definition(&data, spec, mixing);

    let whole = train_until(run(&def, &data, &dir.path().join("whole")), None, None);
    assert!(!whole.stopped_early);
    assert_eq!(whole.history.len(), 2);

    // Killed after 3 steps (mid-epoch, right after a checkpoint), then resumed.
    let part = train_until(run(&def, &data, &dir.path().join("split")), None, Some(3));
    assert!(part.stopped_early);
    let ckpt = load_latest_checkpoint(&dir.path().join("split")).unwrap();
    assert_eq!(
        (ckpt.state.step, ckpt.state.epoch, ckpt.state.batch_in_epoch),
        (3, 0, 3)
    );
    let resumed = train_until(
        run(&def, &data, &dir.path().join("split")),
        Some(ckpt),
        None,
    );
    assert_same_state(&whole.final_state, &resumed.final_state);
    let numbers = |h: &[tresnet_training::EpochRecord]| -> Vec<(f64, f64, Option<f64>)> {
        h.iter()
            .map(|r| (r.train_loss, r.metric, r.ema_metric))
            .collect()
    };
    assert_eq!(numbers(&whole.history), numbers(&resumed.history));

    // The best model is a bundle the inference code loads, with thresholds for tagging.
    let bundle = resolve_weights(whole.bundle_dir.to_str().unwrap()).unwrap();
    let config = BundleConfig::from_hub(bundle.hub_config.clone().unwrap()).unwrap();
    assert_eq!(config.settings.task, Some(TaskKind::MultiLabel));
    assert_eq!(config.settings.thresholds.as_ref().unwrap().len(), 6);
    assert_eq!(config.hub.label_names.as_ref().unwrap()[0], "circle");
    let config = config.hub.to_tresnet_config().unwrap();
    TResNet::new(
        &config,
        &bundle.weights.state_dict,
        &BuildOptions::default(),
    )
    .unwrap();
}

#[test]
fn an_f16_mixed_precision_run_resumes_with_its_loss_scale_and_exports_f32_weights() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SyntheticConfig {
        num_images: 32,
        width: 48,
        height: 48,
        min_size: 12,
        max_size: 20,
        seed: 8,
        ..SyntheticConfig::default()
    };
    write_synthetic_image_folder(&dir.path().join("data"), &cfg).unwrap();
    let spec = DataSpec::Folder {
        train: dir.path().join("data"),
        val: None,
    };
    let data = TrainingData::load(&spec, 0.25, 3).unwrap();
    let def = definition(
        &data,
        spec,
        TrainConfig {
            epochs: 1,
            ema_decay: None,
            precision: Precision::F16Mixed,
            ..settings()
        },
    );
    let whole = train_until(run(&def, &data, &dir.path().join("whole")), None, None);
    assert!(whole.skipped_steps.is_empty(), "{:?}", whole.skipped_steps);
    let record = &whole.history[0];
    assert!(record.train_loss.is_finite() && record.metric.is_finite());
    for (k, t) in whole.final_state.iter() {
        if k.ends_with("num_batches_tracked") {
            continue;
        }
        assert_eq!(t.dtype(), DType::F32, "{k}");
        let sum = t.sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(sum.is_finite(), "{k} is not finite");
    }

    // Killed after 2 steps; the checkpoint carries the scaler, so the resumed run is the same run.
    let part = train_until(run(&def, &data, &dir.path().join("split")), None, Some(2));
    assert!(part.stopped_early);
    let ckpt = load_latest_checkpoint(&dir.path().join("split")).unwrap();
    let scale = ckpt
        .state
        .loss_scale
        .expect("f16 runs checkpoint their loss scale");
    assert!(
        scale.scale <= INITIAL_LOSS_SCALE && scale.scale >= 1.0,
        "{scale:?}"
    );
    let resumed = train_until(
        run(&def, &data, &dir.path().join("split")),
        Some(ckpt),
        None,
    );
    assert_same_state(&whole.final_state, &resumed.final_state);
    assert_eq!(
        whole.overflow_steps,
        part.overflow_steps + resumed.overflow_steps
    );
}

#[test]
fn a_non_finite_loss_is_caught_and_the_step_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SyntheticConfig {
        num_images: 24,
        width: 48,
        height: 48,
        min_size: 16,
        max_size: 24,
        seed: 2,
        ..SyntheticConfig::default()
    };
    write_synthetic_image_folder(&dir.path().join("data"), &cfg).unwrap();
    let spec = DataSpec::Folder {
        train: dir.path().join("data"),
        val: None,
    };
    let data = TrainingData::load(&spec, 0.25, 3).unwrap();
    let def = definition(
        &data,
        spec,
        TrainConfig {
            epochs: 1,
            ema_decay: None,
            ..settings()
        },
    );
    let run = run(&def, &data, &dir.path().join("run"));
    let mut trainer = Trainer::new(def.clone(), &run.init, 3, &Device::Cpu).unwrap();
    let before = trainer.weights().unwrap();
    // A batch of infinite pixels: NaNs through the network (ReLUs turn some into zeros, so the
    // loss can come out finite while the gradient is not).
    let images = Tensor::full(f32::INFINITY, (8, 3, 48, 48), &Device::Cpu).unwrap();
    let targets: Vec<Target> = (0..8).map(|i| Target::Class(i % 6)).collect();
    let outcome = trainer.step(&images, &targets).unwrap();
    let StepOutcome::Skipped { message } = &outcome else {
        panic!("{outcome:?}");
    };
    assert!(
        (message.contains("loss is NaN") || message.contains("gradient is NaN or infinite"))
            && message.contains("weights unchanged"),
        "{message}"
    );
    assert_eq!(trainer.skipped_steps().len(), 1);
    assert_eq!(trainer.state().step, 0);
    // Weights and batch-norm running statistics alike.
    assert_same_state(&before, &trainer.weights().unwrap());
    // The next good batch updates as usual, and every value stays finite.
    let images = Tensor::rand(0f32, 1f32, (8, 3, 48, 48), &Device::Cpu).unwrap();
    let outcome = trainer.step(&images, &targets).unwrap();
    assert!(
        matches!(outcome, StepOutcome::Updated { .. }),
        "{outcome:?}"
    );
    for (k, t) in trainer.weights().unwrap().iter() {
        if t.dtype() == DType::F32 {
            let s = t
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(s.is_finite(), "{k}");
        }
    }
}

#[test]
fn ten_non_finite_losses_in_a_row_end_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SyntheticConfig {
        num_images: 24,
        width: 48,
        height: 48,
        min_size: 16,
        max_size: 24,
        seed: 2,
        ..SyntheticConfig::default()
    };
    write_synthetic_image_folder(&dir.path().join("data"), &cfg).unwrap();
    let spec = DataSpec::Folder {
        train: dir.path().join("data"),
        val: None,
    };
    let data = TrainingData::load(&spec, 0.25, 3).unwrap();
    let def = definition(&data, spec, settings());
    let run = run(&def, &data, &dir.path().join("run"));
    let mut trainer = Trainer::new(def.clone(), &run.init, 3, &Device::Cpu).unwrap();
    let images = Tensor::full(f32::NAN, (8, 3, 48, 48), &Device::Cpu).unwrap();
    let targets: Vec<Target> = (0..8).map(|i| Target::Class(i % 6)).collect();
    for _ in 0..9 {
        trainer.step(&images, &targets).unwrap();
    }
    let err = trainer.step(&images, &targets).unwrap_err();
    assert!(format!("{err:#}").contains("consecutive"), "{err:#}");
}

#[test]
fn a_resumed_detection_run_ends_where_an_uninterrupted_one_does() {
    use tresnet_heads::detection::{DetectorConfig, pyramid_channels, random_detector_state};
    let dir = tempfile::tempdir().unwrap();
    let cfg = SyntheticConfig {
        num_images: 40,
        width: 64,
        height: 64,
        min_size: 12,
        max_size: 30,
        seed: 8,
        ..SyntheticConfig::default()
    };
    let coco = write_synthetic_coco(&dir.path().join("data"), &cfg).unwrap();
    let spec = DataSpec::Coco {
        train_json: coco.annotations.clone(),
        train_images: coco.images.clone(),
        val: None,
    };
    let data = TrainingData::load_task(&spec, TaskKind::Detection, 0.25, 3).unwrap();
    assert_eq!(data.task, TaskKind::Detection);
    let mut def = definition(
        &data,
        spec,
        TrainConfig {
            input_size: 64,
            detector: Some(DetectorConfig::small(6, 16, 1)),
            ..settings()
        },
    );
    def.model = tiny_config(0);
    let backbone = TResNet::random(&def.model, 1, &BuildOptions::default()).unwrap();
    let channels = pyramid_channels(&backbone.feature_info()).unwrap();
    let start = |d: &Path| {
        let mut r = run(&def, &data, d);
        for (k, v) in random_detector_state(def.train.detector.as_ref().unwrap(), channels, 4)
            .unwrap()
            .iter()
        {
            r.init.insert(k, v.clone());
        }
        r
    };
    let whole = train_until(start(&dir.path().join("whole")), None, None);
    assert_eq!(whole.history.len(), 2);
    assert!(whole.history.iter().all(|r| r.ap50.is_some()));
    assert!(whole.final_state.contains("fcos.cls_logits.weight"));
    let part = train_until(start(&dir.path().join("split")), None, Some(2));
    assert!(part.stopped_early);
    let ckpt = load_latest_checkpoint(&dir.path().join("split")).unwrap();
    let resumed = train_until(start(&dir.path().join("split")), Some(ckpt), None);
    assert_same_state(&whole.final_state, &resumed.final_state);
    let numbers = |h: &[tresnet_training::EpochRecord]| -> Vec<(f64, f64, Option<f64>)> {
        h.iter().map(|r| (r.train_loss, r.metric, r.ap50)).collect()
    };
    assert_eq!(numbers(&whole.history), numbers(&resumed.history));
    // The bundle is a detection bundle.
    let bundle = resolve_weights(whole.bundle_dir.to_str().unwrap()).unwrap();
    let config = BundleConfig::from_hub(bundle.hub_config.clone().unwrap()).unwrap();
    assert_eq!(config.settings.task, Some(TaskKind::Detection));
    assert_eq!(config.settings.head, Some(HeadName::Fcos));
    assert!(config.settings.detector.is_some());
}

#[test]
fn epochs_without_improvement_count_from_the_best_epoch() {
    let record = |metric: f64, ema_metric: Option<f64>| tresnet_training::EpochRecord {
        epoch: 0,
        train_loss: 1.0,
        metric,
        ap50: None,
        ema_metric,
        img_per_sec: 1.0,
    };
    let count = |h: &[tresnet_training::EpochRecord]| epochs_without_improvement(h);
    assert_eq!(count(&[]), 0);
    assert_eq!(count(&[record(50.0, None)]), 0);
    assert_eq!(count(&[record(50.0, None), record(60.0, None)]), 0);
    // A tie is no improvement.
    assert_eq!(
        count(&[record(50.0, None), record(40.0, None), record(50.0, None)]),
        2
    );
    // The EMA weights' metric counts as the epoch's.
    assert_eq!(count(&[record(50.0, Some(70.0)), record(60.0, None)]), 1);
}

#[test]
fn patience_ends_a_stalled_run_and_a_resumed_run_ends_at_the_same_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, data) = synthetic_multilabel(dir.path(), 32, 9);
    // A learning rate too small to move the validation metric: it stalls from the start.
    let stalled = TrainConfig {
        epochs: 8,
        lr: 1e-12,
        schedule: Schedule::Constant,
        augment: Augment::None,
        ema_decay: None,
        patience: Some(2),
        ..settings()
    };
    let def = definition(&data, spec, stalled);
    let whole = train_until(run(&def, &data, &dir.path().join("whole")), None, None);
    let stopped_at = whole.patience_stop.expect("patience ends the run");
    assert!(stopped_at < 8, "stopped after {stopped_at} of 8 epochs");
    assert_eq!(whole.history.len(), stopped_at);
    assert_eq!(epochs_without_improvement(&whole.history), 2);
    // Every earlier epoch still had patience left.
    for n in 1..stopped_at {
        assert!(epochs_without_improvement(&whole.history[..n]) < 2);
    }
    // Killed in its second epoch, then resumed: the count comes from the checkpointed history.
    let part = train_until(run(&def, &data, &dir.path().join("split")), None, Some(4));
    assert!(part.stopped_early);
    let ckpt = load_latest_checkpoint(&dir.path().join("split")).unwrap();
    let resumed = train_until(
        run(&def, &data, &dir.path().join("split")),
        Some(ckpt),
        None,
    );
    assert_eq!(resumed.patience_stop, Some(stopped_at));
}
