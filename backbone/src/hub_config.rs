//! timm's hub `config.json`: the architecture, its arguments, and the preprocessing of a model.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{GlobalPool, TResNetConfig};
use crate::error::{Error, Result};

/// A model's `config.json` as timm writes it to the hub (`architecture`, `num_classes`,
/// `model_args`, `pretrained_cfg`, optional `label_names`), read as is.
#[derive(Debug, Clone, Deserialize)]
pub struct HubConfig {
    /// A timm model name such as `tresnet_m` (a `.tag` suffix is tolerated).
    pub architecture: String,
    /// Classifier outputs.
    #[serde(default)]
    pub num_classes: Option<usize>,
    /// Width of the pooled features (informative).
    #[serde(default)]
    pub num_features: Option<usize>,
    /// Arguments that override the architecture's defaults (`layers`, `width_factor`, `v2`, …).
    #[serde(default)]
    pub model_args: Map<String, Value>,
    /// Preprocessing (`input_size`, `interpolation`, `crop_pct`, `crop_mode`, `mean`, `std`, …),
    /// interpreted by the data crate.
    #[serde(default)]
    pub pretrained_cfg: Option<Value>,
    /// Class names, when the model carries them.
    #[serde(default)]
    pub label_names: Option<Vec<String>>,
    /// This project's bundles: `single_label`, `multi_label` or `detection`.
    #[serde(default)]
    pub task: Option<String>,
    /// This project's bundles: calibrated per-class decision thresholds.
    #[serde(default)]
    pub thresholds: Option<Vec<f32>>,
    /// This project's bundles: the head (`linear`, `ml_decoder`, `fcos`).
    #[serde(default)]
    pub head: Option<String>,
    /// This project's detection bundles: the FPN + FCOS settings, read by the heads crate.
    #[serde(default)]
    pub detector: Option<Value>,
    /// This project's detection bundles: `squish` or `letterbox`.
    #[serde(default)]
    pub canvas_fit: Option<String>,
}

impl HubConfig {
    /// Reads and parses `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            tresnet_io::read_text_limited(path, 256 << 20).map_err(|e| Error::io(path, e))?;
        Self::parse(&text).map_err(|e| Error::checkpoint(path, e.to_string()))
    }

    /// Parses the text of a `config.json`.
    pub fn parse(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::Config(format!("config.json: {e}")))
    }

    /// The architecture this file describes: the named variant with `model_args` and
    /// `num_classes` applied, as `timm.create_model(architecture, **model_args)` would build it.
    pub fn to_tresnet_config(&self) -> Result<TResNetConfig> {
        let mut config = TResNetConfig::variant(&self.architecture)?;
        if let Some(n) = self.num_classes {
            config.num_classes = n;
        }
        apply_model_args(&mut config, &self.model_args)?;
        config.validate()?;
        Ok(config)
    }
}

/// Applies timm-style keyword arguments to a configuration.
pub fn apply_model_args(config: &mut TResNetConfig, args: &Map<String, Value>) -> Result<()> {
    let bad = |key: &str, value: &Value, want: &str| {
        Error::Config(format!("model_args.{key} = {value} is not {want}"))
    };
    for (key, value) in args {
        match key.as_str() {
            "layers" => {
                let layers: Vec<usize> = value
                    .as_array()
                    .and_then(|a| a.iter().map(|v| v.as_u64().map(|n| n as usize)).collect())
                    .ok_or_else(|| bad(key, value, "a list of four integers"))?;
                config.layers = layers
                    .try_into()
                    .map_err(|_| bad(key, value, "a list of four integers"))?;
            }
            "in_chans" | "num_classes" => {
                let n = value
                    .as_u64()
                    .ok_or_else(|| bad(key, value, "an integer"))? as usize;
                if key == "in_chans" {
                    config.in_chans = n;
                } else {
                    config.num_classes = n;
                }
            }
            "width_factor" | "stem_leaky_slope" | "block_leaky_slope" => {
                let x = value.as_f64().ok_or_else(|| bad(key, value, "a number"))?;
                match key.as_str() {
                    "width_factor" => config.width_factor = x,
                    "stem_leaky_slope" => config.stem_leaky_slope = x,
                    _ => config.block_leaky_slope = x,
                }
            }
            "v2" => {
                config.v2 = value
                    .as_bool()
                    .ok_or_else(|| bad(key, value, "a boolean"))?
            }
            "global_pool" => {
                let name = value.as_str().ok_or_else(|| bad(key, value, "a string"))?;
                config.global_pool = GlobalPool::parse(name)?;
            }
            // Training-time regularisation; no effect on inference.
            "drop_rate" | "drop_path_rate" => {}
            other => {
                return Err(Error::Config(format!(
                    "model_args.{other} is not an argument of TResNet (layers, in_chans, \
                     num_classes, width_factor, v2, global_pool, drop_rate, drop_path_rate, \
                     stem_leaky_slope, block_leaky_slope)"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_args_override_the_named_variant() {
        let cfg = HubConfig::parse(
            r#"{"architecture": "tresnet_m", "num_classes": 10,
                "model_args": {"layers": [1, 2, 2, 1], "width_factor": 0.125}}"#,
        )
        .unwrap()
        .to_tresnet_config()
        .unwrap();
        assert_eq!(cfg.layers, [1, 2, 2, 1]);
        assert_eq!(cfg.base_planes(), 8);
        assert_eq!(cfg.num_classes, 10);
    }

    #[test]
    fn unknown_model_args_are_named() {
        let err = HubConfig::parse(r#"{"architecture": "tresnet_m", "model_args": {"depth": 3}}"#)
            .unwrap()
            .to_tresnet_config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("depth"), "{err}");
    }
}
