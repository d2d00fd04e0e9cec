//! The whole detection head on a TResNet: FPN over `layer2`–`layer4` (strides 8, 16, 32) and the
//! FCOS head on every pyramid level.

use candle_core::{DType, Device};
use tresnet::Features;
use tresnet::weights::StateDict;

use super::config::DetectorConfig;
use super::fcos_head::{FcosHead, FcosOutput};
use super::fpn::Fpn;
use super::parameters::check_detector_state;
use crate::error::{HeadsError, Result};

/// FPN + FCOS, with its configuration.
#[derive(Debug, Clone)]
pub struct DetectionHead {
    config: DetectorConfig,
    fpn: Fpn,
    fcos: FcosHead,
}

/// Channels of the stride-8/16/32 stages of a backbone (`layer2`–`layer4`), from its feature
/// geometry.
pub fn pyramid_channels(info: &[tresnet::FeatureInfo]) -> Result<[usize; 3]> {
    let find = |stride: usize| {
        info.iter()
            .rev()
            .find(|f| f.stride == stride)
            .map(|f| f.channels)
            .ok_or_else(|| HeadsError::Invalid(format!("the backbone has no stride-{stride} map")))
    };
    Ok([find(8)?, find(16)?, find(32)?])
}

impl DetectionHead {
    /// Builds the head from `fpn.*` / `fcos.*` weights (checked key by key against
    /// `in_channels`), in `dtype` on `device`. Tensors already in that dtype and device are used
    /// as they are (so trainable variables stay attached).
    pub fn load(
        config: &DetectorConfig,
        in_channels: [usize; 3],
        state: &StateDict,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        check_detector_state(config, in_channels, state)?;
        Ok(Self {
            config: config.clone(),
            fpn: Fpn::load(config, state, dtype, device)?,
            fcos: FcosHead::load(config, state, dtype, device)?,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Backbone features → class logits, distances and centerness on every level.
    pub fn forward(&self, features: &Features) -> Result<FcosOutput> {
        let map = |stride: usize| {
            features
                .stages
                .iter()
                .rev()
                .find(|s| s.stride == stride)
                .map(|s| &s.tensor)
                .ok_or_else(|| {
                    HeadsError::Invalid(format!("the backbone gave no stride-{stride} map"))
                })
        };
        let levels = self.fpn.forward([map(8)?, map(16)?, map(32)?])?;
        self.fcos.forward(&levels)
    }
}
