//! `finetune`: train a TResNet on your own images (ImageFolder → single-label, COCO json →
//! multi-label, or detection with `--task detection`), from pretrained weights or from scratch,
//! and export the best model as a bundle that `embed`, `coco-eval`, `top1-eval` and `tag` load.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::json;
use tresnet::weights::{StateDict, model_config, random_state_dict, resolve_weights};
use tresnet::{FeatureInfo, Layout, TResNetConfig};
use tresnet_apps::cli::DeviceFlag;
use tresnet_data::PreprocessConfig;
use tresnet_heads::detection::{check_detector_state, pyramid_channels, random_detector_state};
use tresnet_runtime::TaskKind;
use tresnet_runtime::detection_state::split_detection_state;
use tresnet_runtime::{ModelSpec, PreprocessOverrides, load_bundle};
use tresnet_training::{
    Augment, DataSpec, OptimizerKind, Precision, RunDefinition, Schedule, TrainConfig, TrainRun,
    TrainingData, load_latest_checkpoint, load_recipe, train,
};

tresnet_apps::use_mimalloc!();

/// `--optimizer`, spelled as the recipe's `optimizer.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OptimizerName {
    /// AdamW.
    Adamw,
    /// SGD with momentum.
    Sgd,
}

/// `--schedule`, spelled as the recipe's `schedule.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
enum ScheduleName {
    /// PyTorch's OneCycleLR (the ASL recipe).
    OneCycle,
    /// Linear warm-up (`--warmup-steps`), then cosine decay to 0.
    CosineWarmup,
    /// The base rate throughout.
    Constant,
}
#[derive(Debug, Parser)]
#[command(
    name = "finetune",
    about = "Train a TResNet on your own dataset and export it as a bundle"
)]
struct Cli {
    /// ImageFolder training root (one subfolder per class): single-label.
    #[arg(long, conflicts_with = "coco")]
    data: Option<PathBuf>,
    /// ImageFolder validation root.
    #[arg(long, conflicts_with = "labels")]
    val: Option<PathBuf>,
    /// Labels of a flat --data folder: a CSV (`file,labels`) or .tsv (`file<TAB>labels`) file,
    /// several labels of one image separated by `;` (then multi-label), the format
    /// `top1-eval --labels` reads.
    #[arg(long, requires = "data")]
    labels: Option<PathBuf>,
    /// Validation labels for the same folder (default: --val-fraction of --labels held out).
    #[arg(long, requires = "labels")]
    val_labels: Option<PathBuf>,
    /// COCO instances json for training: multi-label.
    #[arg(long, requires = "images")]
    coco: Option<PathBuf>,
    /// Folder of the training json's images.
    #[arg(long)]
    images: Option<PathBuf>,
    /// COCO instances json for validation.
    #[arg(long, requires = "val_images")]
    val_coco: Option<PathBuf>,
    /// Folder of the validation json's images.
    #[arg(long)]
    val_images: Option<PathBuf>,
    /// What to learn (default: single_label for --data, multi_label for --coco). Detection
    /// trains an FPN + FCOS head on the COCO boxes.
    #[arg(long, value_enum)]
    task: Option<TaskKind>,
    /// Start from these weights (file, bundle directory or cached hub id); the classifier is
    /// re-initialised for the new classes.
    #[arg(long)]
    weights: Option<String>,
    /// Architecture (train from scratch when no --weights).
    #[arg(long)]
    backbone: Option<String>,
    /// TOML recipe (configs/*.toml); the flags below override it.
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// Run directory: checkpoints and the best model (best/).
    #[arg(short, long, default_value = "runs/finetune")]
    output: PathBuf,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with_all = ["data", "coco"])]
    resume: Option<PathBuf>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(short = 'b', long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    /// The update rule (PyTorch's defaults: AdamW 0.9/0.999/1e-8, SGD momentum 0.9 Nesterov).
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerName>,
    /// The learning-rate schedule (the recipe's `schedule.kind` spellings).
    #[arg(long, value_enum)]
    schedule: Option<ScheduleName>,
    /// Warm-up steps of the cosine_warmup schedule.
    #[arg(long, default_value_t = 0)]
    warmup_steps: usize,
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Layer-wise learning-rate decay in (0, 1] (timm's `--layer-decay`, e.g. 0.75): the head
    /// at the full rate, each block before it this factor of the next, the stem least.
    #[arg(long)]
    layer_decay: Option<f64>,
    #[arg(long)]
    clip_grad: Option<f64>,
    /// EMA decay (e.g. 0.9997).
    #[arg(long)]
    ema_decay: Option<f64>,
    /// Micro-batches per optimiser step.
    #[arg(long)]
    accumulate: Option<usize>,
    /// Stochastic depth: the last block's drop probability, rising linearly from 0 over the
    /// blocks (timm's `--drop-path`, e.g. 0.1); training passes only.
    #[arg(long)]
    drop_path: Option<f64>,
    /// Mixup's α (blend weights from Beta(α, α), as timm's `--mixup`; e.g. 0.2-0.8); 0: off.
    #[arg(long)]
    mixup: Option<f64>,
    /// CutMix's α (as timm's `--cutmix`; e.g. 1.0); 0: off.
    #[arg(long)]
    cutmix: Option<f64>,
    /// Probability that a batch is mixed at all (default 1).
    #[arg(long)]
    mixup_prob: Option<f64>,
    /// With --mixup and --cutmix both on: the share of mixed batches that use CutMix (default
    /// 0.5).
    #[arg(long)]
    mixup_switch_prob: Option<f64>,
    /// Square input size (default: the starting weights' `pretrained_cfg`, else the recipe's,
    /// else 224).
    #[arg(long)]
    input_size: Option<usize>,
    /// How much augmentation.
    #[arg(long, value_enum)]
    augment: Option<Augment>,
    /// Freeze the stem and the first N−1 stages.
    #[arg(long)]
    freeze_stages: Option<usize>,
    /// Unfreeze them at this epoch.
    #[arg(long)]
    unfreeze_epoch: Option<usize>,
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Class-balanced sampling for skewed data: draw each epoch's images with replacement,
    /// weighted by the inverse frequency of their class (multi-label: of their rarest label).
    #[arg(long)]
    balance: bool,
    /// Early stopping: end the run once this many epochs in a row have not improved the best
    /// validation metric.
    #[arg(long)]
    patience: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    val_fraction: Option<f64>,
    /// Data-loading threads.
    #[arg(short = 'j', long)]
    workers: Option<usize>,
    /// f32, or mixed precision: f16-mixed (dynamic loss scaling) or bf16-mixed (f32 master
    /// weights, batch norms and losses in both).
    #[arg(long, value_enum)]
    precision: Option<Precision>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = DeviceFlag::parse)]
    device: DeviceFlag,
    /// No progress lines.
    #[arg(short, long)]
    quiet: bool,
}

fn main() {
    tresnet_apps::allocator::keep_freed_memory();
    tresnet_apps::candle_pool::run_candle_elementwise_on_the_caller();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("finetune: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let device = cli.device.open()?;
    if let Some(dir) = &cli.resume {
        let ckpt = load_latest_checkpoint(dir)?;
        for note in &ckpt.passed_over {
            eprintln!("finetune: passed over a checkpoint that cannot be read: {note}");
        }
        let def = ckpt.definition.clone();
        let data =
            TrainingData::load_task(&def.data, def.task, def.train.val_fraction, def.train.seed)?;
        eprintln!(
            "finetune: resuming {} at epoch {} step {}",
            dir.display(),
            ckpt.state.epoch + 1,
            ckpt.state.step
        );
        let run = TrainRun {
            definition: def,
            data: &data,
            run_dir: dir.clone(),
            device,
            init: StateDict::new(),
            quiet: cli.quiet,
        };
        return report(train(run, Some(ckpt))?, cli.quiet);
    }

    let mut cfg = load_recipe(cli.recipe.as_deref())?;
    let recipe_keys = match cli.recipe.as_deref() {
        Some(path) => TrainConfig::keys_in_toml_file(path)?,
        None => Vec::new(),
    };
    // Who set the input size, if anyone (else the starting weights or the default decide).
    let size_source = if cli.input_size.is_some() {
        Some("--input-size")
    } else if recipe_keys.iter().any(|k| k == "input_size") {
        Some("the recipe")
    } else {
        None
    };
    macro_rules! set {
        ($($field:ident),*) => { $(if let Some(v) = cli.$field { cfg.$field = v; })* };
    }
    set!(
        epochs,
        batch_size,
        lr,
        weight_decay,
        accumulate,
        input_size,
        freeze_stages,
        seed,
        val_fraction,
        workers,
        drop_path,
        mixup,
        cutmix,
        mixup_prob,
        mixup_switch_prob
    );
    if cli.clip_grad.is_some() {
        cfg.clip_grad = cli.clip_grad;
    }
    if cli.ema_decay.is_some() {
        cfg.ema_decay = cli.ema_decay;
    }
    if cli.unfreeze_epoch.is_some() {
        cfg.unfreeze_epoch = cli.unfreeze_epoch;
    }
    if cli.checkpoint_every.is_some() {
        cfg.checkpoint_every = cli.checkpoint_every;
    }
    if cli.patience.is_some() {
        cfg.patience = cli.patience;
    }
    if cli.balance {
        cfg.balance = true;
    }
    if cli.layer_decay.is_some() {
        cfg.layer_decay = cli.layer_decay;
    }
    if let Some(o) = cli.optimizer {
        cfg.optimizer = match o {
            OptimizerName::Adamw => OptimizerKind::adamw(),
            OptimizerName::Sgd => OptimizerKind::sgd(),
        };
    }
    if let Some(s) = cli.schedule {
        cfg.schedule = match s {
            ScheduleName::OneCycle => Schedule::one_cycle(),
            ScheduleName::CosineWarmup => Schedule::CosineWarmup {
                warmup_steps: cli.warmup_steps,
                min_lr: 0.0,
            },
            ScheduleName::Constant => Schedule::Constant,
        };
    }
    if let Some(p) = cli.precision {
        cfg.precision = p;
    }
    if let Some(a) = cli.augment {
        cfg.augment = a;
    }
    cfg.validate()?;
    let spec = match (&cli.data, &cli.coco) {
        (Some(dir), None) if cli.labels.is_some() => DataSpec::LabelFile {
            images: dir.clone(),
            labels: cli.labels.clone().context("--labels")?,
            val_labels: cli.val_labels.clone(),
        },
        (Some(dir), None) => DataSpec::Folder {
            train: dir.clone(),
            val: cli.val.clone(),
        },
        (None, Some(json)) => DataSpec::Coco {
            train_json: json.clone(),
            train_images: cli.images.clone().context("--coco needs --images")?,
            val: cli.val_coco.clone().zip(cli.val_images.clone()),
        },
        _ => bail!(
            "give --data FOLDER (single-label) or --coco JSON --images DIR (multi-label), or --resume DIR"
        ),
    };
    let data = match (cli.task, &spec) {
        (Some(task), _) => TrainingData::load_task(&spec, task, cfg.val_fraction, cfg.seed)?,
        (None, _) => TrainingData::load(&spec, cfg.val_fraction, cfg.seed)?,
    };
    let task = data.task;
    let classes = data.class_names.len();

    // Architecture and starting weights.
    let mut keep_head = false;
    let (config, mut init) = match &cli.weights {
        Some(w) => {
            let start = StartingWeights::read(w, cli.backbone.as_deref())?;
            if task != TaskKind::Detection {
                adopt_preprocessing(&mut cfg, &start, w, size_source, &recipe_keys)?;
            }
            keep_head = start.head_fits(&data.class_names);
            let resolved = resolve_weights(w)?;
            let config = model_config(cli.backbone.as_deref(), Some(&resolved), Some(classes))?;
            let mut state = resolved.weights.state_dict;
            if !keep_head {
                state.take_prefix("head.");
            }
            eprintln!(
                "finetune: {}",
                start.head_note(&data.class_names, keep_head)
            );
            (config, state)
        }
        None => {
            let name = cli
                .backbone
                .clone()
                .or(cfg.architecture.clone())
                .context("give --weights, --backbone, or an architecture in the recipe")?;
            let mut config = TResNetConfig::variant(&name)?;
            if let Some(args) = &cfg.model_args {
                tresnet::hub_config::apply_model_args(&mut config, args)?;
            }
            (config.with_num_classes(classes), StateDict::new())
        }
    };
    // A detector's backbone has no classifier; the head is sized for the classes.
    let config = if task == TaskKind::Detection {
        let mut detector = cfg.detector.clone().unwrap_or_default();
        detector.num_classes = classes;
        detector.validate()?;
        cfg.detector = Some(detector);
        config.with_num_classes(0)
    } else {
        cfg.detector = None;
        config
    };
    // Fresh weights where the start has none (everything from scratch; the classifier always).
    let layout = Layout::new(&config)?;
    let mut fresh = random_state_dict(&layout, cfg.seed)?;
    if let Some(detector) = &cfg.detector {
        let info: Vec<FeatureInfo> = layout
            .stages
            .iter()
            .map(|s| FeatureInfo {
                name: s.name.clone(),
                channels: s.out_channels,
                stride: s.stride,
            })
            .collect();
        let channels = pyramid_channels(&info)?;
        let head = random_detector_state(detector, channels, cfg.seed)?;
        // A start that already has a head of exactly this shape (a detection bundle) keeps it.
        let (backbone_start, head_start) = split_detection_state(init);
        let keep_head = check_detector_state(detector, channels, &head_start).is_ok();
        init = backbone_start;
        if keep_head {
            for (k, v) in head_start.iter() {
                init.insert(k, v.clone());
            }
        }
        for (k, v) in head.iter() {
            fresh.insert(k, v.clone());
        }
    }
    for (k, v) in fresh {
        if !init.contains(&k) || (k.starts_with("head.") && !keep_head) {
            init.insert(k, v);
        }
    }
    eprintln!(
        "finetune: {} classes, {} training / {} validation images, {} epochs, output {}",
        classes,
        data.train.len(),
        data.val.len(),
        cfg.epochs,
        cli.output.display()
    );
    let definition = RunDefinition {
        train: cfg,
        model: config,
        task: data.task,
        class_names: data.class_names.clone(),
        data: spec,
    };
    let run = TrainRun {
        definition,
        data: &data,
        run_dir: cli.output.clone(),
        device,
        init,
        quiet: cli.quiet,
    };
    report(train(run, None)?, cli.quiet)
}

/// What `finetune` needs to know about its starting weights besides the tensors: the
/// preprocessing they were trained with and their classifier.
struct StartingWeights {
    /// Their evaluation preprocessing (config.json's `pretrained_cfg`, an official
    /// checkpoint's protocol, or the published tag's).
    preprocess: PreprocessConfig,
    /// Their classifier: a linear head's class count, 0 for none or another head.
    linear_classes: usize,
    /// Their class names, when known.
    labels: Option<Vec<String>>,
}

impl StartingWeights {
    fn read(weights: &str, backbone: Option<&str>) -> Result<Self> {
        let spec = ModelSpec {
            backbone: backbone.map(str::to_string),
            weights: Some(weights.to_string()),
            ..ModelSpec::default()
        };
        let bundle = load_bundle(
            &spec,
            &candle_core::Device::Cpu,
            candle_core::DType::F32,
            &PreprocessOverrides::default(),
        )
        .with_context(|| format!("reading the starting weights {weights}"))?;
        let linear_classes = match bundle.head_kind() {
            Some(tresnet_heads::HeadKind::Linear) => bundle.num_classes(),
            _ => 0,
        };
        Ok(Self {
            preprocess: bundle.preprocess.clone(),
            linear_classes,
            labels: bundle.labels.clone(),
        })
    }

    /// Whether the weights' classifier already answers the new task: a linear head with the
    /// same number of classes and, where the weights name them, the same names in order.
    fn head_fits(&self, classes: &[String]) -> bool {
        self.linear_classes == classes.len()
            && self.labels.as_ref().is_none_or(|names| names == classes)
    }

    fn head_note(&self, classes: &[String], kept: bool) -> String {
        if kept {
            return format!(
                "keeping the weights' classifier ({} classes, the same names)",
                classes.len()
            );
        }
        let theirs = match (self.linear_classes, &self.labels) {
            (0, _) => "no linear classifier".to_string(),
            (n, Some(names)) if n == classes.len() => {
                format!("{n} classes named otherwise ({})", names.join(", "))
            }
            (n, _) => format!("{n} classes"),
        };
        format!(
            "classifier replaced: the weights have {theirs}, the data has {} classes",
            classes.len()
        )
    }
}

/// Takes the starting weights' preprocessing as timm resolves a data config from a model's
/// `pretrained_cfg` (the recipe's `pretrained_cfg` and `input_size`, and `--input-size`, win),
/// and says where each setting came from.
fn adopt_preprocessing(
    cfg: &mut TrainConfig,
    start: &StartingWeights,
    weights: &str,
    size_source: Option<&str>,
    recipe_keys: &[String],
) -> Result<()> {
    let from_weights = format!("{weights}'s pretrained_cfg");
    let size_from = match size_source {
        Some(source) => source,
        None => {
            cfg.input_size = start.preprocess.height.max(start.preprocess.width);
            from_weights.as_str()
        }
    };
    let rest_from = if recipe_keys.iter().any(|k| k == "pretrained_cfg") {
        "the recipe's pretrained_cfg"
    } else {
        cfg.pretrained_cfg = Some(start.preprocess.to_pretrained_cfg());
        from_weights.as_str()
    };
    cfg.validate()?;
    let p = tresnet_training::run_preprocess(TaskKind::SingleLabel, cfg);
    eprintln!(
        "finetune: input {0}×{0} (from {size_from}); {1}, {2} interpolation, crop_pct {3}, \
         mean {4:?}, std {5:?} (from {rest_from})",
        cfg.input_size,
        p.resize_mode.name(),
        format!("{:?}", p.interpolation).to_lowercase(),
        p.crop_pct,
        p.mean,
        p.std
    );
    Ok(())
}

fn report(outcome: tresnet_training::TrainOutcome, quiet: bool) -> Result<()> {
    if !quiet {
        for r in &outcome.history {
            eprintln!(
                "epoch {:>3}: loss {:.4}  metric {:.2}{}{}  {:.1} img/s",
                r.epoch + 1,
                r.train_loss,
                r.metric,
                r.ap50
                    .map(|a| format!(" (AP50 {a:.2})"))
                    .unwrap_or_default(),
                r.ema_metric
                    .map(|m| format!(" (EMA {m:.2})"))
                    .unwrap_or_default(),
                r.img_per_sec
            );
        }
        if let Some(epochs) = outcome.patience_stop {
            eprintln!(
                "finetune: stopped after {epochs} epochs: no better validation metric for the \
                 last {} (--patience)",
                tresnet_training::epochs_without_improvement(&outcome.history)
            );
        }
    }
    println!(
        "{}",
        json!({
            "best_metric": outcome.best_metric,
            "bundle": outcome.bundle_dir,
            "epochs": outcome.history,
            "skipped_steps": outcome.skipped_steps.iter().map(|s| &s.1).collect::<Vec<_>>(),
            "loss_scale_overflows": outcome.overflow_steps,
            "stopped_by_patience": outcome.patience_stop.is_some(),
        })
    );
    Ok(())
}
