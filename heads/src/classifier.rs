//! A backbone and a head, loaded together from one checkpoint.

use candle_core::Tensor;
use tresnet::weights::StateDict;
use tresnet::{BuildOptions, TResNet, TResNetConfig};

use crate::error::Result;
use crate::head::{ClassificationHead, HeadKind};

/// A TResNet body (built without its own classifier) feeding a [`ClassificationHead`]:
/// `(B, 3, H, W)` → `(B, num_classes)`.
#[derive(Debug, Clone)]
pub struct Classifier {
    /// The body.
    pub backbone: TResNet,
    /// The head.
    pub head: ClassificationHead,
}

impl Classifier {
    /// Splits a timm-named state dict into `body.*` (the backbone, strictly) and `head.*` (the
    /// head, detected from its tensors unless `kind` is given).
    pub fn from_state_dict(
        config: &TResNetConfig,
        mut state: StateDict,
        kind: Option<HeadKind>,
        options: &BuildOptions,
    ) -> Result<Self> {
        let head_state = state.take_prefix("head.");
        let body_config = config.clone().with_num_classes(0);
        let backbone = TResNet::new(&body_config, &state, options)?;
        let head = ClassificationHead::load(
            head_state,
            kind,
            config.global_pool,
            options.dtype,
            &options.device,
        )?;
        Ok(Self { backbone, head })
    }

    /// Logits.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let features = self.backbone.forward_features(images)?;
        self.head.forward(features.last())
    }
}
