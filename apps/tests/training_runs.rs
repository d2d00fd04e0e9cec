//! Training runs end to end on generated data: resuming a killed run reproduces the
//! uninterrupted one, a non-finite loss is caught and reported, the exported bundle loads.

use std::path::Path;

use candle_core::{DType, Device};
use tresnet::weights::{StateDict, random_state_dict, resolve_weights};
use tresnet::{BuildOptions, Layout, TResNet, TResNetConfig};
use tresnet_apps::training::{
    Augment, DataSpec, RunDefinition, Schedule, TaskKind, TrainConfig, TrainRun, TrainingData,
    load_latest_checkpoint, train,
};
use tresnet_data::{SyntheticConfig, write_synthetic_coco, write_synthetic_image_folder};

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

fn run<'a>(
    def: &RunDefinition,
    data: &'a TrainingData,
    dir: &Path,
    stop: Option<usize>,
    inject: Option<usize>,
) -> TrainRun<'a> {
    TrainRun {
        definition: def.clone(),
        data,
        run_dir: dir.to_path_buf(),
        device: Device::Cpu,
        init: random_state_dict(&Layout::new(&def.model).unwrap(), def.train.seed).unwrap(),
        quiet: true,
        stop_after_steps: stop,
        inject_nonfinite_loss_at: inject,
    }
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
    let cfg = SyntheticConfig {
        num_images: 48,
        width: 48,
        height: 48,
        min_size: 12,
        max_size: 20,
        seed: 5,
        ..SyntheticConfig::default()
    };
    let coco = write_synthetic_coco(&dir.path().join("data"), &cfg).unwrap();
    let spec = DataSpec::Coco {
        train_json: coco.annotations.clone(),
        train_images: coco.images.clone(),
        val: None,
    };
    let data = TrainingData::load(&spec, 0.25, 3).unwrap();
    assert_eq!(data.task, TaskKind::MultiLabel);
    let def = definition(&data, spec, settings());

    let whole = train(
        run(&def, &data, &dir.path().join("whole"), None, None),
        None,
    )
    .unwrap();
    assert!(!whole.stopped_early);
    assert_eq!(whole.history.len(), 2);

    // Killed after 3 steps (mid-epoch, right after a checkpoint), then resumed.
    let part = train(
        run(&def, &data, &dir.path().join("split"), Some(3), None),
        None,
    )
    .unwrap();
    assert!(part.stopped_early);
    let ckpt = load_latest_checkpoint(&dir.path().join("split")).unwrap();
    assert_eq!(
        (ckpt.state.step, ckpt.state.epoch, ckpt.state.batch_in_epoch),
        (3, 0, 3)
    );
    let resumed = train(
        run(&def, &data, &dir.path().join("split"), None, None),
        Some(ckpt),
    )
    .unwrap();
    assert_same_state(&whole.final_state, &resumed.final_state);
    let numbers = |h: &[tresnet_apps::training::EpochRecord]| -> Vec<(f64, f64, Option<f64>)> {
        h.iter()
            .map(|r| (r.train_loss, r.metric, r.ema_metric))
            .collect()
    };
    assert_eq!(numbers(&whole.history), numbers(&resumed.history));

    // The best model is a bundle the inference code loads, with thresholds for tagging.
    let bundle = resolve_weights(whole.bundle_dir.to_str().unwrap()).unwrap();
    let hub = bundle.hub_config.as_ref().unwrap();
    assert_eq!(hub.task.as_deref(), Some("multi_label"));
    assert_eq!(hub.thresholds.as_ref().unwrap().len(), 6);
    assert_eq!(hub.label_names.as_ref().unwrap()[0], "circle");
    let config = hub.to_tresnet_config().unwrap();
    TResNet::new(
        &config,
        &bundle.weights.state_dict,
        &BuildOptions::default(),
    )
    .unwrap();
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
    let outcome = train(
        run(&def, &data, &dir.path().join("run"), None, Some(1)),
        None,
    )
    .unwrap();
    assert_eq!(
        outcome.skipped_steps.len(),
        1,
        "{:?}",
        outcome.skipped_steps
    );
    assert!(
        outcome.skipped_steps[0].1.contains("loss is inf")
            && outcome.skipped_steps[0].1.contains("weights unchanged")
    );
    // Every value stayed finite.
    for (k, t) in outcome.final_state.iter() {
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
