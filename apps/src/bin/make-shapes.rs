//! `make-shapes`: write the synthetic shapes dataset (real image files) as a COCO instances json
//! (multi-label, detection) or an ImageFolder tree (single-label).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use serde_json::json;
use tresnet_data::{
    SyntheticConfig, SyntheticFormat, write_synthetic_coco, write_synthetic_image_folder,
};

tresnet_apps::use_mimalloc!();

/// How the files are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Layout {
    /// `images/` and a COCO `annotations.json` (multi-label and detection).
    Coco,
    /// One subfolder per shape (single-label, ImageFolder).
    Folder,
}
#[derive(Debug, Parser)]
#[command(
    name = "make-shapes",
    about = "Write the synthetic shapes dataset (coco or folder layout)"
)]
struct Cli {
    /// Output directory.
    output: PathBuf,
    /// coco (images/ + annotations.json) or folder (one subfolder per shape).
    #[arg(long, value_enum, default_value_t = Layout::Coco)]
    layout: Layout,
    /// Number of images.
    #[arg(short = 'n', long, default_value_t = 2400)]
    images: usize,
    /// Seed (the same seed writes the same bytes).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image side in pixels (objects scale with it).
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Image file format.
    #[arg(long, value_enum, default_value_t = SyntheticFormat::Png)]
    format: SyntheticFormat,
}

fn main() {
    tresnet_apps::allocator::keep_freed_memory();
    tresnet_apps::candle_pool::run_candle_elementwise_on_the_caller();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("make-shapes: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let base = SyntheticConfig::shapes_64(cli.images, cli.seed);
    let scale = |v: u32| v * cli.size / 64;
    let config = SyntheticConfig {
        width: cli.size,
        height: cli.size,
        min_size: scale(base.min_size),
        max_size: scale(base.max_size),
        format: cli.format,
        ..base
    };
    match cli.layout {
        Layout::Coco => {
            let written = write_synthetic_coco(&cli.output, &config)?;
            println!(
                "{}",
                json!({"annotations": written.annotations, "images": written.images, "count": cli.images})
            );
        }
        Layout::Folder => {
            write_synthetic_image_folder(&cli.output, &config)?;
            println!("{}", json!({"root": cli.output, "count": cli.images}));
        }
    }
    Ok(())
}
