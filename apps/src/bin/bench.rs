//! `bench`: inference throughput of a TResNet at a batch size, input size, dtype and device, in
//! timm's benchmark CSV columns.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use serde_json::json;
use tresnet::weights::{model_config, random_state_dict, resolve_weights};
use tresnet::{BuildOptions, Layout, Manifest, TResNet, TResNetConfig};
use tresnet_apps::cli::RuntimeFlags;
use tresnet_apps::largest_batch::{largest_batch, trial};
use tresnet_heads::detection::{
    DetectionHead, DetectorConfig, decode_detections, pyramid_channels, random_detector_state,
};
use tresnet_runtime::TaskKind;
use tresnet_training::{
    DataSpec, OptimizerKind, Precision, RunDefinition, Schedule, StepOutcome, Target, TrainConfig,
    Trainer,
};

tresnet_apps::use_mimalloc!();

/// How `bench` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReportFormat {
    /// timm's `benchmark.py` columns.
    Csv,
    /// One JSON object.
    Json,
}
#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Measure TResNet inference throughput (timm benchmark CSV columns)",
    long_about = "Runs forward passes on a fixed random batch after warm-up and reports images per \
                  second and the mean step time. Weights are random (timm's initialisation) unless \
                  --weights is given; speed does not depend on their values."
)]
struct Cli {
    /// Architecture: tresnet_m, tresnet_l, tresnet_xl, tresnet_v2_l.
    #[arg(long, default_value = "tresnet_m")]
    backbone: String,
    /// Optional weights (file, directory or cached hub id) instead of random ones.
    #[arg(long)]
    weights: Option<String>,
    #[command(flatten)]
    runtime: RuntimeFlags,
    /// Images per forward pass.
    #[arg(short = 'b', long, default_value_t = 8)]
    batch_size: usize,
    /// Square input side.
    #[arg(long, default_value_t = 224)]
    input_size: usize,
    /// Untimed passes first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed passes.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Keep batch norms unfolded.
    #[arg(long)]
    no_fold: bool,
    /// Output: csv (timm's benchmark columns) or json.
    #[arg(long, value_enum, default_value_t = ReportFormat::Csv)]
    format: ReportFormat,
    /// Omit the CSV header line.
    #[arg(long)]
    no_header: bool,
    /// Time training steps (forward, cross-entropy, backward, SGD update) instead of inference.
    /// With --dtype f16/bf16 they are mixed precision: f32 master weights, f16/bf16 activations,
    /// dynamic loss scaling for f16 (timm's AMP).
    #[arg(long)]
    train: bool,
    /// Time a detector instead: the backbone without classifier, FCOS's COCO head (FPN P3–P7,
    /// 256 channels, 4-conv towers, 80 classes, random weights) and decoding with NMS.
    #[arg(long, conflicts_with = "train")]
    detector: bool,
    /// First find the largest batch whose step fits in GPU memory (doubling from --batch-size,
    /// then bisecting), report it, and time that batch. GPU only: on the CPU a batch that does
    /// not fit ends the process instead of failing an allocation.
    #[arg(long)]
    max_batch: bool,
    /// The largest batch --max-batch tries.
    #[arg(long, default_value_t = 4096)]
    max_batch_limit: usize,
}

fn main() {
    tresnet_apps::allocator::keep_freed_memory();
    tresnet_apps::candle_pool::run_candle_elementwise_on_the_caller();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("bench: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    cli.runtime.init_threads()?;
    if cli.batch_size == 0 || cli.iters == 0 {
        bail!("--batch-size and --iters must be at least 1");
    }
    let device = cli.runtime.device()?;
    let dtype = cli.runtime.dtype();
    if let Some(note) = cli.runtime.cpu_bf16_note() {
        eprintln!("bench: {note}");
    }
    let options = BuildOptions {
        fold_batch_norm: !cli.no_fold,
        ..BuildOptions::new(device.clone(), dtype)
    };
    let model = match &cli.weights {
        Some(spec) => {
            let resolved = resolve_weights(spec)?;
            let config = model_config(Some(&cli.backbone), Some(&resolved), None)?;
            TResNet::new(&config, &resolved.weights.state_dict, &options)?
        }
        None => {
            let mut config = TResNetConfig::variant(&cli.backbone)?;
            if cli.detector {
                config = config.with_num_classes(0);
            }
            TResNet::random(&config, 0, &options)?
        }
    };
    let detection = if cli.detector {
        let config = DetectorConfig::default();
        let channels = pyramid_channels(&model.feature_info())?;
        let state = random_detector_state(&config, channels, 0)?;
        Some(DetectionHead::load(
            &config, channels, &state, dtype, &device,
        )?)
    } else {
        None
    };
    let param_count = Manifest::of(&Layout::new(model.config())?).param_count();
    let make_input = |batch: usize| -> Result<Tensor> {
        let input = Tensor::rand(
            0f32,
            1f32,
            (batch, 3, cli.input_size, cli.input_size),
            &Device::Cpu,
        )?
        .to_dtype(model.dtype())?
        .to_device(&device)?;
        model.check_input_shape(input.dims())?;
        Ok(input)
    };

    // Training steps are `finetune`'s own: the training crate's `Trainer::step` (single-label
    // cross-entropy, SGD momentum 0.9, weight decay 1e-4; f16/bf16 as mixed precision).
    let mut trainer = if cli.train {
        Some(bench_trainer(
            model.config(),
            dtype,
            cli.batch_size,
            cli.input_size,
            &device,
        )?)
    } else {
        None
    };
    let classes = model.num_classes().max(1);
    let mut run_step = |input: &Tensor| -> Result<()> {
        match trainer.as_mut() {
            Some(trainer) => {
                let targets: Vec<Target> = (0..input.dim(0)?)
                    .map(|i| Target::Class(i % classes))
                    .collect();
                let outcome = trainer.step(&input.to_dtype(DType::F32)?, &targets)?;
                if let StepOutcome::Skipped { message } = outcome {
                    eprintln!("bench: {message}");
                }
                device.synchronize().context("device synchronize")?;
                Ok(())
            }
            None => match &detection {
                Some(head) => detection_step(&model, head, input, &device),
                None => step(&model, input, &device),
            },
        }
    };
    let batch_size = if cli.max_batch {
        if !device.is_cuda() {
            bail!(
                "--max-batch searches GPU memory: use --device cuda (on the CPU a batch that does \
                 not fit ends the process instead of failing an allocation)"
            );
        }
        let found = largest_batch(cli.batch_size, cli.max_batch_limit, |b| {
            let outcome = trial(|| run_step(&make_input(b)?))?;
            eprintln!("bench: batch {b}: {outcome:?}");
            Ok(outcome)
        })?
        .context("not even batch 1 fits in GPU memory")?;
        eprintln!(
            "bench: largest {} batch that fits: {found}{}",
            if cli.train { "training" } else { "inference" },
            if found == cli.max_batch_limit {
                " (the search limit; raise --max-batch-limit)"
            } else {
                ""
            }
        );
        found
    } else {
        cli.batch_size
    };
    let input = make_input(batch_size)?;
    for _ in 0..cli.warmup {
        run_step(&input)?;
    }
    let mut times = Vec::with_capacity(cli.iters);
    for _ in 0..cli.iters {
        let t = Instant::now();
        run_step(&input)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let per_sec = batch_size as f64 / mean;
    eprintln!(
        "bench: {}{}{} b{} @{} {}{} {}: mean {:.2} ms, median {:.2} ms, min {:.2} ms over {} steps",
        cli.backbone,
        if cli.train { " train" } else { "" },
        if cli.detector { " + FCOS" } else { "" },
        batch_size,
        cli.input_size,
        cli.runtime.dtype,
        if cli.train && dtype != DType::F32 {
            "-mixed"
        } else {
            ""
        },
        cli.runtime.device,
        mean * 1e3,
        median * 1e3,
        sorted[0] * 1e3,
        times.len()
    );
    match cli.format {
        ReportFormat::Csv => {
            if !cli.no_header {
                let p = if cli.train { "train" } else { "infer" };
                println!(
                    "model,{p}_img_size,{p}_batch_size,{p}_samples_per_sec,{p}_step_time,param_count"
                );
            }
            println!(
                "{},{},{},{:.2},{:.3},{:.2}",
                cli.backbone,
                cli.input_size,
                batch_size,
                per_sec,
                mean * 1e3,
                param_count as f64 / 1e6
            );
        }
        ReportFormat::Json => println!(
            "{}",
            json!({
                "mode": if cli.train { "train" } else { "infer" },
                "model": cli.backbone,
                "infer_img_size": cli.input_size,
                "infer_batch_size": batch_size,
                "max_batch_size": cli.max_batch.then_some(batch_size),
                "infer_samples_per_sec": per_sec,
                "infer_step_time": mean * 1e3,
                "infer_step_time_median": median * 1e3,
                "param_count": param_count,
                "device": cli.runtime.device.to_string(),
                "dtype": cli.runtime.dtype.name(),
                // A CPU run in bf16: whether the convolutions multiplied bf16 (AVX-512 BF16).
                "cpu_bf16_products": model.multiplies_in_bf16(),
                // Which convolutions a CUDA run used: candle's default path or cuDNN.
                "cuda_convolutions": if cfg!(feature = "cudnn") { "cudnn" } else { "candle" },
            })
        ),
    }
    Ok(())
}

/// One training step: forward in training mode, cross-entropy (in f32), backward of the scaled
/// loss, unscaling and the overflow check, SGD update (skipped on overflow, as PyTorch's
/// A trainer over random weights for `config`, as `finetune` would build it for random inputs.
fn bench_trainer(
    config: &TResNetConfig,
    dtype: DType,
    batch_size: usize,
    input_size: usize,
    device: &Device,
) -> Result<Trainer> {
    let classes = config.num_classes.max(1);
    let definition = RunDefinition {
        train: TrainConfig {
            epochs: 1,
            batch_size,
            lr: 1e-3,
            optimizer: OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: false,
            },
            weight_decay: 1e-4,
            schedule: Schedule::Constant,
            clip_grad: None,
            ema_decay: None,
            input_size,
            precision: match dtype {
                DType::F16 => Precision::F16Mixed,
                DType::BF16 => Precision::Bf16Mixed,
                _ => Precision::F32,
            },
            ..TrainConfig::default()
        },
        model: config.clone().with_num_classes(classes),
        task: TaskKind::SingleLabel,
        class_names: (0..classes).map(|i| format!("class_{i}")).collect(),
        data: DataSpec::Folder {
            train: PathBuf::from("(random inputs)"),
            val: None,
        },
    };
    let init = random_state_dict(&Layout::new(&definition.model)?, 0)?;
    Trainer::new(definition, &init, 1, device)
}

/// One detection pass: backbone features, FPN + FCOS, decoding with NMS.
fn detection_step(
    model: &TResNet,
    head: &DetectionHead,
    input: &Tensor,
    device: &Device,
) -> Result<()> {
    let output = head.forward(&model.forward_features(input)?)?;
    device.synchronize().context("device synchronize")?;
    let (_, _, h, w) = input.dims4()?;
    decode_detections(&output, head.config(), (w, h))?;
    Ok(())
}

/// One forward pass, waiting for the device to finish.
fn step(model: &TResNet, input: &Tensor, device: &Device) -> Result<()> {
    let logits = model.forward(input)?;
    device.synchronize().context("device synchronize")?;
    // Reading one value forces the computation on every backend.
    let _ = logits
        .flatten_all()?
        .get(0)?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?;
    Ok(())
}
