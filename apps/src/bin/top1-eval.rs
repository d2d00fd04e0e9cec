//! `top1-eval`: top-1 / top-5 accuracy on an ImageNet-style validation folder (one subfolder per
//! class, or a flat folder with a label file), written as a timm-style results CSV.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use clap::Parser;
use tresnet::{Layout, Manifest};
use tresnet_apps::cli::load_bundle;
use tresnet_apps::cli::{ModelFlags, PreprocessFlags, RuntimeFlags};
use tresnet_data::{
    ImageFolder, ImageSource, LabelTable, SyntheticConfig, walk_photos,
    write_synthetic_image_folder,
};
use tresnet_heads::metrics::top_k_accuracy;
use tresnet_runtime::inference::{ImageOutcome, InferenceOptions, run_over_images};

tresnet_apps::use_mimalloc!();
#[derive(Debug, Parser)]
#[command(
    name = "top1-eval",
    about = "Top-1/top-5 accuracy on an ImageNet-style validation folder (timm results CSV)",
    long_about = "Class subfolders are matched to the model's classes by name when the model carries \
                  label names, else by sorted order (the ImageNet convention). A flat folder needs \
                  --labels FILE (CSV lines `file,label`, label a class index or name). With no data \
                  and no weights it evaluates the embedded default model on a generated \
                  one-shape-per-image split of the synthetic shapes dataset."
)]
struct Cli {
    #[command(flatten)]
    model: ModelFlags,
    #[command(flatten)]
    runtime: RuntimeFlags,
    /// Validation folder.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Label file for a flat folder.
    #[arg(long)]
    labels: Option<PathBuf>,
    #[command(flatten)]
    preprocess: PreprocessFlags,
    #[arg(short = 'b', long, default_value_t = 32)]
    batch_size: usize,
    /// Results CSV (appended to when it exists, as timm's validate.py does).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn main() {
    tresnet_apps::allocator::keep_freed_memory();
    tresnet_apps::candle_pool::run_candle_elementwise_on_the_caller();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("top1-eval: error: {err:#}");
        std::process::exit(1);
    }
}

/// `(image, class index)` pairs of a labelled flat folder.
/// `(image, class index)` pairs from a label file (see [`tresnet_data::LabelTable`]: the format
/// and checks `finetune --labels` uses), each line's one label a class index or name.
fn read_label_file(path: &Path, root: &Path, classes: &[String]) -> Result<Vec<(PathBuf, usize)>> {
    let table = LabelTable::read(path, root)?;
    let by_name: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    table
        .rows
        .into_iter()
        .map(|row| {
            let [label] = row.labels.as_slice() else {
                bail!(
                    "{}: {} has {} labels; top-1 needs one",
                    path.display(),
                    row.path.display(),
                    row.labels.len()
                );
            };
            let class = match label.parse::<usize>() {
                Ok(i) if i < classes.len() || classes.is_empty() => i,
                _ => *by_name.get(label.as_str()).with_context(|| {
                    format!(
                        "{}: {}: unknown label `{label}`",
                        path.display(),
                        row.path.display()
                    )
                })?,
            };
            Ok((row.path, class))
        })
        .collect()
}

fn run(cli: Cli) -> Result<()> {
    cli.runtime.init_threads()?;
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let root = match &cli.data {
        Some(d) => d.clone(),
        None => {
            if cli.model.backbone.is_some() || cli.model.weights.is_some() {
                bail!("give --data FOLDER with a model");
            }
            eprintln!(
                "top1-eval: no data given: evaluating the embedded default model on a generated shapes split"
            );
            let config = SyntheticConfig {
                max_objects: 1,
                ..SyntheticConfig::shapes_64(300, 2000)
            };
            write_synthetic_image_folder(scratch.path(), &config)?;
            scratch.path().to_path_buf()
        }
    };
    let overrides = &cli.preprocess;
    let bundle = load_bundle(&cli.model, &cli.runtime, overrides)?;
    let classes = bundle.num_classes();
    if classes == 0 {
        bail!("the model has no classifier");
    }
    let names = bundle.class_names();

    let samples: Vec<(PathBuf, usize)> = match &cli.labels {
        Some(file) => read_label_file(file, &root, &names)?,
        None => {
            let folder = ImageFolder::open(&root)?;
            let known: HashMap<&str, usize> = names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.as_str(), i))
                .collect();
            let by_name = bundle.labels.is_some()
                && folder
                    .classes
                    .iter()
                    .all(|c| known.contains_key(c.as_str()));
            if !by_name && folder.classes.len() != classes {
                bail!(
                    "{} has {} class folders but the model has {classes} classes (and folder names are not its labels)",
                    root.display(),
                    folder.classes.len()
                );
            }
            folder
                .samples
                .iter()
                .map(|(p, c)| {
                    (
                        p.clone(),
                        if by_name {
                            known[folder.classes[*c].as_str()]
                        } else {
                            *c
                        },
                    )
                })
                .collect()
        }
    };
    if samples.is_empty() {
        let walk = walk_photos(&root);
        bail!(
            "no labelled images under {} ({} images found)",
            root.display(),
            walk.images.len()
        );
    }
    if let Some((_, c)) = samples.iter().find(|(_, c)| *c >= classes) {
        bail!("label {c} is out of range for {classes} classes");
    }

    let sources: Vec<ImageSource> = samples
        .iter()
        .map(|(p, _)| ImageSource::File(p.clone()))
        .collect();
    let options = InferenceOptions::new(cli.batch_size, cli.runtime.worker_count(), "top1-eval");
    let mut logits: Vec<Vec<f32>> = Vec::new();
    let mut targets: Vec<usize> = Vec::new();
    let mut failed = 0usize;
    let timing = run_over_images(&bundle, sources, &options, |outcomes| {
        for (i, outcome) in outcomes {
            match outcome {
                ImageOutcome::Logits(l) => {
                    logits.push(l);
                    targets.push(samples[i].1);
                }
                ImageOutcome::Failed(reason) => {
                    eprintln!("top1-eval: skipped: {reason}");
                    failed += 1;
                }
            }
        }
        Ok(())
    })?;
    if logits.is_empty() {
        bail!("no image could be evaluated ({failed} failed)");
    }
    let flat: Vec<f32> = logits.iter().flatten().copied().collect();
    let table = Tensor::from_vec(flat, (logits.len(), classes), &Device::Cpu)?;
    let top1 = 100.0 * top_k_accuracy(&table, &targets, 1)?;
    let top5 = 100.0 * top_k_accuracy(&table, &targets, 5.min(classes))?;
    let params = Manifest::of(&Layout::new(&bundle.architecture)?).param_count();
    let p = &bundle.preprocess;
    let header = "model,top1,top1_err,top5,top5_err,param_count,img_size,crop_pct,interpolation";
    let row = format!(
        "{},{:.3},{:.3},{:.3},{:.3},{:.2},{},{},{}",
        bundle.source,
        top1,
        100.0 - top1,
        top5,
        100.0 - top5,
        params as f64 / 1e6,
        p.height,
        if p.resize_mode == tresnet_data::ResizeMode::Squish {
            1.0
        } else {
            p.crop_pct
        },
        format!("{:?}", p.interpolation).to_lowercase()
    );
    eprintln!(
        "top1-eval: {} images ({failed} unreadable) in {:.1} s: top-1 {top1:.3}%, top-5 {top5:.3}%",
        logits.len(),
        timing.total
    );
    println!("{header}\n{row}");
    if let Some(path) = &cli.output {
        let existing = std::fs::read_to_string(path).unwrap_or_default();
        let mut text = if existing.trim().is_empty() {
            format!("{header}\n")
        } else {
            existing
        };
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&row);
        text.push('\n');
        tresnet_io::atomic_write(path, tresnet_io::Durability::Durable, |w| {
            std::io::Write::write_all(w, text.as_bytes())
        })
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
