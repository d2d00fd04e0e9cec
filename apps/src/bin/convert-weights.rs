//! `convert-weights`: any checkpoint the apps load (official / ASL / ML-Decoder `.pth`, timm
//! safetensors, bundles, cached hub ids) written once in the hub layout timm reads —
//! `model.safetensors` under timm's names with plain batch norms, and `config.json` with
//! `architecture`, `num_classes`, `model_args`, `pretrained_cfg` and label names.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use serde_json::json;
use tresnet_apps::cli::ModelFlags;
use tresnet_runtime::timm_export::{StoredPrecision, export_for_timm, write_timm_export};

tresnet_apps::use_mimalloc!();

#[derive(Debug, Parser)]
#[command(
    name = "convert-weights",
    about = "Write a checkpoint in timm's hub layout (model.safetensors + config.json)",
    long_about = "Reads anything --weights accepts and writes OUT_DIR/model.safetensors under \
                  timm's tensor names (batch norms unfolded, num_batches_tracked included) and \
                  OUT_DIR/config.json, from which timm.create_model(architecture, \
                  num_classes=..., **model_args) builds the network that loads the file with \
                  strict=True. An ML-Decoder head keeps timm.layers.ml_decoder's names; its \
                  arguments are in config.json under ml_decoder."
)]
struct Cli {
    #[command(flatten)]
    model: ModelFlags,
    /// Output directory (created if needed).
    #[arg(short, long)]
    output: PathBuf,
    /// Precision of the stored floating-point tensors (f16 halves the file).
    #[arg(long, value_enum, default_value_t = StoredPrecision::F32)]
    dtype: StoredPrecision,
}

fn main() {
    tresnet_apps::allocator::keep_freed_memory();
    tresnet_apps::candle_pool::run_candle_elementwise_on_the_caller();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("convert-weights: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let export = export_for_timm(&cli.model.spec(), cli.dtype)?;
    write_timm_export(&cli.output, &export)?;
    let hub = &export.config.hub;
    println!(
        "{}",
        json!({
            "output": cli.output.display().to_string(),
            "architecture": hub.architecture,
            "num_classes": hub.num_classes,
            "model_args": hub.model_args,
            "head": export.config.settings.head,
            "tensors": export.state.len(),
            "dtype": format!("{:?}", cli.dtype).to_lowercase(),
            "labels": hub.label_names.as_ref().map(Vec::len),
        })
    );
    Ok(())
}
