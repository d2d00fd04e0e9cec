//! Running a detector over images: a TResNet backbone with its FPN + FCOS head, images decoded
//! ahead by the loader, detections decoded, and boxes mapped back to each original image.

use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::Device;
use tresnet::weights::StateDict;
use tresnet::{BuildOptions, TResNet, TResNetConfig};
use tresnet_data::{DetectionDataset, DetectionTransform, ImageSource};
use tresnet_heads::detection::{
    BoxDetection, DetectionHead, DetectorConfig, decode_detections, pyramid_channels,
};

use crate::detection_state::split_detection_state;
use crate::inference::{InferenceOptions, PassTiming, timed_pass};

/// A TResNet backbone (without a classifier), its detection head, and how images are put on the
/// head's canvas.
pub struct Detector {
    /// The backbone whose stride-8/16/32 maps feed the head.
    pub backbone: TResNet,
    /// FPN + FCOS.
    pub head: DetectionHead,
    /// Canvas size, fit and normalisation (no flip).
    pub transform: DetectionTransform,
}

impl Detector {
    /// Builds the backbone and its detector from one state dict holding the backbone (timm
    /// names) and the head (`fpn.*`, `fcos.*`).
    pub fn from_state(
        backbone_config: &TResNetConfig,
        detector_config: &DetectorConfig,
        state: &StateDict,
        options: &BuildOptions,
        transform: DetectionTransform,
    ) -> Result<Self> {
        let (backbone_state, head_state) = split_detection_state(state.clone());
        let backbone = TResNet::new(
            &backbone_config.clone().with_num_classes(0),
            &backbone_state,
            options,
        )
        .context("loading the detector's backbone")?;
        let channels = pyramid_channels(&backbone.feature_info())?;
        let head = DetectionHead::load(
            detector_config,
            channels,
            &head_state,
            options.dtype,
            &options.device,
        )
        .context("loading the detection head")?;
        Ok(Self {
            backbone,
            head,
            transform,
        })
    }

    /// Detections of a batch `(B, 3, H, W)` in canvas pixels, best first per image.
    pub fn detect_batch(&self, images: &candle_core::Tensor) -> Result<Vec<Vec<BoxDetection>>> {
        let backbone = &self.backbone;
        let images = images
            .to_device(backbone.device())?
            .to_dtype(backbone.dtype())?;
        let features = backbone.forward_features(&images)?;
        let output = self.head.forward(&features)?;
        let (_, _, h, w) = images.dims4()?;
        Ok(decode_detections(&output, self.head.config(), (w, h))?)
    }
}

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
