//! A model bundle's `config.json`: timm's hub file (architecture, `model_args`, preprocessing,
//! label names) plus this project's settings (task, calibrated thresholds, head, detector), read
//! and written by the same types.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tresnet::HubConfig;
use tresnet_data::CanvasFit;
use tresnet_heads::detection::DetectorConfig;

use crate::task_kind::TaskKind;

/// Which head a bundle's weights hold beside the backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadName {
    /// Global pooling and a linear layer (`head.fc.*`).
    Linear,
    /// ML-Decoder (`head.query_embed.*`, `head.decoder.*`).
    MlDecoder,
    /// FPN + FCOS detection head (`fpn.*`, `fcos.*`).
    Fcos,
}

/// This project's keys in a bundle's `config.json`, all optional (timm's own files have none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BundleSettings {
    /// What the outputs mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskKind>,
    /// Calibrated per-class decision thresholds (multi-label), each in `[0, 1]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Vec<f32>>,
    /// The head the weights hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadName>,
    /// Detection: the FPN + FCOS settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detector: Option<DetectorConfig>,
    /// Detection: how images go onto the canvas (`squish` when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canvas_fit: Option<CanvasFit>,
}

/// The keys of [`BundleSettings`] as they appear in the file.
const SETTINGS_KEYS: [&str; 5] = ["task", "thresholds", "head", "detector", "canvas_fit"];

/// A whole bundle `config.json`: `hub` holds timm's keys (and any key neither layer knows, kept
/// as written), `settings` this project's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BundleConfig {
    /// timm's part.
    #[serde(flatten)]
    pub hub: HubConfig,
    /// This project's part.
    #[serde(flatten)]
    pub settings: BundleSettings,
}

impl BundleConfig {
    /// Splits this project's keys out of a hub file read by the backbone.
    pub fn from_hub(mut hub: HubConfig) -> Result<Self> {
        let mut ours = serde_json::Map::new();
        for key in SETTINGS_KEYS {
            if let Some(v) = hub.other.remove(key)
                && !v.is_null()
            {
                ours.insert(key.to_string(), v);
            }
        }
        let settings: BundleSettings = serde_json::from_value(Value::Object(ours)).context(
            "config.json: this project's settings (task, thresholds, head, detector, canvas_fit)",
        )?;
        Ok(Self { hub, settings })
    }

    /// Parses the text of a `config.json`.
    pub fn parse(text: &str) -> Result<Self> {
        Self::from_hub(HubConfig::parse(text)?)
    }

    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_hub(HubConfig::read(path)?)
            .with_context(|| format!("reading {}", path.display()))
    }

    /// The file's text (pretty-printed JSON).
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// How a detector's images go onto its canvas.
    pub fn canvas_fit(&self) -> CanvasFit {
        self.settings.canvas_fit.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BundleConfig {
        let mut config = tresnet::TResNetConfig::variant("tresnet_m").unwrap();
        config.layers = [1, 1, 1, 1];
        config.width_factor = 0.25;
        config.num_classes = 3;
        let mut hub = HubConfig::describing(&config);
        hub.label_names = Some(vec!["a".into(), "b;c".into(), "é".into()]);
        hub.pretrained_cfg = Some(serde_json::json!({"input_size": [3, 64, 64]}));
        BundleConfig {
            hub,
            settings: BundleSettings {
                task: Some(TaskKind::Detection),
                thresholds: Some(vec![0.25, 0.5, 1.0]),
                head: Some(HeadName::Fcos),
                detector: Some(DetectorConfig {
                    num_classes: 3,
                    ..DetectorConfig::default()
                }),
                canvas_fit: Some(CanvasFit::Letterbox),
            },
        }
    }

    #[test]
    fn a_written_config_reads_back_equal() {
        let config = sample();
        let text = config.to_json().unwrap();
        assert_eq!(BundleConfig::parse(&text).unwrap(), config);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["task"], "detection");
        assert_eq!(value["canvas_fit"], "letterbox");
        assert_eq!(value["head"], "fcos");
    }

    #[test]
    fn timm_files_have_no_settings_and_unknown_keys_survive() {
        let text = r#"{"architecture": "tresnet_m", "num_classes": 1000, "license": "apache-2.0"}"#;
        let config = BundleConfig::parse(text).unwrap();
        assert_eq!(config.settings, BundleSettings::default());
        let again: Value = serde_json::from_str(&config.to_json().unwrap()).unwrap();
        assert_eq!(again["license"], "apache-2.0");
        assert!(again.get("task").is_none());
    }

    #[test]
    fn a_misspelt_setting_is_refused_with_its_name() {
        let err = BundleConfig::parse(r#"{"architecture": "tresnet_m", "task": "multilabel"}"#)
            .unwrap_err();
        assert!(format!("{err:#}").contains("multilabel"), "{err:#}");
    }
}
