//! `coco-eval`: multi-label evaluation on COCO (mAP, per-class AP, CP/CR/CF1/OP/OR/OF1) and
//! detection (the 12 COCO box statistics and per-class AP), from a model or from saved
//! predictions. Without data and weights it evaluates the embedded default model (or, with
//! `--task detection`, the embedded detector) on a freshly generated validation split of the
//! synthetic shapes dataset.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::json;
use tresnet_apps::box_drawing::{DrawnBox, draw_boxes};
use tresnet_apps::cli::{ModelFlags, PreprocessFlags, RuntimeFlags};
use tresnet_apps::cli::{load_bundle, load_embedded_detector};
use tresnet_apps::multilabel_report::MultilabelReport;
use tresnet_apps::plots::{ClassCurve, pr_curve, write_plots};
use tresnet_data::coco::{CocoDataset, CocoOptions};
use tresnet_data::{ImageSource, SyntheticConfig, write_synthetic_coco};
use tresnet_heads::detection::xyxy_to_xywh;
use tresnet_heads::metrics::{
    COCO_STAT_NAMES, Decision, Detection, ScoreTable, evaluate_box_results_file, evaluate_boxes,
};
use tresnet_heads::predictions::ScoreFile;
use tresnet_runtime::TaskKind;
use tresnet_runtime::detection_inference::{DetectionOutcome, detect_over_images};
use tresnet_runtime::inference::{ImageOutcome, InferenceOptions, run_over_images, sigmoid};

tresnet_apps::use_mimalloc!();

/// The COCO evaluations (`--task`), spelled as the bundle tasks they score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
enum CocoTask {
    /// Image-level labels: mAP and the CP/CR/CF1/OP/OR/OF1 table.
    MultiLabel,
    /// Boxes: the twelve COCO statistics.
    Detection,
}
#[derive(Debug, Parser)]
#[command(
    name = "coco-eval",
    about = "Evaluate a TResNet on COCO: multi-label mAP and P/R/F1 tables, or box statistics",
    long_about = "Multi-label evaluation on a COCO instances file (images with annotations only, \
                  as the published protocol): mAP, per-class AP, CP/CR/CF1/OP/OR/OF1. With no \
                  data and no weights it evaluates the embedded default model on a generated \
                  validation split of the synthetic shapes dataset."
)]
struct Cli {
    #[command(flatten)]
    model: ModelFlags,
    #[command(flatten)]
    runtime: RuntimeFlags,
    /// COCO root with annotations/instances_<split>.json and <split>/ images.
    #[arg(long)]
    coco: Option<PathBuf>,
    /// Split name under the COCO root.
    #[arg(long, default_value = "val2014")]
    split: String,
    /// An instances json (instead of --coco).
    #[arg(long)]
    annotations: Option<PathBuf>,
    /// Image folder for --annotations (default: the json's folder).
    #[arg(long)]
    images: Option<PathBuf>,
    /// What to evaluate: image-level multi-label scores (mAP) or boxes (the 12 COCO stats).
    #[arg(long, value_enum, default_value_t = CocoTask::MultiLabel)]
    task: CocoTask,
    /// Score a saved predictions file instead of running a model: a per-image score file
    /// (CSV/JSONL, multi-label) or a COCO results json (detection).
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Write the predictions for later --predictions runs: multi-label scores (CSV keyed by
    /// image id), or detections as a COCO results json.
    #[arg(long)]
    save_predictions: Option<PathBuf>,
    /// Detection: write each image with its detected boxes, labels and scores drawn into DIR.
    #[arg(long)]
    draw: Option<PathBuf>,
    /// Detection: draw only boxes scoring at least this.
    #[arg(long, default_value_t = 0.3)]
    draw_threshold: f32,
    /// Decision threshold for the P/R/F1 table (ASL's validation uses 0.8).
    #[arg(long, default_value_t = 0.8)]
    threshold: f32,
    /// Also report the table for each image's top-k classes.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    #[command(flatten)]
    preprocess: PreprocessFlags,
    #[arg(short = 'b', long, default_value_t = 32)]
    batch_size: usize,
    /// JSON report.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Write precision-recall curves and a per-class AP chart (PNG and SVG) here.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Evaluate only the first N images (a quick check).
    #[arg(long)]
    limit: Option<usize>,
}

fn main() {
    tresnet_apps::allocator::keep_freed_memory();
    tresnet_apps::candle_pool::run_candle_elementwise_on_the_caller();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("coco-eval: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    cli.runtime.init_threads()?;
    // Ground truth: given, or the synthetic validation split generated on the fly.
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let (json, image_root) = match (&cli.coco, &cli.annotations) {
        (Some(root), _) => (
            root.join("annotations")
                .join(format!("instances_{}.json", cli.split)),
            root.join(&cli.split),
        ),
        (None, Some(json)) => {
            let images = cli
                .images
                .clone()
                .unwrap_or_else(|| json.parent().map(Path::to_path_buf).unwrap_or_default());
            (json.clone(), images)
        }
        (None, None) => {
            if cli.model.backbone.is_some() || cli.model.weights.is_some() {
                bail!("give --coco DIR or --annotations FILE with a model");
            }
            eprintln!(
                "coco-eval: no data given: evaluating the embedded default {} on a generated shapes split",
                if cli.task == CocoTask::Detection {
                    "detector"
                } else {
                    "model"
                }
            );
            let written =
                write_synthetic_coco(scratch.path(), &SyntheticConfig::shapes_64(500, 1000))?;
            (written.annotations, written.images)
        }
    };

    if cli.task == CocoTask::Detection {
        return run_detection(&cli, &json, &image_root, scratch.path());
    }

    let mut dataset = CocoDataset::from_file(&json, CocoOptions::multilabel())?;
    for w in dataset.warnings.iter().take(5) {
        eprintln!("coco-eval: warning: {w}");
    }
    if let Some(n) = cli.limit {
        dataset.images.truncate(n);
        dataset.objects.truncate(n);
    }
    let names = dataset.class_names();
    let k = names.len();

    // Scores per dataset image (None: skipped).
    let mut scores: Vec<Option<Vec<f32>>> = vec![None; dataset.len()];
    let mut skipped: Vec<serde_json::Value> = Vec::new();
    let mut model_source = None;
    let mut bundle_thresholds = None;
    match &cli.predictions {
        Some(path) => {
            let file = ScoreFile::read(path)?;
            let by_id: HashMap<String, usize> = dataset
                .images
                .iter()
                .enumerate()
                .map(|(i, im)| (im.id.to_string(), i))
                .collect();
            let by_name: HashMap<&str, usize> = dataset
                .images
                .iter()
                .enumerate()
                .map(|(i, im)| (im.file_name.as_str(), i))
                .collect();
            for (key, row) in file.rows {
                if row.len() != k {
                    bail!(
                        "{}: image {key} has {} scores for {k} classes",
                        path.display(),
                        row.len()
                    );
                }
                // A key is an image id or a file name; one that is both, for two different
                // images, cannot be attributed.
                let image = match (by_id.get(&key), by_name.get(key.as_str())) {
                    (Some(&a), Some(&b)) if a != b => bail!(
                        "{}: image `{key}` is ambiguous: the id of {} and the file name of image {}",
                        path.display(),
                        dataset.images[a].file_name,
                        dataset.images[b].id
                    ),
                    (Some(&i), _) | (None, Some(&i)) => Some(i),
                    (None, None) => None,
                };
                if let Some(i) = image {
                    if scores[i].is_some() {
                        bail!(
                            "{}: image `{key}` (id {}) is scored twice",
                            path.display(),
                            dataset.images[i].id
                        );
                    }
                    scores[i] = Some(row);
                }
            }
            let missing = scores.iter().filter(|s| s.is_none()).count();
            if missing > 0 {
                bail!(
                    "{}: no scores for {missing} of the {} evaluated images",
                    path.display(),
                    dataset.len()
                );
            }
        }
        None => {
            let overrides = &cli.preprocess;
            let bundle = load_bundle(&cli.model, &cli.runtime, overrides)?;
            if bundle.num_classes() != k {
                bail!(
                    "the model has {} outputs but {} has {k} categories",
                    bundle.num_classes(),
                    json.display()
                );
            }
            let missing = dataset.missing_images(&image_root);
            if missing.len() == dataset.len() && !dataset.is_empty() {
                bail!(
                    "none of the {} images exist under {}",
                    dataset.len(),
                    image_root.display()
                );
            }
            let sources: Vec<ImageSource> = (0..dataset.len())
                .map(|i| ImageSource::File(dataset.image_path(&image_root, i)))
                .collect();
            let options =
                InferenceOptions::new(cli.batch_size, cli.runtime.worker_count(), "coco-eval");
            let timing = run_over_images(&bundle, sources, &options, |outcomes| {
                for (i, outcome) in outcomes {
                    match outcome {
                        ImageOutcome::Logits(l) => scores[i] = Some(sigmoid(&l)),
                        ImageOutcome::Failed(reason) => {
                            eprintln!("coco-eval: skipped: {reason}");
                            skipped
                                .push(json!({"image_id": dataset.images[i].id, "error": reason}));
                        }
                    }
                }
                Ok(())
            })?;
            eprintln!(
                "coco-eval: {} images in {:.1} s ({:.1} img/s)",
                dataset.len(),
                timing.total,
                dataset.len() as f64 / timing.total.max(1e-9)
            );
            model_source = Some(bundle.source.clone());
            bundle_thresholds = bundle.thresholds.clone();
        }
    }

    let kept: Vec<usize> = (0..dataset.len())
        .filter(|&i| scores[i].is_some())
        .collect();
    if kept.is_empty() {
        bail!("no image could be evaluated");
    }
    let flat_scores: Vec<f32> = kept
        .iter()
        .flat_map(|&i| scores[i].clone().unwrap_or_default())
        .collect();
    let flat_targets: Vec<f32> = kept.iter().flat_map(|&i| dataset.multi_hot(i)).collect();
    let table = ScoreTable::new(&flat_scores, &flat_targets, k)?;
    let mut decisions = vec![(
        format!("score > {}", cli.threshold),
        Decision::Threshold(cli.threshold),
    )];
    if let Some(t) = bundle_thresholds.filter(|t| t.len() == k) {
        decisions.push(("calibrated thresholds".into(), Decision::PerClass(t)));
    }
    if cli.top_k > 0 {
        decisions.push((format!("top-{}", cli.top_k), Decision::TopK(cli.top_k)));
    }
    let report = MultilabelReport::compute(&table, &names, &decisions);
    println!("{}", report.to_text());

    if let Some(path) = &cli.save_predictions {
        let file = ScoreFile {
            class_names: Some(names.clone()),
            rows: kept
                .iter()
                .map(|&i| {
                    (
                        dataset.images[i].id.to_string(),
                        scores[i].clone().unwrap_or_default(),
                    )
                })
                .collect(),
        };
        let mut bytes = Vec::new();
        file.write_csv(&mut bytes)?;
        write_atomically(path, &bytes)?;
    }
    if let Some(dir) = &cli.plots {
        let curves: Vec<ClassCurve> = (0..k)
            .map(|c| {
                let (s, t) = table.column(c);
                ClassCurve {
                    name: names[c].clone(),
                    ap: report.per_class[c].ap,
                    points: pr_curve(&s, &t, 400),
                }
            })
            .collect();
        for p in write_plots(dir, &curves)? {
            eprintln!("coco-eval: wrote {}", p.display());
        }
    }
    let json_report = json!({
        "task": TaskKind::MultiLabel,
        "annotations": json,
        "model": model_source,
        "predictions": cli.predictions,
        "mAP": report.map,
        "report": report,
        "skipped": skipped,
    });
    write_report(cli.output.as_deref(), &json_report)
}

/// `--task detection`: COCO box statistics of a detector (or of a saved results file), with
/// per-class AP, the results json and drawn boxes on request.
fn run_detection(cli: &Cli, json_path: &Path, image_root: &Path, scratch: &Path) -> Result<()> {
    let mut model_source = None;
    let mut skipped: Vec<serde_json::Value> = Vec::new();
    let mut ground_truth = json_path.to_path_buf();
    let eval = match &cli.predictions {
        Some(results) => evaluate_box_results_file(json_path, results)?,
        None => {
            let overrides = &cli.preprocess;
            let bundle = if cli.model.backbone.is_none() && cli.model.weights.is_none() {
                load_embedded_detector(&cli.runtime, overrides)?
            } else {
                load_bundle(&cli.model, &cli.runtime, overrides)?
            };
            let detector = bundle.detector().with_context(|| {
                format!(
                    "{} is not a detection model (train one with finetune --task detection)",
                    bundle.source
                )
            })?;
            let mut dataset = CocoDataset::from_file(json_path, CocoOptions::default())?;
            for w in dataset.warnings.iter().take(5) {
                eprintln!("coco-eval: warning: {w}");
            }
            if let Some(n) = cli.limit {
                dataset.images.truncate(n);
                dataset.objects.truncate(n);
                // Score against exactly the images evaluated.
                ground_truth = scratch.join("ground_truth_subset.json");
                write_ground_truth_subset(json_path, &dataset, &ground_truth)?;
            }
            let k = dataset.num_classes();
            if detector.head.config().num_classes != k {
                bail!(
                    "the detector has {} classes but {} has {k} categories",
                    detector.head.config().num_classes,
                    json_path.display()
                );
            }
            let missing = dataset.missing_images(image_root);
            if missing.len() == dataset.len() && !dataset.is_empty() {
                bail!(
                    "none of the {} images exist under {}",
                    dataset.len(),
                    image_root.display()
                );
            }
            let names = bundle
                .labels
                .clone()
                .unwrap_or_else(|| dataset.class_names());
            if let Some(dir) = &cli.draw {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let sources: Vec<ImageSource> = (0..dataset.len())
                .map(|i| ImageSource::File(dataset.image_path(image_root, i)))
                .collect();
            let options =
                InferenceOptions::new(cli.batch_size, cli.runtime.worker_count(), "coco-eval");
            let mut detections: Vec<Detection> = Vec::new();
            let mut drawn = 0usize;
            let timing = detect_over_images(detector, sources, &options, |outcomes| {
                for (i, outcome) in outcomes {
                    let image = &dataset.images[i];
                    match outcome {
                        DetectionOutcome::Found(found) => {
                            if let Some(dir) = &cli.draw {
                                let path = dataset.image_path(image_root, i);
                                draw_image(
                                    dir,
                                    &path,
                                    image.id,
                                    &found,
                                    &names,
                                    cli.draw_threshold,
                                )?;
                                drawn += 1;
                            }
                            detections.extend(found.iter().map(|d| Detection {
                                image_id: image.id,
                                category_id: dataset.categories[d.class].id,
                                bbox_xywh: xyxy_to_xywh(&d.bbox).map(f64::from),
                                score: f64::from(d.score),
                            }));
                        }
                        DetectionOutcome::Failed(reason) => {
                            eprintln!("coco-eval: skipped: {reason}");
                            skipped.push(json!({"image_id": image.id, "error": reason}));
                        }
                    }
                }
                Ok(())
            })?;
            eprintln!(
                "coco-eval: {} images in {:.1} s ({:.1} img/s), {} detections",
                dataset.len(),
                timing.total,
                dataset.len() as f64 / timing.total.max(1e-9),
                detections.len()
            );
            if let Some(dir) = &cli.draw {
                eprintln!("coco-eval: drew {drawn} images into {}", dir.display());
            }
            if let Some(path) = &cli.save_predictions {
                let rows: Vec<serde_json::Value> = detections
                    .iter()
                    .map(|d| {
                        json!({
                            "image_id": d.image_id,
                            "category_id": d.category_id,
                            "bbox": d.bbox_xywh,
                            "score": d.score,
                        })
                    })
                    .collect();
                write_atomically(path, &serde_json::to_vec(&rows)?)?;
                eprintln!("coco-eval: detections written to {}", path.display());
            }
            model_source = Some(bundle.source.clone());
            evaluate_boxes(&ground_truth, &detections)?
        }
    };
    for w in &eval.warnings {
        eprintln!("coco-eval: warning: {w}");
    }
    println!("{}", eval.summary.join("\n"));
    println!(
        "\n{:<24} {:>7} {:>7} {:>7} {:>7}",
        "category", "AP", "AP50", "AP75", "AR100"
    );
    for c in &eval.per_category {
        println!(
            "{:<24} {:>7.3} {:>7.3} {:>7.3} {:>7.3}",
            c.name, c.ap, c.ap50, c.ap75, c.ar100
        );
    }
    let report = json!({
        "task": TaskKind::Detection,
        "annotations": json_path,
        "model": model_source,
        "predictions": cli.predictions,
        "stats": eval.stats,
        "stats_names": COCO_STAT_NAMES,
        "per_category": eval.per_category.iter().map(|c| json!({
            "category_id": c.category_id, "name": c.name, "AP": c.ap, "AP50": c.ap50, "AP75": c.ap75, "AR100": c.ar100
        })).collect::<Vec<_>>(),
        "skipped": skipped,
    });
    write_report(cli.output.as_deref(), &report)
}

/// Writes the instances file restricted to the images of `dataset` (for `--limit`).
fn write_ground_truth_subset(source: &Path, dataset: &CocoDataset, path: &Path) -> Result<()> {
    let text = tresnet_io::read_limited(
        source,
        tresnet_io::env_limit("TRESNET_MAX_JSON_BYTES", 4 << 30),
    )
    .with_context(|| format!("reading {}", source.display()))?;
    let mut document: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", source.display()))?;
    let kept: std::collections::HashSet<u64> = dataset.images.iter().map(|i| i.id).collect();
    let keep = |v: &serde_json::Value, key: &str| {
        v.get(key)
            .and_then(serde_json::Value::as_u64)
            .is_some_and(|id| kept.contains(&id))
    };
    for (list, key) in [("images", "id"), ("annotations", "image_id")] {
        if let Some(items) = document.get_mut(list).and_then(|v| v.as_array_mut()) {
            items.retain(|v| keep(v, key));
        }
    }
    write_atomically(path, &serde_json::to_vec(&document)?)
}

/// Draws an image's detections (score ≥ `threshold`) into `dir/<image id>_<stem>.png`.
fn draw_image(
    dir: &Path,
    source: &Path,
    image_id: u64,
    found: &[tresnet_heads::detection::BoxDetection],
    names: &[String],
    threshold: f32,
) -> Result<()> {
    let image = tresnet_data::decode_rgb8(source, &tresnet_data::DecodeLimits::default())?;
    // Lowest score first, so the best box's label ends up on top.
    let boxes: Vec<DrawnBox> = found
        .iter()
        .rev()
        .filter(|d| d.score >= threshold)
        .map(|d| DrawnBox {
            class: d.class,
            label: format!(
                "{} {:.2}",
                names.get(d.class).map_or("?", String::as_str),
                d.score
            ),
            bbox: d.bbox,
        })
        .collect();
    let canvas = draw_boxes(&image, &boxes)?;
    let stem = source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = dir.join(format!("{image_id}_{stem}.png"));
    let mut png = Vec::new();
    canvas.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    write_atomically(&path, &png)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    tresnet_io::atomic_write(path, tresnet_io::Durability::Atomic, |w| {
        std::io::Write::write_all(w, bytes)
    })
    .with_context(|| format!("writing {}", path.display()))
}

fn write_report(path: Option<&Path>, report: &serde_json::Value) -> Result<()> {
    if let Some(path) = path {
        write_atomically(path, &serde_json::to_vec_pretty(report)?)?;
        eprintln!("coco-eval: report written to {}", path.display());
    }
    Ok(())
}
