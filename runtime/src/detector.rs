//! A detector: a TResNet backbone with its FPN + FCOS head, and how images go onto its canvas.

use anyhow::{Context, Result};
use tresnet::weights::StateDict;
use tresnet::{BuildOptions, TResNet, TResNetConfig};
use tresnet_data::DetectionTransform;
use tresnet_heads::detection::{
    BoxDetection, DetectionHead, DetectorConfig, decode_detections, pyramid_channels,
};

use crate::detection_state::split_detection_state;

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
            backbone.dtype(),
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
