//! Defaults for checkpoints that carry no `config.json` (the official MIIL `.pth` files): the
//! task, label names and preprocessing of the protocol they were trained for, read from
//! `configs/checkpoint_protocols.toml` and the label lists beside it (compiled in, so the apps work
//! from any directory).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tresnet::TResNetConfig;
use tresnet_data::PreprocessConfig;

use crate::task_kind::TaskKind;

const PROTOCOLS: &str = include_str!("../../configs/checkpoint_protocols.toml");
const LABEL_FILES: &[(&str, &str)] = &[
    (
        "labels/coco80.txt",
        include_str!("../../configs/labels/coco80.txt"),
    ),
    (
        "labels/imagenet1k.txt",
        include_str!("../../configs/labels/imagenet1k.txt"),
    ),
];

#[derive(Debug, Deserialize)]
struct ProtocolFile {
    protocol: Vec<ProtocolEntry>,
}

#[derive(Debug, Deserialize)]
struct ProtocolEntry {
    name: String,
    num_classes: usize,
    task: String,
    labels: String,
    resize: String,
    interpolation: String,
    crop_pct: f64,
    input_size: BTreeMap<String, usize>,
}

/// What a protocol says about a checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointProtocol {
    /// The protocol's name, for reports.
    pub name: String,
    /// Single- or multi-label.
    pub task: TaskKind,
    /// One name per output.
    pub labels: Vec<String>,
    /// Evaluation preprocessing.
    pub preprocess: PreprocessConfig,
}

fn parse_protocols() -> Result<Vec<ProtocolEntry>> {
    let file: ProtocolFile =
        toml::from_str(PROTOCOLS).context("configs/checkpoint_protocols.toml")?;
    Ok(file.protocol)
}

/// The protocol for a network of `config` with `num_classes` outputs, if one is listed.
pub fn protocol_for(
    config: &TResNetConfig,
    num_classes: usize,
) -> Result<Option<CheckpointProtocol>> {
    let Some(entry) = parse_protocols()?
        .into_iter()
        .find(|p| p.num_classes == num_classes)
    else {
        return Ok(None);
    };
    let variant = config.variant_name().unwrap_or("other");
    let size = entry
        .input_size
        .get(variant)
        .or_else(|| entry.input_size.get("other"))
        .copied()
        .with_context(|| {
            format!(
                "checkpoint_protocols.toml: `{}` has no input size for {variant}",
                entry.name
            )
        })?;
    let task = match entry.task.as_str() {
        "multi_label" => TaskKind::MultiLabel,
        "single_label" => TaskKind::SingleLabel,
        other => bail!(
            "checkpoint_protocols.toml: `{}`: unknown task {other}",
            entry.name
        ),
    };
    let text = LABEL_FILES
        .iter()
        .find(|(name, _)| *name == entry.labels)
        .map(|(_, text)| *text)
        .with_context(|| {
            format!(
                "checkpoint_protocols.toml: unknown label list {}",
                entry.labels
            )
        })?;
    let labels: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if labels.len() != num_classes {
        bail!(
            "configs/{}: {} names for {num_classes} classes",
            entry.labels,
            labels.len()
        );
    }
    let preprocess = PreprocessConfig::from_pretrained_cfg(&serde_json::json!({
        "input_size": [3, size, size],
        "interpolation": entry.interpolation,
        "crop_pct": entry.crop_pct,
        "resize_mode": entry.resize,
    }))?;
    Ok(Some(CheckpointProtocol {
        name: entry.name,
        task,
        labels,
        preprocess,
    }))
}

#[cfg(test)]
mod tests {
    use tresnet_data::ResizeMode;

    use super::*;

    #[test]
    fn coco_checkpoints_get_the_squish_protocol_at_their_size() {
        for (variant, size) in [
            ("tresnet_m", 224),
            ("tresnet_l", 448),
            ("tresnet_v2_l", 448),
            ("tresnet_xl", 640),
        ] {
            let config = TResNetConfig::variant(variant).unwrap();
            let p = protocol_for(&config, 80).unwrap().unwrap();
            assert_eq!(p.task, TaskKind::MultiLabel);
            assert_eq!(
                (p.preprocess.height, p.preprocess.resize_mode),
                (size, ResizeMode::Squish)
            );
            assert_eq!(
                (p.labels[0].as_str(), p.labels[79].as_str()),
                ("person", "toothbrush")
            );
        }
        // ML-Decoder's TResNet-XL body has no timm name.
        let mld_xl = TResNetConfig {
            layers: [3, 8, 34, 5],
            ..TResNetConfig::variant("tresnet_v2_l").unwrap()
        };
        assert_eq!(
            protocol_for(&mld_xl, 80)
                .unwrap()
                .unwrap()
                .preprocess
                .height,
            640
        );
    }

    #[test]
    fn imagenet_checkpoints_get_timm_eval_and_other_sizes_nothing() {
        let config = TResNetConfig::variant("tresnet_m").unwrap();
        let p = protocol_for(&config, 1000).unwrap().unwrap();
        assert_eq!(p.task, TaskKind::SingleLabel);
        assert_eq!(p.preprocess, PreprocessConfig::imagenet_eval(224));
        assert_eq!(p.labels.len(), 1000);
        assert!(protocol_for(&config, 37).unwrap().is_none());
    }
}
