//! A runnable model with what it needs around it: preprocessing and label names, resolved from the
//! flags, the weights' `config.json`, the published tag, or the embedded default.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Device;
use tresnet::pretrained::find_pretrained;
use tresnet::weights::{
    ResolvedWeights, StateDict, model_config, resolve_weights, temporary_sibling,
};
use tresnet::{BuildOptions, HubConfig, TResNet, TResNetConfig};
use tresnet_data::{PreprocessConfig, ResizeMode};

use crate::cli::{ModelFlags, RuntimeFlags};
use crate::training::TaskKind;

/// The embedded default model: a small TResNet (layers [1,1,1,1], width 0.25, 64×64 inputs)
/// trained by this project on its synthetic shapes dataset, multi-label (six shapes), with
/// calibrated thresholds; recipe and commands in `configs/shapes_multilabel.toml`.
const EMBEDDED_WEIGHTS: &[u8] = include_bytes!("../assets/shapes_multilabel/model.safetensors");
const EMBEDDED_CONFIG: &str = include_str!("../assets/shapes_multilabel/config.json");
/// Name shown for the embedded default.
pub const EMBEDDED_NAME: &str = "embedded:shapes_multilabel";

/// A model ready to run, with its preprocessing and labels.
pub struct ModelBundle {
    /// The network.
    pub model: TResNet,
    /// How images must be prepared for it.
    pub preprocess: PreprocessConfig,
    /// Class names, when known.
    pub labels: Option<Vec<String>>,
    /// Where the model came from, for reports.
    pub source: String,
}

/// Overrides of the preprocessing given on the command line.
#[derive(Debug, Clone, Default)]
pub struct PreprocessOverrides {
    /// `--input-size`.
    pub input_size: Option<usize>,
    /// `--resize squish|crop`.
    pub resize_mode: Option<ResizeMode>,
}

impl PreprocessOverrides {
    fn apply(&self, mut cfg: PreprocessConfig) -> PreprocessConfig {
        if let Some(size) = self.input_size {
            cfg = cfg.with_input_size(size);
        }
        if let Some(mode) = self.resize_mode {
            cfg.resize_mode = mode;
        }
        cfg
    }
}

/// Parses `--resize`.
pub fn parse_resize_mode(spec: &str) -> Result<ResizeMode> {
    match spec {
        "squish" => Ok(ResizeMode::Squish),
        "crop" => Ok(ResizeMode::CenterCrop),
        other => anyhow::bail!("--resize {other}: expected squish or crop"),
    }
}

/// Loads the model the flags describe; with neither `--backbone` nor `--weights`, the embedded
/// default.
pub fn load_bundle(
    flags: &ModelFlags,
    runtime: &RuntimeFlags,
    overrides: &PreprocessOverrides,
) -> Result<ModelBundle> {
    let options = BuildOptions {
        fold_batch_norm: !flags.no_fold,
        ..BuildOptions::new(runtime.device()?, runtime.dtype()?)
    };
    if flags.backbone.is_none() && flags.weights.is_none() {
        return load_embedded(&options, overrides);
    }
    let weights_spec = match (&flags.weights, &flags.backbone) {
        (Some(w), _) => w.clone(),
        (None, Some(name)) => {
            let tag = find_pretrained(name).with_context(|| {
                format!(
                    "--backbone {name}: no published timm weights for this name; give --weights"
                )
            })?;
            tag.hub_id()
        }
        (None, None) => unreachable!("handled above"),
    };
    let resolved = resolve_weights(&weights_spec)?;
    let config = model_config(
        flags.backbone.as_deref(),
        Some(&resolved),
        flags.num_classes,
    )?;
    let model = TResNet::new(&config, &resolved.weights.state_dict, &options)
        .with_context(|| format!("loading {}", resolved.weights.path.display()))?;
    let preprocess = overrides.apply(preprocess_for(
        &resolved,
        flags.backbone.as_deref(),
        &config,
    )?);
    Ok(ModelBundle {
        labels: resolved
            .hub_config
            .as_ref()
            .and_then(|h| h.label_names.clone()),
        model,
        preprocess,
        source: resolved.weights.path.display().to_string(),
    })
}

/// Preprocessing: the weights' `config.json`, else the published tag named by `--backbone` (or the
/// variant's default tag), else timm's ImageNet evaluation at 224.
fn preprocess_for(
    resolved: &ResolvedWeights,
    backbone: Option<&str>,
    config: &TResNetConfig,
) -> Result<PreprocessConfig> {
    if let Some(cfg) = resolved
        .hub_config
        .as_ref()
        .and_then(|h| h.pretrained_cfg.as_ref())
    {
        return PreprocessConfig::from_pretrained_cfg(cfg).context("config.json pretrained_cfg");
    }
    let tag = backbone
        .and_then(find_pretrained)
        .or_else(|| config.variant_name().and_then(find_pretrained));
    Ok(match tag {
        Some(tag) => PreprocessConfig::from_pretrained_cfg(&tag.pretrained_cfg())?,
        None => PreprocessConfig::imagenet_eval(224),
    })
}

fn load_embedded(options: &BuildOptions, overrides: &PreprocessOverrides) -> Result<ModelBundle> {
    let hub = HubConfig::parse(EMBEDDED_CONFIG)?;
    let config = hub.to_tresnet_config()?;
    let state: StateDict = candle_core::safetensors::load_buffer(EMBEDDED_WEIGHTS, &Device::Cpu)?
        .into_iter()
        .collect();
    let model = TResNet::new(&config, &state, options)?;
    let cfg = hub
        .pretrained_cfg
        .as_ref()
        .context("embedded config.json has no pretrained_cfg")?;
    Ok(ModelBundle {
        model,
        preprocess: overrides.apply(PreprocessConfig::from_pretrained_cfg(cfg)?),
        labels: hub.label_names,
        source: EMBEDDED_NAME.into(),
    })
}

/// What a bundle's `config.json` says besides the weights.
#[derive(Debug, Clone)]
pub struct BundleInfo {
    /// The architecture.
    pub config: tresnet::TResNetConfig,
    /// Single- or multi-label.
    pub task: TaskKind,
    /// Class names.
    pub class_names: Vec<String>,
    /// Evaluation preprocessing.
    pub preprocess: PreprocessConfig,
    /// Calibrated per-class thresholds (multi-label).
    pub thresholds: Option<Vec<f32>>,
}

/// Writes a bundle directory: `model.safetensors` + a timm-style `config.json` (architecture and
/// every `model_args`, classes, label names, preprocessing, task, thresholds), each written to a
/// temporary file and renamed into place.
pub fn write_bundle(dir: &Path, state: &StateDict, info: &BundleInfo) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    state.save_safetensors(&dir.join("model.safetensors"))?;
    let c = &info.config;
    let mut pretrained_cfg = info.preprocess.to_pretrained_cfg();
    pretrained_cfg["num_classes"] = c.num_classes.into();
    let config = serde_json::json!({
        "architecture": c.variant_name().unwrap_or("tresnet_m"),
        "num_classes": c.num_classes,
        "num_features": c.num_features(),
        "model_args": {
            "layers": c.layers,
            "width_factor": c.width_factor,
            "v2": c.v2,
            "in_chans": c.in_chans,
            "global_pool": c.global_pool,
            "stem_leaky_slope": c.stem_leaky_slope,
            "block_leaky_slope": c.block_leaky_slope,
        },
        "pretrained_cfg": pretrained_cfg,
        "label_names": info.class_names,
        "task": info.task,
        "head": "linear",
        "thresholds": info.thresholds,
    });
    let path = dir.join("config.json");
    let tmp = temporary_sibling(&path);
    std::fs::write(&tmp, serde_json::to_vec_pretty(&config)?)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
