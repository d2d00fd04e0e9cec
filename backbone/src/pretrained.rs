//! The published timm weights for TResNet and the preprocessing each expects (TRESNET_SPEC §4.1).

use serde_json::{Value, json};

/// One published set of weights (`timm/<architecture>.<tag>` on the Hugging Face hub).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PretrainedTag {
    /// `architecture.tag`, e.g. `tresnet_l.miil_in1k_448`.
    pub name: &'static str,
    /// Square input side the weights were evaluated at.
    pub input_size: usize,
    /// Classifier outputs (1000 for ImageNet-1k, 11221 for ImageNet-21k-P).
    pub num_classes: usize,
    /// Whether timm uses this tag when only the architecture is named.
    pub is_default: bool,
}

/// Every TResNet tag timm publishes. All use bilinear resizing, crop_pct 0.875 with a centre crop,
/// and mean 0 / std 1 (inputs in `[0, 1]`).
pub const PRETRAINED_TAGS: &[PretrainedTag] = &[
    tag("tresnet_m.miil_in21k_ft_in1k", 224, 1000, true),
    tag("tresnet_m.miil_in21k", 224, 11221, false),
    tag("tresnet_m.miil_in1k", 224, 1000, false),
    tag("tresnet_m.miil_in1k_448", 448, 1000, false),
    tag("tresnet_l.miil_in1k", 224, 1000, true),
    tag("tresnet_l.miil_in1k_448", 448, 1000, false),
    tag("tresnet_xl.miil_in1k", 224, 1000, true),
    tag("tresnet_xl.miil_in1k_448", 448, 1000, false),
    tag("tresnet_v2_l.miil_in21k_ft_in1k", 224, 1000, true),
    tag("tresnet_v2_l.miil_in21k", 224, 11221, false),
];

const fn tag(
    name: &'static str,
    input_size: usize,
    num_classes: usize,
    is_default: bool,
) -> PretrainedTag {
    PretrainedTag {
        name,
        input_size,
        num_classes,
        is_default,
    }
}

impl PretrainedTag {
    /// The hub repository, `timm/<name>`.
    pub fn hub_id(&self) -> String {
        format!("timm/{}", self.name)
    }

    /// The architecture part of the name.
    pub fn architecture(&self) -> &'static str {
        self.name.split('.').next().unwrap_or(self.name)
    }

    /// timm's `pretrained_cfg` for these weights, as found in their hub `config.json`.
    pub fn pretrained_cfg(&self) -> Value {
        let pool = self.input_size / 32;
        json!({
            "input_size": [3, self.input_size, self.input_size],
            "interpolation": "bilinear",
            "crop_pct": 0.875,
            "crop_mode": "center",
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
            "num_classes": self.num_classes,
            "pool_size": [pool, pool],
            "first_conv": "body.conv1.conv",
            "classifier": "head.fc",
        })
    }
}

/// The tag named `name` (`architecture.tag`), or the default tag of an architecture name.
pub fn find_pretrained(name: &str) -> Option<&'static PretrainedTag> {
    if name.contains('.') {
        PRETRAINED_TAGS.iter().find(|t| t.name == name)
    } else {
        PRETRAINED_TAGS
            .iter()
            .find(|t| t.is_default && t.architecture() == name)
    }
}
