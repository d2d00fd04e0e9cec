//! `data-bench`: throughput of the data pipeline alone — decode + resize + to-tensor through the
//! batch loader, or parsing a COCO instances file — for comparison with the Python stack
//! (`scripts/bench_data_vs_python.sh`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use candle_core::Device;
use clap::Parser;
use serde_json::json;
use tresnet_data::coco::{CocoDataset, CocoOptions};
use tresnet_data::{
    DecodeLimits, DecodeMode, ImageListDataset, ImageTransform, Loader, LoaderOptions,
    PreprocessConfig, ResizeMode, stack_batch,
};
use tresnet_runtime::image_inputs::images_under;

tresnet_apps::use_mimalloc!();
#[derive(Debug, Parser)]
#[command(
    name = "data-bench",
    about = "Measure image loading or COCO json parsing throughput"
)]
struct Cli {
    /// A folder of images to load (decode + resize + to tensor), all of them, once.
    #[arg(long)]
    images: Option<PathBuf>,
    /// A COCO instances json to parse.
    #[arg(long)]
    coco: Option<PathBuf>,
    /// Square input size.
    #[arg(long, default_value_t = 224)]
    input_size: usize,
    /// squish, or center (resize the shorter side to size/0.875, centre crop; also `crop`).
    #[arg(long, value_enum, default_value_t = ResizeMode::CenterCrop)]
    resize: ResizeMode,
    /// Loader worker threads.
    #[arg(short = 'j', long, default_value_t = 1)]
    workers: usize,
    /// Images per batch.
    #[arg(short = 'b', long, default_value_t = 32)]
    batch_size: usize,
    /// Decode every pixel (`exact`, as the evaluation apps do) or JPEGs at the coarsest DCT
    /// scale that covers the input size (`reduced`, `tag`'s default).
    #[arg(long, value_enum, default_value_t = DecodeMode::Exact)]
    decode: DecodeMode,
    /// Passes over the folder (the first one warms the file cache and is not timed).
    #[arg(long, default_value_t = 2)]
    passes: usize,
}

fn main() {
    tresnet_apps::allocator::keep_freed_memory();
    tresnet_apps::candle_pool::run_candle_elementwise_on_the_caller();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("data-bench: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(path) = &cli.coco {
        let start = Instant::now();
        let ds = CocoDataset::from_file(path, CocoOptions::default())?;
        let seconds = start.elapsed().as_secs_f64();
        let objects: usize = ds.objects.iter().map(Vec::len).sum();
        println!(
            "{}",
            json!({"task": "coco_parse", "file": path, "images": ds.len(), "annotations": objects, "seconds": seconds})
        );
        return Ok(());
    }
    let Some(root) = &cli.images else {
        bail!("give --images FOLDER or --coco FILE");
    };
    let (sources, _) = images_under(root)?;
    let mut cfg = PreprocessConfig::imagenet_eval(cli.input_size);
    cfg.resize_mode = cli.resize;
    if cfg.resize_mode == ResizeMode::Squish {
        cfg.crop_pct = 1.0;
    }
    let dataset = Arc::new(ImageListDataset {
        items: sources.into_iter().map(|s| (s, ())).collect(),
        transform: ImageTransform::Eval(cfg.clone()),
        limits: DecodeLimits::default(),
        decode: cli.decode,
    });
    let options = LoaderOptions {
        batch_size: cli.batch_size,
        workers: cli.workers,
        ..LoaderOptions::default()
    };
    let mut rates = Vec::new();
    for pass in 0..cli.passes.max(2) {
        let start = Instant::now();
        let mut count = 0;
        for batch in Loader::new(Arc::clone(&dataset), &options)? {
            let batch = batch?;
            let floats: Vec<Vec<f32>> = batch.items.into_iter().map(|(_, (f, ()))| f).collect();
            count += floats.len();
            let _tensor = stack_batch(&floats, &cfg, &Device::Cpu)?;
        }
        if pass > 0 {
            rates.push(count as f64 / start.elapsed().as_secs_f64());
        }
    }
    let best = rates.iter().copied().fold(0.0, f64::max);
    println!(
        "{}",
        json!({"task": "images", "images": dataset.items.len(), "input_size": cli.input_size, "resize": cli.resize.name(),
               "workers": cli.workers, "decode": format!("{:?}", cli.decode), "img_per_sec": best})
    );
    Ok(())
}
