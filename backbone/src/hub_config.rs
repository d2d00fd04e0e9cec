//! timm's hub `config.json`: the architecture, its arguments, and the preprocessing of a model.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{GlobalPool, TResNetConfig};
use crate::error::{Error, Result};

/// A model's `config.json` as timm writes it to the hub (`architecture`, `num_classes`,
/// `model_args`, `pretrained_cfg`, optional `label_names`). Keys the backbone does not read are
/// kept in [`Self::other`], so a file read and written again keeps them, and layers above (the
/// runtime's bundle settings) read their own keys from there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HubConfig {
    /// A timm model name such as `tresnet_m` (a `.tag` suffix is tolerated).
    pub architecture: String,
    /// Classifier outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
    /// Width of the pooled features (informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_features: Option<usize>,
    /// Arguments that override the architecture's defaults (`layers`, `width_factor`, `v2`, …).
    #[serde(default)]
    pub model_args: Map<String, Value>,
    /// Preprocessing (`input_size`, `interpolation`, `crop_pct`, `crop_mode`, `mean`, `std`, …),
    /// interpreted by the data crate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained_cfg: Option<Value>,
    /// Class names, when the model carries them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_names: Option<Vec<String>>,
    /// Every other key of the file, as written.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl HubConfig {
    /// The file that describes `config`: its variant's name (`tresnet_m` when it is none of the
    /// published ones) with every architecture argument in `model_args`, so
    /// `timm.create_model(architecture, num_classes=…, **model_args)` builds this network.
    pub fn describing(config: &TResNetConfig) -> Self {
        let mut model_args = Map::new();
        model_args.insert("layers".into(), serde_json::json!(config.layers));
        model_args.insert("width_factor".into(), config.width_factor.into());
        model_args.insert("v2".into(), config.v2.into());
        model_args.insert("in_chans".into(), config.in_chans.into());
        model_args.insert(
            "global_pool".into(),
            serde_json::to_value(config.global_pool).unwrap_or(Value::Null),
        );
        model_args.insert("stem_leaky_slope".into(), config.stem_leaky_slope.into());
        model_args.insert("block_leaky_slope".into(), config.block_leaky_slope.into());
        Self {
            architecture: config.variant_name().unwrap_or("tresnet_m").to_string(),
            num_classes: Some(config.num_classes),
            num_features: Some(config.num_features()),
            model_args,
            pretrained_cfg: None,
            label_names: None,
            other: Map::new(),
        }
    }

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
    fn a_described_config_builds_the_same_network() {
        let mut config = TResNetConfig::variant("tresnet_m").unwrap();
        config.layers = [1, 1, 2, 1];
        config.width_factor = 0.25;
        config.num_classes = 7;
        let hub = HubConfig::describing(&config);
        let text = serde_json::to_string(&hub).unwrap();
        let back = HubConfig::parse(&text).unwrap();
        assert_eq!(back, hub);
        assert_eq!(back.to_tresnet_config().unwrap(), config);
    }

    #[test]
    fn keys_the_backbone_does_not_read_are_kept() {
        let text = r#"{"architecture": "tresnet_m", "task": "multi_label", "x": [1, 2]}"#;
        let hub = HubConfig::parse(text).unwrap();
        assert_eq!(hub.other["task"], "multi_label");
        let again: Value = serde_json::to_value(&hub).unwrap();
        assert_eq!(again["x"], serde_json::json!([1, 2]));
    }

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
