//! Running a detector over images: images decoded ahead by the loader, detections decoded, and
//! boxes mapped back to each original image.

use std::sync::Arc;

use anyhow::Result;
use candle_core::Device;
use tresnet_data::{DetectionDataset, DetectionTransform, ImageSource};
use tresnet_heads::detection::BoxDetection;

use crate::detector::Detector;
use crate::inference::{InferenceOptions, PassTiming, timed_pass};

/// What became of one image.
#[derive(Debug, Clone)]
pub enum DetectionOutcome {
    /// Detections in original-image pixels, best first.
    Found(Vec<BoxDetection>),
    /// The image could not be read; the message names the file.
    Failed(String),
}

/// Runs `detector` over `sources` in order; `on_batch` receives `(source index, outcome)` pairs
/// batch by batch. Returns the timing.
pub fn detect_over_images(
    detector: &Detector,
    sources: Vec<ImageSource>,
    options: &InferenceOptions,
    on_batch: impl FnMut(Vec<(usize, DetectionOutcome)>) -> Result<()>,
) -> Result<PassTiming> {
    let dataset = Arc::new(DetectionDataset {
        items: sources.into_iter().map(|s| (s, Vec::new())).collect(),
        transform: DetectionTransform {
            hflip: 0.0,
            ..detector.transform.clone()
        },
        limits: options.limits,
    });
    let cfg = &detector.transform.preprocess;
    timed_pass(
        dataset,
        options,
        |items| {
            let floats: Vec<Vec<f32>> = items.iter().map(|(_, s)| s.image.clone()).collect();
            let images = tresnet_data::stack_batch(&floats, cfg, &Device::Cpu)?;
            let found = detector.detect_batch(&images)?;
            Ok(items
                .iter()
                .zip(found)
                .map(|((i, sample), detections)| {
                    let mapped = detections
                        .into_iter()
                        .map(|d| BoxDetection {
                            bbox: sample.placement.inverse(d.bbox),
                            ..d
                        })
                        .filter(|d| d.bbox[2] > d.bbox[0] && d.bbox[3] > d.bbox[1])
                        .collect();
                    (*i, DetectionOutcome::Found(mapped))
                })
                .collect())
        },
        DetectionOutcome::Failed,
        on_batch,
    )
}
