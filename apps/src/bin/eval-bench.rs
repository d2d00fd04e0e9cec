//! `eval-bench`: timing of the evaluation metrics on large inputs — COCO box evaluation of a
//! results file, and multi-label mAP over a score matrix — for comparison with the Python tools
//! (`scripts/bench_eval_vs_python.sh`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};
use clap::Parser;
use serde_json::json;
use tresnet_heads::metrics::{
    ScoreTable, asl_mean_average_precision, evaluate_box_results_file, tie_aware_average_precision,
};

tresnet_apps::use_mimalloc!();
#[derive(Debug, Parser)]
#[command(
    name = "eval-bench",
    about = "Time COCO box evaluation or multi-label mAP"
)]
struct Cli {
    /// COCO instances json (ground truth) for box evaluation.
    #[arg(long)]
    gt: Option<PathBuf>,
    /// COCO results json for box evaluation.
    #[arg(long)]
    dt: Option<PathBuf>,
    /// A safetensors file with `scores` (N, K) and `targets` (N, K) for mAP.
    #[arg(long)]
    scores: Option<PathBuf>,
}

fn main() {
    tresnet_apps::allocator::keep_freed_memory();
    tresnet_apps::candle_pool::run_candle_elementwise_on_the_caller();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("eval-bench: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    if let (Some(gt), Some(dt)) = (&cli.gt, &cli.dt) {
        let start = Instant::now();
        let result = evaluate_box_results_file(gt, dt)?;
        println!(
            "{}",
            json!({"task": "coco_bbox", "seconds": start.elapsed().as_secs_f64(), "AP": result.stats[0]})
        );
        return Ok(());
    }
    let Some(path) = &cli.scores else {
        bail!("give --gt and --dt, or --scores");
    };
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| path.display().to_string())?;
    let (_, classes) = tensors["scores"].dims2()?;
    let scores: Vec<f32> = tensors["scores"]
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let targets: Vec<f32> = tensors["targets"]
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let table = ScoreTable::new(&scores, &targets, classes)?;
    let start = Instant::now();
    let asl = asl_mean_average_precision(&table);
    let asl_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let per_class = table.per_class(tie_aware_average_precision);
    let sk_seconds = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"task": "map", "asl_map": asl, "asl_seconds": asl_seconds,
               "sklearn_map": per_class.iter().sum::<f64>() / per_class.len() as f64, "sklearn_seconds": sk_seconds})
    );
    Ok(())
}
