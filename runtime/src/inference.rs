//! Running a model over a list of images: the loader decodes ahead while the model runs, bad
//! images are reported with their reason, scores come back per image.

use std::sync::Arc;

use anyhow::Result;
use candle_core::{DType, Device};
use tresnet_data::{
    Dataset, DecodeLimits, DecodeMode, ImageListDataset, ImageSource, ImageTransform, Loader,
    LoaderOptions,
};

use crate::model_bundle::ModelBundle;
use crate::progress::Progress;

/// What happened to one image.
#[derive(Debug, Clone)]
pub enum ImageOutcome {
    /// Logits `(num_classes)`.
    Logits(Vec<f32>),
    /// The image could not be read; the message names the file.
    Failed(String),
}

/// Loader settings for an inference pass.
#[derive(Debug, Clone)]
pub struct InferenceOptions {
    /// Images per forward pass.
    pub batch_size: usize,
    /// Decoding threads.
    pub workers: usize,
    /// Decoding limits.
    pub limits: DecodeLimits,
    /// Exact (Pillow's pixels; the default) or model-sized JPEG decoding.
    pub decode: DecodeMode,
    /// Label of the progress line (none when quiet).
    pub progress: Option<String>,
}

impl InferenceOptions {
    /// `batch_size` images per pass, `workers` decoding threads, default decoding limits, and a
    /// progress line labelled `label`.
    pub fn new(batch_size: usize, workers: usize, label: &str) -> Self {
        Self {
            batch_size,
            workers,
            limits: DecodeLimits::default(),
            decode: DecodeMode::Exact,
            progress: Some(label.to_string()),
        }
    }
}

/// Seconds spent decoding (waiting for the loader) and in the model during a pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PassTiming {
    /// Time the model waited for decoded batches.
    pub waiting_for_data: f64,
    /// Time in the model.
    pub model: f64,
    /// Whole pass.
    pub total: f64,
}

/// Drives `dataset` through the loader in order, measuring the time spent waiting for decoded
/// batches and in `model` (which turns one batch into `(dataset index, outcome)` pairs; samples
/// the loader could not read come back as `failed(message)`). `on_batch` receives each batch's
/// outcomes sorted by index, outside the measured model time.
pub fn timed_pass<D: Dataset, O>(
    dataset: Arc<D>,
    options: &InferenceOptions,
    mut model: impl FnMut(Vec<(usize, D::Item)>) -> Result<Vec<(usize, O)>>,
    failed: impl Fn(String) -> O,
    mut on_batch: impl FnMut(Vec<(usize, O)>) -> Result<()>,
) -> Result<PassTiming> {
    let started = std::time::Instant::now();
    let count = dataset.len();
    let loader_options = LoaderOptions {
        batch_size: options.batch_size.max(1),
        workers: options.workers,
        ..LoaderOptions::default()
    };
    let mut progress = Progress::new(
        options.progress.clone().unwrap_or_default(),
        count.div_ceil(loader_options.batch_size),
        options.progress.is_none(),
    );
    let mut timing = PassTiming::default();
    let mut waiting = std::time::Instant::now();
    for batch in Loader::new(dataset, &loader_options)? {
        let batch = batch?;
        timing.waiting_for_data += waiting.elapsed().as_secs_f64();
        let model_start = std::time::Instant::now();
        let mut outcomes: Vec<(usize, O)> = batch
            .skipped
            .iter()
            .map(|(i, e)| (*i, failed(e.to_string())))
            .collect();
        let n = batch.items.len();
        if n > 0 {
            outcomes.extend(model(batch.items)?);
        }
        outcomes.sort_by_key(|(i, _)| *i);
        timing.model += model_start.elapsed().as_secs_f64();
        on_batch(outcomes)?;
        progress.step(n, "");
        waiting = std::time::Instant::now();
    }
    timing.total = started.elapsed().as_secs_f64();
    Ok(timing)
}

/// Runs `bundle` over `sources` in order; `on_batch` receives `(source index, outcome)` pairs
/// batch by batch (so callers can write results as they come). Returns the timing.
pub fn run_over_images(
    bundle: &ModelBundle,
    sources: Vec<ImageSource>,
    options: &InferenceOptions,
    on_batch: impl FnMut(Vec<(usize, ImageOutcome)>) -> Result<()>,
) -> Result<PassTiming> {
    let dataset = Arc::new(ImageListDataset {
        items: sources.into_iter().map(|s| (s, ())).collect(),
        transform: ImageTransform::Eval(bundle.preprocess.clone()),
        limits: options.limits,
        decode: options.decode,
    });
    timed_pass(
        dataset,
        options,
        |items| {
            let indices: Vec<usize> = items.iter().map(|(i, _)| *i).collect();
            let floats: Vec<Vec<f32>> = items.into_iter().map(|(_, (f, ()))| f).collect();
            let images = tresnet_data::stack_batch(&floats, &bundle.preprocess, &Device::Cpu)?;
            let logits = bundle
                .logits(&images)?
                .to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?;
            let rows: Vec<Vec<f32>> = logits.to_vec2()?;
            Ok(indices
                .into_iter()
                .zip(rows)
                .map(|(i, r)| (i, ImageOutcome::Logits(r)))
                .collect())
        },
        ImageOutcome::Failed,
        on_batch,
    )
}

/// Sigmoid of logits (multi-label scores).
pub fn sigmoid(logits: &[f32]) -> Vec<f32> {
    logits.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect()
}

/// Softmax of logits (single-label probabilities).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}
