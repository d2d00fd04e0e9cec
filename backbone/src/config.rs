//! Architecture configuration: the arguments timm's `TResNet` class accepts, and the named variants.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the final feature map is reduced to one vector per image before the classifier.
///
/// timm's `ClassifierHead` pool types; `fast` (timm's default for TResNet) and `avg` are the same
/// arithmetic mean over H×W.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GlobalPool {
    /// Mean over H×W (timm `fast`, the TResNet default).
    #[default]
    Fast,
    /// Mean over H×W (timm `avg`).
    Avg,
    /// Maximum over H×W.
    Max,
    /// (mean + max) / 2.
    AvgMax,
    /// Concatenation of mean and max (doubles the classifier's input width).
    CatAvgMax,
}

impl GlobalPool {
    /// Parses timm's pool-type string.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "fast" => Ok(Self::Fast),
            "avg" => Ok(Self::Avg),
            "max" => Ok(Self::Max),
            "avgmax" => Ok(Self::AvgMax),
            "catavgmax" => Ok(Self::CatAvgMax),
            other => Err(Error::Config(format!(
                "global_pool `{other}` is not supported (fast, avg, max, avgmax, catavgmax)"
            ))),
        }
    }

    /// Width of the pooled vector for a feature map with `channels` channels.
    pub fn output_width(self, channels: usize) -> usize {
        match self {
            Self::CatAvgMax => 2 * channels,
            _ => channels,
        }
    }
}

/// A complete TResNet architecture description.
///
/// Field names and meanings follow timm's `TResNet(layers, in_chans, num_classes, width_factor, v2,
/// global_pool)`; the two leaky-ReLU slopes are this crate's extension for checkpoints made with the
/// official TResNet repository's v2 file, which uses 1e-6 everywhere (TRESNET_SPEC §1.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TResNetConfig {
    /// Number of residual blocks in each of the four stages.
    pub layers: [usize; 4],
    /// Input image channels (3 for RGB).
    #[serde(default = "default_in_chans")]
    pub in_chans: usize,
    /// Classifier outputs; 0 builds the network without a classifier.
    #[serde(default = "default_num_classes")]
    pub num_classes: usize,
    /// Channel multiplier: base width is `int(64 * width_factor)` (floored to a multiple of 8 in v2).
    #[serde(default = "default_width_factor")]
    pub width_factor: f64,
    /// v2: bottleneck blocks in all four stages (timm `tresnet_v2_l`).
    #[serde(default)]
    pub v2: bool,
    /// Global pooling before the classifier.
    #[serde(default)]
    pub global_pool: GlobalPool,
    /// Negative slope of the stem's leaky ReLU (timm: 0.01).
    #[serde(default = "default_stem_slope")]
    pub stem_leaky_slope: f64,
    /// Negative slope of the leaky ReLUs inside residual blocks (timm: 0.001).
    #[serde(default = "default_block_slope")]
    pub block_leaky_slope: f64,
}

fn default_in_chans() -> usize {
    3
}
fn default_num_classes() -> usize {
    1000
}
fn default_width_factor() -> f64 {
    1.0
}
fn default_stem_slope() -> f64 {
    0.01
}
fn default_block_slope() -> f64 {
    1e-3
}

/// The named variants timm registers, with their stage depths, widths and versions.
const VARIANTS: &[(&str, [usize; 4], f64, bool)] = &[
    ("tresnet_m", [3, 4, 11, 3], 1.0, false),
    ("tresnet_l", [4, 5, 18, 3], 1.2, false),
    ("tresnet_xl", [4, 5, 24, 3], 1.3, false),
    ("tresnet_v2_l", [3, 4, 23, 3], 1.0, true),
];

/// Other spellings of the same architectures (official TResNet repo name, timm deprecations).
const ALIASES: &[(&str, &str)] = &[
    ("tresnet_l_v2", "tresnet_v2_l"),
    ("tresnet_m_448", "tresnet_m"),
    ("tresnet_l_448", "tresnet_l"),
    ("tresnet_xl_448", "tresnet_xl"),
    ("tresnet_m_miil_in21k", "tresnet_m"),
];

impl TResNetConfig {
    /// The names accepted by [`TResNetConfig::variant`].
    pub fn variant_names() -> Vec<&'static str> {
        VARIANTS.iter().map(|v| v.0).collect()
    }

    /// The configuration of a named variant with 1000 classes, e.g. `tresnet_m`.
    ///
    /// A timm pretrained tag after a dot (`tresnet_l.miil_in1k_448`) is ignored here: it names
    /// weights, not an architecture.
    pub fn variant(name: &str) -> Result<Self> {
        let arch = name.split('.').next().unwrap_or(name);
        let arch = ALIASES
            .iter()
            .find(|(alias, _)| *alias == arch)
            .map(|(_, canonical)| *canonical)
            .unwrap_or(arch);
        let (_, layers, width_factor, v2) =
            VARIANTS
                .iter()
                .find(|v| v.0 == arch)
                .ok_or_else(|| Error::UnknownVariant {
                    name: name.to_string(),
                    known: Self::variant_names().join(", "),
                })?;
        Ok(Self {
            layers: *layers,
            in_chans: 3,
            num_classes: 1000,
            width_factor: *width_factor,
            v2: *v2,
            global_pool: GlobalPool::Fast,
            stem_leaky_slope: default_stem_slope(),
            block_leaky_slope: default_block_slope(),
        })
    }

    /// Name of the variant this configuration equals (ignoring classes and pooling), if any.
    pub fn variant_name(&self) -> Option<&'static str> {
        VARIANTS.iter().find_map(|(name, layers, w, v2)| {
            (self.layers == *layers && self.base_planes() == base_planes(*w, *v2) && self.v2 == *v2)
                .then_some(*name)
        })
    }

    /// Same configuration with another number of classes.
    pub fn with_num_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = num_classes;
        self
    }

    /// Width of stage 1's blocks: `int(64 * width_factor)`, floored to a multiple of 8 for v2.
    pub fn base_planes(&self) -> usize {
        base_planes(self.width_factor, self.v2)
    }

    /// Channels of the last feature map (and of the pooled vector for `fast`/`avg`/`max` pools).
    pub fn num_features(&self) -> usize {
        self.base_planes() * 8 * 4
    }

    /// Checks that the numbers describe a buildable network.
    pub fn validate(&self) -> Result<()> {
        if self.layers.contains(&0) {
            return Err(Error::Config(format!(
                "every stage needs at least one block, got layers {:?}",
                self.layers
            )));
        }
        if !(self.width_factor.is_finite() && self.width_factor > 0.0) {
            return Err(Error::Config(format!(
                "width_factor must be a positive number, got {}",
                self.width_factor
            )));
        }
        if self.base_planes() == 0 {
            return Err(Error::Config(format!(
                "width_factor {} gives zero channels{}",
                self.width_factor,
                if self.v2 {
                    " (v2 floors the width to a multiple of 8)"
                } else {
                    ""
                }
            )));
        }
        if self.in_chans == 0 {
            return Err(Error::Config("in_chans must be at least 1".into()));
        }
        for (what, slope) in [
            ("stem_leaky_slope", self.stem_leaky_slope),
            ("block_leaky_slope", self.block_leaky_slope),
        ] {
            if !(0.0..=1.0).contains(&slope) {
                return Err(Error::Config(format!(
                    "{what} must be within [0, 1], got {slope}"
                )));
            }
        }
        Ok(())
    }
}

fn base_planes(width_factor: f64, v2: bool) -> usize {
    // Python's int() truncates toward zero: 64 * 1.2 = 76.8 -> 76, 64 * 1.3 = 83.2 -> 83.
    let planes = (64.0 * width_factor).trunc().max(0.0) as usize;
    if v2 { planes / 8 * 8 } else { planes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_widths_follow_truncation() {
        let widths: Vec<usize> = ["tresnet_m", "tresnet_l", "tresnet_xl", "tresnet_v2_l"]
            .iter()
            .map(|n| TResNetConfig::variant(n).unwrap().base_planes())
            .collect();
        assert_eq!(widths, vec![64, 76, 83, 64]);
    }

    #[test]
    fn tags_and_aliases_resolve() {
        let a = TResNetConfig::variant("tresnet_l.miil_in1k_448").unwrap();
        let b = TResNetConfig::variant("tresnet_l").unwrap();
        assert_eq!(a, b);
        assert!(TResNetConfig::variant("tresnet_l_v2").unwrap().v2);
        assert_eq!(b.variant_name(), Some("tresnet_l"));
    }

    #[test]
    fn unknown_variant_lists_known_names() {
        let err = TResNetConfig::variant("tresnet_s").unwrap_err().to_string();
        assert!(
            err.contains("tresnet_s") && err.contains("tresnet_xl"),
            "{err}"
        );
    }

    #[test]
    fn v2_floors_width_to_multiple_of_eight() {
        let mut c = TResNetConfig::variant("tresnet_v2_l").unwrap();
        c.width_factor = 1.3; // 83 -> 80
        assert_eq!(c.base_planes(), 80);
        c.width_factor = 0.1; // 6 -> 0
        assert!(c.validate().is_err());
    }
}
