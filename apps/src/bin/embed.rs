//! `embed`: run a TResNet on images (or on an input tensor) and write every stage's feature maps,
//! the pooled features and the logits to a safetensors file, with a one-line JSON summary on
//! stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use serde_json::json;
use tresnet_apps::cli::load_bundle;
use tresnet_apps::cli::{ModelFlags, PreprocessFlags, RuntimeFlags};
use tresnet_data::{
    DecodeLimits, ImageListDataset, ImageSource, ImageTransform, Loader, LoaderOptions,
    PreprocessConfig,
};
use tresnet_heads::HeadKind;
use tresnet_runtime::image_inputs::{embedded_examples, images_under};
use tresnet_runtime::safetensors_output::write_safetensors;
use tresnet_runtime::{BundleNetwork, ModelBundle};

tresnet_apps::use_mimalloc!();
/// The outputs `embed` can write, in file order.
const OUTPUT_NAMES: &[&str] = &[
    "stem",
    "layer1",
    "layer2",
    "layer3",
    "layer4",
    "pre_logits",
    "logits",
];

#[derive(Debug, Parser)]
#[command(
    name = "embed",
    about = "Run a TResNet and save its stage features, pooled features and logits",
    long_about = "Run a TResNet on a folder of images, one image, or a safetensors file holding an \
                  `input` tensor (B,3,H,W) in [0,1], and write each stage's feature map, \
                  `pre_logits` and `logits` to a safetensors file. With no model flags the \
                  embedded default model runs; with no --input, two embedded example photos."
)]
struct Cli {
    #[command(flatten)]
    model: ModelFlags,
    #[command(flatten)]
    runtime: RuntimeFlags,
    /// A folder of images (searched recursively), one image, or a .safetensors file with `input`.
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Output safetensors file (written atomically).
    #[arg(short, long, default_value = "embeddings.safetensors")]
    output: PathBuf,
    /// Images per forward pass.
    #[arg(short = 'b', long, default_value_t = 8)]
    batch_size: usize,
    #[command(flatten)]
    preprocess: PreprocessFlags,
    /// Outputs to write, comma separated (default: all of stem,layer1,layer2,layer3,layer4,pre_logits,logits).
    #[arg(long, value_delimiter = ',')]
    outputs: Option<Vec<String>>,
    /// Refuse images with more pixels than this (decompression-bomb guard).
    #[arg(long)]
    max_pixels: Option<u64>,
}

/// Per-output rows accumulated over batches.
struct Collected {
    names: Vec<&'static str>,
    rows: HashMap<&'static str, Vec<Tensor>>,
}

impl Collected {
    fn new(names: Vec<&'static str>) -> Self {
        Self {
            rows: names.iter().map(|n| (*n, Vec::new())).collect(),
            names,
        }
    }

    fn push(&mut self, bundle: &ModelBundle, batch: &Tensor) -> Result<()> {
        let out = bundle.backbone().forward_all(batch)?;
        for map in out.features.all() {
            self.keep(&map.name, &map.tensor)?;
        }
        self.keep("pre_logits", &out.pre_logits)?;
        let logits = match &bundle.network {
            BundleNetwork::Classifier(c) => Some(c.head.forward(out.features.last())?),
            _ => None,
        };
        if let Some(logits) = &logits {
            self.keep("logits", logits)?;
        }
        Ok(())
    }

    fn keep(&mut self, name: &str, t: &Tensor) -> Result<()> {
        if let Some(rows) = self.rows.get_mut(name) {
            rows.push(t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?);
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for name in self.names {
            let rows = &self.rows[name];
            if !rows.is_empty() {
                out.push((name.to_string(), Tensor::cat(rows, 0)?));
            }
        }
        Ok(out)
    }
}

fn main() {
    tresnet_apps::allocator::keep_freed_memory();
    tresnet_apps::candle_pool::run_candle_elementwise_on_the_caller();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("embed: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    cli.runtime.init_threads()?;
    if cli.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let started = Instant::now();
    let overrides = &cli.preprocess;
    let bundle = load_bundle(&cli.model, &cli.runtime, overrides)?;
    let names = selected_outputs(cli.outputs.as_deref())?;
    let mut collected = Collected::new(names);
    let mut files: Vec<String> = Vec::new();
    let mut skipped: Vec<serde_json::Value> = Vec::new();

    let input = cli.input.as_deref();
    let input_kind = if input.is_some_and(is_safetensors_file) {
        let path = input.expect("checked");
        let batch = read_input_tensor(path)?;
        let n = batch.dims()[0];
        eprintln!(
            "embed: {} on input tensor {:?} from {}",
            bundle.source,
            batch.dims(),
            path.display()
        );
        for start in (0..n).step_by(cli.batch_size) {
            let len = cli.batch_size.min(n - start);
            collected.push(&bundle, &batch.narrow(0, start, len)?)?;
        }
        files.extend((0..n).map(|i| format!("{}[{i}]", path.display())));
        "tensor"
    } else {
        let sources = image_sources(input)?;
        eprintln!("embed: {} on {} image(s)", bundle.source, sources.len());
        let limits = DecodeLimits {
            max_pixels: cli.max_pixels.unwrap_or(DecodeLimits::default().max_pixels),
            ..DecodeLimits::default()
        };
        let dataset = ImageListDataset {
            items: sources
                .into_iter()
                .map(|s| (s, ()))
                .collect::<Vec<(ImageSource, ())>>(),
            transform: ImageTransform::Eval(bundle.preprocess.clone()),
            limits,
            decode: tresnet_data::DecodeMode::Exact,
        };
        let names: Vec<String> = dataset.items.iter().map(|(s, _)| s.name()).collect();
        let options = LoaderOptions {
            batch_size: cli.batch_size,
            workers: cli
                .runtime
                .workers
                .unwrap_or(LoaderOptions::default().workers),
            ..LoaderOptions::default()
        };
        let mut progress = tresnet_runtime::Progress::new(
            "embed",
            names.len().div_ceil(options.batch_size.max(1)),
            false,
        );
        // Workers decode the next batches while the model runs on this one.
        for batch in Loader::new(std::sync::Arc::new(dataset), &options)? {
            let batch = batch?;
            let images = batch.items.len();
            for (index, err) in &batch.skipped {
                eprintln!("embed: skipped: {err}");
                skipped.push(json!({"file": names[*index], "error": err.to_string()}));
            }
            if batch.items.is_empty() {
                progress.step(0, "");
                continue;
            }
            files.extend(batch.items.iter().map(|(i, _)| names[*i].clone()));
            let floats: Vec<Vec<f32>> = batch.items.into_iter().map(|(_, (f, ()))| f).collect();
            let tensor = tresnet_data::stack_batch(&floats, &bundle.preprocess, &Device::Cpu)?;
            collected.push(&bundle, &tensor)?;
            progress.step(images, "");
        }
        if files.is_empty() {
            bail!("no image could be read ({} skipped)", skipped.len());
        }
        "images"
    };

    let tensors = collected.finish()?;
    let shapes: serde_json::Map<String, serde_json::Value> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), json!(t.dims())))
        .collect();
    let metadata = HashMap::from([
        ("files".to_string(), serde_json::to_string(&files)?),
        ("model".to_string(), bundle.source.clone()),
        (
            "preprocess".to_string(),
            describe_preprocess(&bundle.preprocess),
        ),
        ("dtype".to_string(), cli.runtime.dtype.to_string()),
    ]);
    write_safetensors(&cli.output, &tensors, metadata)?;
    let summary = json!({
        "model": bundle.source,
        "architecture": bundle.architecture,
        "head": match bundle.head_kind() {
            Some(HeadKind::MlDecoder) => "ml_decoder",
            Some(HeadKind::Linear) => "linear",
            None if bundle.detector().is_some() => "fcos",
            None => "none",
        },
        "num_classes": bundle.num_classes(),
        "preprocess": bundle.preprocess.to_pretrained_cfg(),
        "device": cli.runtime.device.to_string(),
        "dtype": cli.runtime.dtype.name(),
        "input": input_kind,
        "count": files.len(),
        "skipped": skipped,
        "outputs": shapes,
        "output_file": cli.output.display().to_string(),
        "seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
    });
    println!("{summary}");
    Ok(())
}

fn selected_outputs(requested: Option<&[String]>) -> Result<Vec<&'static str>> {
    let Some(requested) = requested else {
        return Ok(OUTPUT_NAMES.to_vec());
    };
    requested
        .iter()
        .map(|r| {
            OUTPUT_NAMES
                .iter()
                .find(|n| **n == r.as_str())
                .copied()
                .with_context(|| {
                    format!("--outputs: `{r}` is not one of {}", OUTPUT_NAMES.join(","))
                })
        })
        .collect()
}

fn is_safetensors_file(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

fn read_input_tensor(path: &Path) -> Result<Tensor> {
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("{}: not a readable safetensors file", path.display()))?;
    let names: Vec<String> = tensors.keys().cloned().collect();
    let input = tensors.remove("input").with_context(|| {
        format!(
            "{}: no tensor named `input` (found {names:?})",
            path.display()
        )
    })?;
    if input.rank() != 4 {
        bail!(
            "{}: `input` has shape {:?}, expected (B, 3, H, W)",
            path.display(),
            input.dims()
        );
    }
    Ok(input.to_dtype(DType::F32)?)
}

fn image_sources(input: Option<&Path>) -> Result<Vec<ImageSource>> {
    let Some(root) = input else {
        return Ok(embedded_examples());
    };
    let (images, walk) = images_under(root).with_context(|| "--input".to_string())?;
    for (path, reason) in &walk.unreadable {
        eprintln!("embed: cannot read {}: {reason}", path.display());
    }
    if walk.skipped_non_images + walk.skipped_hidden > 0 {
        eprintln!(
            "embed: ignored {} non-image and {} hidden entries under {}",
            walk.skipped_non_images,
            walk.skipped_hidden,
            root.display()
        );
    }
    Ok(images)
}

fn describe_preprocess(cfg: &PreprocessConfig) -> String {
    json!({
        "input_size": [3, cfg.height, cfg.width],
        "resize_mode": format!("{:?}", cfg.resize_mode),
        "crop_pct": cfg.crop_pct,
        "interpolation": format!("{:?}", cfg.interpolation),
        "mean": cfg.mean,
        "std": cfg.std,
    })
    .to_string()
}
