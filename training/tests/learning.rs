//! Learning really happens: a small TResNet trained from scratch on the CPU on the synthetic
//! shapes dataset reaches top-1 ≥ 90 % (single-label) and mAP ≥ 90 % (multi-label).
//! (Measured when written, on two cores: single-label 94.6 % in about 30 s, multi-label 97.4 % in
//! about 70 s; the curves are printed with `--nocapture`.)
#![allow(clippy::print_stderr)]

use tresnet::weights::random_state_dict;
use tresnet::{Layout, TResNetConfig};
use tresnet_data::{SyntheticConfig, write_synthetic_coco, write_synthetic_image_folder};
use tresnet_training::{
    Augment, DataSpec, RunDefinition, TrainConfig, TrainRun, TrainingData, train,
};

fn small_tresnet(classes: usize) -> TResNetConfig {
    TResNetConfig {
        layers: [1, 1, 1, 1],
        width_factor: 0.25,
        num_classes: classes,
        ..TResNetConfig::variant("tresnet_m").unwrap()
    }
}

fn run(spec: DataSpec, epochs: usize, lr: f64) -> (Vec<f64>, f64) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        epochs,
        lr,
        input_size: 64,
        augment: Augment::None,
        seed: 1,
        val_fraction: 0.1,
        ..TrainConfig::default()
    };
    let data = TrainingData::load(&spec, cfg.val_fraction, cfg.seed).unwrap();
    let model = small_tresnet(data.class_names.len());
    let definition = RunDefinition {
        train: cfg,
        model: model.clone(),
        task: data.task,
        class_names: data.class_names.clone(),
        data: spec,
    };
    let outcome = train(
        TrainRun {
            definition,
            data: &data,
            run_dir: dir.path().join("run"),
            device: candle_core::Device::Cpu,
            init: random_state_dict(&Layout::new(&model).unwrap(), 1).unwrap(),
            quiet: true,
        },
        None,
    )
    .unwrap();
    let curve: Vec<f64> = outcome.history.iter().map(|r| r.metric).collect();
    (curve, outcome.best_metric.unwrap())
}

#[test]
fn single_label_from_scratch_reaches_90_percent_top1() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SyntheticConfig {
        max_objects: 1,
        ..SyntheticConfig::shapes_64(2000, 11)
    };
    write_synthetic_image_folder(dir.path(), &cfg).unwrap();
    let (curve, best) = run(
        DataSpec::Folder {
            train: dir.path().to_path_buf(),
            val: None,
        },
        10,
        0.01,
    );
    eprintln!("single-label top-1 per epoch: {curve:.1?}");
    assert!(best >= 90.0, "best top-1 {best:.2}% ({curve:.1?})");
}

#[test]
fn multi_label_from_scratch_reaches_90_percent_map() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_synthetic_coco(dir.path(), &SyntheticConfig::shapes_64(2000, 12)).unwrap();
    let spec = DataSpec::Coco {
        train_json: written.annotations,
        train_images: written.images,
        val: None,
    };
    let (curve, best) = run(spec, 20, 0.005);
    eprintln!("multi-label mAP per epoch: {curve:.1?}");
    assert!(best >= 90.0, "best mAP {best:.2}% ({curve:.1?})");
}
