//! Writing any model `--weights` accepts in the layout timm reads from the hub: `model.safetensors`
//! under timm's tensor names (plain batch norms, never folded; every `num_batches_tracked`
//! counter present) and a `config.json` from which `timm.create_model(architecture,
//! num_classes=…, **model_args)` builds the network, with `pretrained_cfg` (input size,
//! interpolation, crop, mean/std) and label names.
//!
//! ML-Decoder heads are written under the names of timm's `timm.layers.ml_decoder.MLDecoder`
//! (`head.embed_standart.*`, `head.decoder.layers.0.*`, `head.query_embed.weight`,
//! `head.duplicate_pooling[_bias]`); `config.json` then says `"head": "ml_decoder"` and gives the
//! decoder's `num_of_groups` and `decoder_embedding` under `ml_decoder`, the arguments
//! `MLDecoder(num_classes, num_of_groups, decoder_embedding, initial_num_features)` needs.

use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use serde_json::json;
use tresnet::manifest::EntryKind;
use tresnet::weights::{StateDict, check_state_dict, resolve_weights};
use tresnet::{HubConfig, Layout, Manifest};
use tresnet_heads::ml_decoder::{ml_decoder_manifest, to_timm_ml_decoder_names};
use tresnet_heads::{HeadKind, MlDecoderConfig};

use crate::bundle_config::{BundleConfig, BundleSettings, HeadName};
use crate::model_bundle::{ModelSpec, PreprocessOverrides, load_bundle};

/// The precision floating-point tensors are stored in (counters stay int64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum StoredPrecision {
    /// float32, as trained.
    #[default]
    F32,
    /// float16: half the size; timm loads it into a float32 model unchanged in meaning.
    F16,
}

/// A model ready to be written in timm's hub layout.
#[derive(Debug)]
pub struct TimmExport {
    /// Every tensor under timm's name, in the stored precision.
    pub state: StateDict,
    /// The `config.json`: timm's keys plus this project's task, thresholds and head.
    pub config: BundleConfig,
}

/// Reads the model `spec` names (any checkpoint form the apps load: official / ASL / ML-Decoder
/// `.pth`, timm safetensors, bundles, cached hub ids) and prepares its timm hub form. The model
/// is built once to check that the weights are complete and consistent; detectors, which timm
/// has no architecture for, are refused.
pub fn export_for_timm(spec: &ModelSpec, precision: StoredPrecision) -> Result<TimmExport> {
    let weights = spec
        .weights
        .as_deref()
        .context("convert-weights needs --weights (a file, a bundle directory or a hub id)")?;
    let bundle = load_bundle(
        &ModelSpec {
            keep_batch_norms: true,
            ..spec.clone()
        },
        &Device::Cpu,
        DType::F32,
        &PreprocessOverrides::default(),
    )?;
    if bundle.detector().is_some() {
        bail!(
            "{weights}: a detector (FPN + FCOS head); timm has no architecture for it, so there \
             is no timm layout to write"
        );
    }
    let mut state = resolve_weights(weights)?.weights.state_dict;
    let head = state.take_prefix("head.");
    let head_kind = HeadKind::detect(&head);
    let body = bundle.architecture.clone().with_num_classes(0);
    let mut manifest = Manifest::of(&Layout::new(&body)?);
    let mut ml_decoder = None;
    match head_kind {
        Some(HeadKind::MlDecoder) => {
            let head = to_timm_ml_decoder_names(head);
            let config = MlDecoderConfig::from_state_dict(&head)?;
            for entry in ml_decoder_manifest(&config).entries {
                manifest.entries.push(tresnet::manifest::ManifestEntry {
                    key: format!("head.{}", entry.key),
                    ..entry
                });
            }
            for (key, tensor) in head {
                state.insert(format!("head.{key}"), tensor);
            }
            ml_decoder = Some(config);
        }
        Some(HeadKind::Linear) | None => {
            manifest = Manifest::of(&Layout::new(&bundle.architecture)?);
            for (key, tensor) in head {
                state.insert(format!("head.{key}"), tensor);
            }
        }
    }
    // timm's batch norms hold a step counter; older checkpoints lack it (PyTorch then starts it
    // at 0, as here), and a strict load of our file needs no such leniency.
    for entry in &manifest.entries {
        if entry.kind == EntryKind::BatchCounter && !state.contains(&entry.key) {
            state.insert(
                entry.key.clone(),
                Tensor::zeros((), DType::I64, &Device::Cpu)?,
            );
        }
    }
    check_state_dict(&manifest, &state).with_context(|| format!("{weights}: timm's names"))?;
    let state = stored_in(state, precision)?;

    let mut hub = HubConfig::describing(&bundle.architecture);
    // timm's TResNet fixes the leaky-ReLU slopes and takes no argument for them.
    let timm_slopes = tresnet::TResNetConfig::variant("tresnet_m")?;
    for (key, ours, timm) in [
        (
            "stem_leaky_slope",
            bundle.architecture.stem_leaky_slope,
            timm_slopes.stem_leaky_slope,
        ),
        (
            "block_leaky_slope",
            bundle.architecture.block_leaky_slope,
            timm_slopes.block_leaky_slope,
        ),
    ] {
        if ours != timm {
            bail!("{weights}: {key} = {ours}, but timm's TResNet has a fixed slope of {timm}");
        }
        hub.model_args.remove(key);
    }
    let mut pretrained_cfg = bundle.preprocess.to_pretrained_cfg();
    pretrained_cfg["num_classes"] = bundle.num_classes().into();
    hub.pretrained_cfg = Some(pretrained_cfg);
    hub.label_names = bundle.labels.clone();
    if let Some(config) = &ml_decoder {
        hub.other.insert(
            "ml_decoder".into(),
            json!({"num_of_groups": config.num_groups, "decoder_embedding": config.embed_dim}),
        );
    }
    let config = BundleConfig {
        hub,
        settings: BundleSettings {
            task: bundle.task,
            thresholds: bundle.thresholds.clone(),
            head: match head_kind {
                Some(HeadKind::MlDecoder) => Some(HeadName::MlDecoder),
                Some(HeadKind::Linear) => Some(HeadName::Linear),
                None => None,
            },
            ..BundleSettings::default()
        },
    };
    Ok(TimmExport { state, config })
}

/// Floating-point tensors in `precision`; integer ones as they are.
fn stored_in(state: StateDict, precision: StoredPrecision) -> Result<StateDict> {
    let target = match precision {
        StoredPrecision::F32 => DType::F32,
        StoredPrecision::F16 => DType::F16,
    };
    state
        .into_iter()
        .map(|(key, tensor)| {
            let tensor = if tensor.dtype().is_float() {
                tensor.to_dtype(target)?
            } else {
                tensor
            };
            Ok((key, tensor))
        })
        .collect()
}

/// Writes `export` to `dir` (created if needed): `model.safetensors` and `config.json`, each
/// through a temporary file renamed into place.
pub fn write_timm_export(dir: &Path, export: &TimmExport) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    export
        .state
        .save_safetensors(&dir.join("model.safetensors"))?;
    let path = dir.join("config.json");
    let text = export.config.to_json()?;
    tresnet_io::atomic_write(&path, tresnet_io::Durability::Durable, |w| {
        std::io::Write::write_all(w, text.as_bytes())
    })
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
