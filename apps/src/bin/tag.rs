//! `tag`: label a photo collection. Walks a folder, runs the model in batches, keeps the labels
//! above the model's calibrated thresholds (or `--threshold`) and/or its top k, and appends one
//! record per photo to a JSONL/CSV/JSON file — resumable, shardable, with optional XMP sidecars
//! and an HTML gallery.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::json;
use tresnet_apps::cli::{ModelFlags, PreprocessFlags, RuntimeFlags};
use tresnet_apps::cli::{load_bundle, parse_preferring_cpu_bf16};
use tresnet_apps::gallery::{GalleryItem, write_gallery};
use tresnet_apps::shard::Shard;
use tresnet_apps::tag_records::{
    CSV_HEADER, Format, Label, PhotoStamp, TagRecord, append, done_by, latest_per_file,
    read_existing, rewrite, short_id,
};
use tresnet_apps::xmp_sidecar::{SidecarNaming, TaggerKeywords, write_sidecar};
use tresnet_data::{DecodeMode, ImageSource};
use tresnet_heads::metrics::top_k;
use tresnet_runtime::ModelBundle;
use tresnet_runtime::TaskKind;
use tresnet_runtime::image_inputs::images_under;
use tresnet_runtime::inference::{
    ImageOutcome, InferenceOptions, run_over_images, sigmoid, softmax,
};

tresnet_apps::use_mimalloc!();
#[derive(Debug, Parser)]
#[command(
    name = "tag",
    about = "Tag a photo collection with a TResNet (resumable, shardable, XMP sidecars, HTML gallery)",
    long_about = "Walks PHOTOS recursively and writes one record per photo. Multi-label models keep the \
                  classes above their calibrated per-class thresholds (from the bundle) or \
                  --threshold; single-label models keep their top --top-k classes. Re-running skips \
                  photos already tagged with the same model. Without --weights the embedded default \
                  model runs (try `tag runtime/assets/examples`)."
)]
struct Cli {
    /// A folder of photos (searched recursively) or one photo.
    #[arg(required_unless_present = "merge")]
    photos: Option<PathBuf>,
    /// Instead of tagging: combine these outputs (shards, earlier runs; format by extension)
    /// into -o with one record per photo, the later file winning, and optionally --html.
    #[arg(long, num_args = 1.., conflicts_with = "photos")]
    merge: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelFlags,
    #[command(flatten)]
    runtime: RuntimeFlags,
    /// Output file (default tags.jsonl / tags.csv / tags.json in the current directory).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// Score threshold for multi-label models (default: the bundle's calibrated thresholds, else 0.7).
    #[arg(long)]
    threshold: Option<f32>,
    /// Keep at most this many labels per photo (single-label default: 5).
    #[arg(long)]
    top_k: Option<usize>,
    /// Also write keywords to an XMP sidecar next to each photo: `dc:subject`, plus
    /// `lr:hierarchicalSubject` entries `<root>|<model>|<label>` that record what the tagger
    /// added, so a re-run with another model replaces its own keywords and never the user's.
    #[arg(long)]
    xmp: bool,
    /// Sidecar name: `append` (photo.jpg.xmp: darktable, digiKam) or `replace` (photo.xmp:
    /// Lightroom, Capture One).
    #[arg(long, value_enum, default_value_t = SidecarNaming::Append)]
    xmp_naming: SidecarNaming,
    /// Root of the hierarchical keywords the tagger writes.
    #[arg(long, default_value = "auto")]
    xmp_root: String,
    /// Process only shard i of n (`i/n`, 0-based) of the sorted photo list, or `auto`: i and n
    /// from a Slurm job array or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with
    /// TAG_SHARD_COUNT). Without -o the output is tags.<i>-of-<n>.<format>.
    #[arg(long)]
    shard: Option<String>,
    /// Drop the records of photos that no longer exist (off by default: a photo on an unmounted
    /// disk keeps its record).
    #[arg(long)]
    prune: bool,
    /// Write a self-contained HTML gallery of the results.
    #[arg(long)]
    html: Option<PathBuf>,
    #[arg(short = 'b', long, default_value_t = 16)]
    batch_size: usize,
    #[command(flatten)]
    preprocess: PreprocessFlags,
    /// Refuse photos with more pixels than this.
    #[arg(long)]
    max_pixels: Option<u64>,
    /// Decode every pixel of each JPEG, exactly as Pillow does (as `coco-eval` and `top1-eval`
    /// do). By default a JPEG is decoded at the coarsest DCT scale (1/8, 1/4, 1/2) that still
    /// covers the model's input size, which is several times faster on camera photos.
    #[arg(long)]
    exact_decode: bool,
}

fn main() {
    tresnet_apps::allocator::keep_freed_memory();
    tresnet_apps::candle_pool::run_candle_elementwise_on_the_caller();
    let cli = parse_preferring_cpu_bf16::<Cli>(|cli| &mut cli.runtime);
    if let Err(err) = run(cli) {
        eprintln!("tag: error: {err:#}");
        std::process::exit(1);
    }
}

/// Writes the HTML gallery of `records` (one per photo) to `html`.
#[allow(clippy::print_stderr)]
fn gallery_of(records: &[&TagRecord], html: &Path, title: &str) -> Result<()> {
    let failures: Vec<(String, String)> = records
        .iter()
        .filter_map(|r| r.error.clone().map(|e| (r.file.clone(), e)))
        .collect();
    let items: Vec<GalleryItem> = records
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| GalleryItem {
            file: r.file.clone(),
            labels: r
                .labels
                .iter()
                .map(|l| (l.label.clone(), l.score))
                .collect(),
        })
        .collect();
    write_gallery(html, title, &items, &failures)?;
    eprintln!("tag: gallery written to {}", html.display());
    Ok(())
}

/// The format an output's name says (`.jsonl`, `.csv`, `.json`).
fn format_of(path: &Path) -> Result<Format> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl") => Ok(Format::Jsonl),
        Some("csv") => Ok(Format::Csv),
        Some("json") => Ok(Format::Json),
        _ => bail!(
            "{}: cannot tell the format from the name (.jsonl, .csv or .json)",
            path.display()
        ),
    }
}

/// `--merge`: the records of every input (in order; for a photo in several, the later input's
/// record wins) into one output with one record per photo, written atomically.
fn merge(cli: &Cli) -> Result<()> {
    let output = cli
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("tags.{}", cli.format.extension())));
    let _lock = tresnet_io::OutputLock::acquire(&output)
        .with_context(|| format!("cannot lock {}", output.display()))?;
    let mut all = Vec::new();
    let mut counts = Vec::new();
    for input in &cli.merge {
        let format = format_of(input)?;
        if !input.is_file() {
            bail!("--merge {}: no such file", input.display());
        }
        let records = read_existing(input, format)?;
        counts.push(json!({"file": input, "records": records.len()}));
        all.extend(records);
    }
    let merged = latest_per_file(all, same_file_key);
    rewrite(&output, &merged, cli.format)?;
    if let Some(html) = &cli.html {
        let shown: Vec<&TagRecord> = merged.iter().collect();
        gallery_of(&shown, html, &format!("Tags: {}", output.display()))?;
    }
    println!(
        "{}",
        json!({
            "output": output,
            "inputs": counts,
            "records": merged.len(),
            "unreadable": merged.iter().filter(|r| r.error.is_some()).count(),
        })
    );
    Ok(())
}

/// One spelling per file: its canonical path when it exists, else the name as written.
fn same_file_key(name: &str) -> String {
    std::fs::canonicalize(name).map_or_else(|_| name.to_string(), |p| p.display().to_string())
}

/// How scores become labels.
struct LabelRule {
    multi_label: bool,
    thresholds: Vec<f32>,
    top_k: Option<usize>,
}

impl LabelRule {
    fn new(bundle: &ModelBundle, cli: &Cli) -> Self {
        let k = bundle.num_classes();
        let multi_label = bundle.task != Some(TaskKind::SingleLabel) && bundle.task.is_some();
        let thresholds = match (cli.threshold, &bundle.thresholds) {
            (Some(t), _) => vec![t; k],
            (None, Some(t)) if t.len() == k && multi_label => t.clone(),
            _ => vec![if multi_label { 0.7 } else { 0.0 }; k],
        };
        let top_k = cli.top_k.or((!multi_label).then_some(5));
        Self {
            multi_label,
            thresholds,
            top_k,
        }
    }

    fn labels(&self, logits: &[f32], names: &[String]) -> Vec<Label> {
        let scores = if self.multi_label {
            sigmoid(logits)
        } else {
            softmax(logits)
        };
        let ranked = top_k(&scores, scores.len());
        ranked
            .into_iter()
            .filter(|(c, s)| *s > self.thresholds[*c])
            .take(self.top_k.unwrap_or(usize::MAX))
            .map(|(c, s)| Label {
                label: names[c].clone(),
                score: s,
            })
            .collect()
    }
}

fn run(cli: Cli) -> Result<()> {
    cli.runtime.init_threads()?;
    let format = cli.format;
    if !cli.merge.is_empty() {
        return merge(&cli);
    }
    let shard = cli
        .shard
        .as_deref()
        .map(|spec| Shard::parse(spec, |name| std::env::var(name).ok()))
        .transpose()?;
    let output = cli.output.clone().unwrap_or_else(|| {
        PathBuf::from(match shard {
            Some(s) => s.output_name(format.extension()),
            None => format!("tags.{}", format.extension()),
        })
    });
    let photos_root = cli.photos.clone().context("give PHOTOS or --merge")?;
    let overrides = &cli.preprocess;
    let bundle = load_bundle(&cli.model, &cli.runtime, overrides)?;
    if bundle.num_classes() == 0 {
        bail!("the model has no classifier to tag with");
    }
    let model_id = short_id(&bundle.identity());
    let model_name = model_display_name(&bundle.source);
    let names = bundle.class_names();
    let rule = LabelRule::new(&bundle, &cli);

    let (mut photos, walk) = images_under(&photos_root)?;
    // Every photo of the collection, whatever the shard (for --prune).
    let present: std::collections::HashSet<String> =
        photos.iter().map(|p| same_file_key(&p.name())).collect();
    if let Some(shard) = shard {
        photos = photos
            .into_iter()
            .enumerate()
            .filter(|(j, _)| shard.takes(*j))
            .map(|(_, p)| p)
            .collect();
    }
    // One writer per output: a second shard or run pointed at the same file is refused.
    let _lock = tresnet_io::OutputLock::acquire(&output)
        .with_context(|| format!("cannot lock {}", output.display()))?;
    let previous = latest_per_file(read_existing(&output, format)?, same_file_key);
    let done = done_by(&previous, &model_id, |file| PhotoStamp::of(Path::new(file)));
    // Compare by the file itself, so `tag photos` resumes `tag ./photos` or `tag /abs/photos`.
    let done_files: std::collections::HashSet<String> =
        done.iter().map(|f| same_file_key(f)).collect();
    let todo: Vec<ImageSource> = photos
        .into_iter()
        .filter(|p| !done_files.contains(&same_file_key(&p.name())))
        .collect();
    eprintln!(
        "tag: {} with {} ({} photos to tag, {} already tagged, {} non-images ignored)",
        photos_root.display(),
        bundle.source,
        todo.len(),
        done.len(),
        walk.skipped_non_images
    );

    let mut out = match format {
        Format::Json => None,
        Format::Jsonl | Format::Csv => {
            let fresh = !output.exists()
                || std::fs::metadata(&output)
                    .map(|m| m.len() == 0)
                    .unwrap_or(true);
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&output)
                .with_context(|| format!("opening {}", output.display()))?;
            if fresh && format == Format::Csv {
                file.write_all(CSV_HEADER.as_bytes())?;
            }
            Some(file)
        }
    };
    let mut new_records: Vec<TagRecord> = Vec::new();
    let mut sidecar_failures: Vec<String> = Vec::new();
    let names_of: Vec<String> = todo.iter().map(ImageSource::name).collect();
    // Each photo's size and modification time as it is tagged (read before decoding, so an edit
    // during the run is caught by the next one).
    let stamps: Vec<Option<PhotoStamp>> = names_of
        .iter()
        .map(|name| PhotoStamp::of(Path::new(name)))
        .collect();
    let mut options = InferenceOptions::new(cli.batch_size, cli.runtime.worker_count(), "tag");
    if let Some(max) = cli.max_pixels {
        options.limits.max_pixels = max;
    }
    if !cli.exact_decode {
        options.decode = DecodeMode::ReducedForModel;
    }
    let timing = run_over_images(&bundle, todo, &options, |outcomes| {
        let records: Vec<TagRecord> = outcomes
            .into_iter()
            .map(|(i, outcome)| match outcome {
                ImageOutcome::Logits(l) => TagRecord {
                    file: names_of[i].clone(),
                    model: model_id.clone(),
                    labels: rule.labels(&l, &names),
                    error: None,
                    size: None,
                    modified: None,
                }
                .stamped(stamps[i]),
                ImageOutcome::Failed(reason) => TagRecord {
                    file: names_of[i].clone(),
                    model: model_id.clone(),
                    labels: Vec::new(),
                    error: Some(reason),
                    size: None,
                    modified: None,
                }
                .stamped(stamps[i]),
            })
            .collect();
        if cli.xmp {
            for r in records
                .iter()
                .filter(|r| r.error.is_none() && !r.labels.is_empty())
            {
                let keywords = TaggerKeywords {
                    root: cli.xmp_root.clone(),
                    model: model_name.clone(),
                    labels: r.labels.iter().map(|l| l.label.clone()).collect(),
                };
                if let Err(e) = write_sidecar(Path::new(&r.file), cli.xmp_naming, &keywords) {
                    sidecar_failures.push(format!("{e:#}"));
                }
            }
        }
        if let Some(file) = out.as_mut() {
            append(file, &records, format)?;
        }
        new_records.extend(records);
        Ok(())
    })?;

    // The appended records supersede earlier ones for the same photo: compact to one record per
    // photo in one atomic rewrite (a run killed before it left the appended lines, which the next
    // run compacts the same way).
    let mut all: Vec<TagRecord> = previous;
    all.extend(new_records.iter().cloned());
    let mut all = latest_per_file(all, same_file_key);
    let mut pruned = 0;
    if cli.prune {
        let before = all.len();
        // Gone: neither in this collection nor on disk (records of photos outside the folder
        // tagged this time stay while their files exist).
        all.retain(|r| present.contains(&same_file_key(&r.file)) || Path::new(&r.file).exists());
        pruned = before - all.len();
    }
    drop(out);
    rewrite(&output, &all, format)?;
    // One record per photo in the gallery: the latest of each file for this model.
    let mut latest: HashMap<String, &TagRecord> = HashMap::new();
    for r in all.iter().filter(|r| r.model == model_id) {
        latest.insert(same_file_key(&r.file), r);
    }
    let mut shown: Vec<&TagRecord> = latest.into_values().collect();
    shown.sort_by(|a, b| a.file.cmp(&b.file));
    if let Some(html) = &cli.html {
        gallery_of(&shown, html, &format!("Tags: {}", photos_root.display()))?;
    }
    let tagged = new_records.iter().filter(|r| r.error.is_none()).count();
    let failed: Vec<&TagRecord> = new_records.iter().filter(|r| r.error.is_some()).collect();
    for r in &failed {
        eprintln!(
            "tag: unreadable: {}",
            r.error.as_deref().unwrap_or_default()
        );
    }
    for f in &sidecar_failures {
        eprintln!("tag: sidecar not written: {f}");
    }
    let rate = |seconds: f64| {
        if seconds > 0.0 {
            new_records.len() as f64 / seconds
        } else {
            0.0
        }
    };
    eprintln!(
        "tag: {tagged} tagged, {} unreadable, {} already done; {:.1} img/s overall, model {:.1} s, waiting for decoding {:.1} s",
        failed.len(),
        done.len(),
        rate(timing.total),
        timing.model,
        timing.waiting_for_data
    );
    println!(
        "{}",
        json!({
            "output": output,
            "model": model_id,
            "tagged": tagged,
            "unreadable": failed.iter().map(|r| json!({"file": r.file, "error": r.error})).collect::<Vec<_>>(),
            "already_tagged": done.len(),
            "pruned": pruned,
            "sidecar_failures": sidecar_failures,
            "seconds": timing.total,
            "model_seconds": timing.model,
            "decode_wait_seconds": timing.waiting_for_data,
            "dtype": cli.runtime.dtype.name(),
            "bf16_products": bundle.backbone().multiplies_in_bf16(),
        })
    );
    Ok(())
}

/// A readable name for the model in keyword trees: a bundle's directory name, a file's stem,
/// the embedded model's name.
fn model_display_name(source: &str) -> String {
    if let Some(name) = source.strip_prefix("embedded:") {
        return name.to_string();
    }
    let path = Path::new(source);
    let named = if path.file_name().is_some_and(|n| n == "model.safetensors") {
        path.parent().and_then(Path::file_name)
    } else {
        path.file_stem()
    };
    named.map_or_else(|| source.to_string(), |n| n.to_string_lossy().into_owned())
}
