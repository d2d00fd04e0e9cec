//! Turning what a user typed after `--weights` (a file, a directory, a hub name) into weights and
//! the architecture they belong to.

use std::path::{Path, PathBuf};

use super::checkpoint::{LoadedWeights, read_weights_file};
use super::hub_cache::{hub_cache_dir, looks_like_hub_id, resolve_snapshot};
use super::infer_config::infer_config;
use crate::config::TResNetConfig;
use crate::error::{Error, Result};
use crate::hub_config::HubConfig;

/// Weight file names looked for in a model directory, in order of preference.
const WEIGHT_FILE_NAMES: &[&str] = &[
    "model.safetensors",
    "pytorch_model.bin",
    "model.pth",
    "pytorch_model.pth",
];

/// Weights together with the `config.json` found beside them, if any.
#[derive(Debug)]
pub struct ResolvedWeights {
    /// What the user asked for, for messages.
    pub spec: String,
    /// The weights, in timm's names.
    pub weights: LoadedWeights,
    /// The model's `config.json` (timm hub layout), when the weights came from a directory or the
    /// hub cache and one was there.
    pub hub_config: Option<HubConfig>,
}

/// Resolves `spec`: an existing file, an existing directory in timm's hub layout
/// (`model.safetensors` + `config.json`), or a hub id (`timm/tresnet_l.miil_in1k_448`) looked up
/// in the local Hugging Face cache (never downloaded).
pub fn resolve_weights(spec: &str) -> Result<ResolvedWeights> {
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(ResolvedWeights {
            spec: spec.to_string(),
            weights: read_weights_file(path)?,
            hub_config: None,
        });
    }
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else if looks_like_hub_id(spec) {
        let cache = hub_cache_dir().ok_or_else(|| {
            Error::WeightsNotFound(format!(
                "cannot locate the Hugging Face cache for `{spec}`: set HF_HOME or HF_HUB_CACHE"
            ))
        })?;
        resolve_snapshot(&cache, spec)?
    } else {
        return Err(Error::WeightsNotFound(format!(
            "--weights `{spec}`: no such file or directory, and not a hub id of the form org/name"
        )));
    };
    let weights_file = find_weights_file(&dir)?;
    let config_path = dir.join("config.json");
    let hub_config = if config_path.is_file() {
        Some(HubConfig::read(&config_path)?)
    } else {
        None
    };
    Ok(ResolvedWeights {
        spec: spec.to_string(),
        weights: read_weights_file(&weights_file)?,
        hub_config,
    })
}

fn find_weights_file(dir: &Path) -> Result<PathBuf> {
    if let Some(found) = WEIGHT_FILE_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
    {
        return Ok(found);
    }
    Err(Error::WeightsNotFound(format!(
        "{}: no weights file in this directory (looked for {})",
        dir.display(),
        WEIGHT_FILE_NAMES.join(", ")
    )))
}

/// Whether two configurations build the same body (classifier aside).
fn same_body(a: &TResNetConfig, b: &TResNetConfig) -> bool {
    a.layers == b.layers
        && a.v2 == b.v2
        && a.base_planes() == b.base_planes()
        && a.in_chans == b.in_chans
}

/// The architecture to build, from the user's `--backbone` (if any), the weights' `config.json`
/// (if any) and the weights themselves:
///
/// 1. `--backbone NAME` names the variant; a `config.json` describing the same variant also
///    contributes its `model_args`; weights holding another body are refused with both named,
///    except a v2 body asked for by its v1 name (the ML-Decoder repository's `tresnet_l`, which
///    is timm's `tresnet_v2_l`), which is built as the weights say;
/// 2. otherwise `config.json` decides;
/// 3. otherwise the architecture is read off the tensor names and shapes.
///
/// The number of classes is `num_classes` when given, else the classifier's size in the weights
/// (0 when they have no `head.fc`), else the variant's default.
pub fn model_config(
    backbone: Option<&str>,
    weights: Option<&ResolvedWeights>,
    num_classes: Option<usize>,
) -> Result<TResNetConfig> {
    let hub = weights.and_then(|w| w.hub_config.as_ref());
    let mut config = match (backbone, hub) {
        (Some(name), Some(hub)) => {
            let asked = TResNetConfig::variant(name)?;
            let described = TResNetConfig::variant(&hub.architecture).ok();
            if described.as_ref() == Some(&asked) {
                hub.to_tresnet_config()?
            } else {
                asked
            }
        }
        (Some(name), None) => {
            let asked = TResNetConfig::variant(name)?;
            match weights.map(|w| (w, infer_config(&w.weights.state_dict))) {
                Some((w, Ok(found))) if !same_body(&asked, &found) => {
                    // The ML-Decoder repository calls its v2 bodies `tresnet_l` / `tresnet_xl`.
                    if found.v2 && !asked.v2 {
                        found
                    } else {
                        return Err(Error::checkpoint(
                            &w.weights.path,
                            format!(
                                "--backbone {name} is layers {:?}, width {}{}, but the weights \
                                 hold layers {:?}, width {}{} ({}); drop --backbone to use the \
                                 weights' own architecture",
                                asked.layers,
                                asked.width_factor,
                                if asked.v2 { ", v2" } else { "" },
                                found.layers,
                                found.width_factor,
                                if found.v2 { ", v2" } else { "" },
                                found.variant_name().unwrap_or("no named variant"),
                            ),
                        ));
                    }
                }
                _ => asked,
            }
        }
        (None, Some(hub)) => hub.to_tresnet_config()?,
        (None, None) => match weights {
            Some(w) => infer_config(&w.weights.state_dict)
                .map_err(|e| Error::checkpoint(&w.weights.path, e.to_string()))?,
            None => {
                return Err(Error::Config(
                    "give --backbone NAME, --weights PATH, or both".into(),
                ));
            }
        },
    };
    if let Some(n) = num_classes {
        config.num_classes = n;
    } else if let Some(w) = weights {
        config.num_classes = w
            .weights
            .state_dict
            .get("head.fc.weight")
            .map(|t| t.dims()[0])
            .unwrap_or(0);
    }
    config.validate()?;
    Ok(config)
}
