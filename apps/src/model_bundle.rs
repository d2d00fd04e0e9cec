//! A runnable model with what it needs around it: preprocessing and label names, resolved from the
//! flags, the weights' `config.json`, the published tag, or the embedded default.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use tresnet::pretrained::find_pretrained;
use tresnet::weights::{ResolvedWeights, StateDict, model_config, resolve_weights};
use tresnet::{BuildOptions, HubConfig, TResNet, TResNetConfig};
use tresnet_data::{PreprocessConfig, ResizeMode};

use tresnet_data::CanvasFit;
use tresnet_heads::MlDecoder;
use tresnet_heads::detection::DetectorConfig;
use tresnet_heads::ml_decoder::is_ml_decoder;

use crate::checkpoint_protocol::{CheckpointProtocol, protocol_for};
use crate::cli::{ModelFlags, RuntimeFlags};
use crate::detection_inference::Detector;
use crate::training::TaskKind;
use crate::training::parse_canvas_fit;

/// The embedded default model: a small TResNet (layers [1,1,1,1], width 0.25, 64×64 inputs)
/// trained by this project on its synthetic shapes dataset, multi-label (six shapes), with
/// calibrated thresholds; recipe and commands in `configs/shapes_multilabel.toml`.
const EMBEDDED_WEIGHTS: &[u8] = include_bytes!("../assets/shapes_multilabel/model.safetensors");
const EMBEDDED_CONFIG: &str = include_str!("../assets/shapes_multilabel/config.json");
/// Name shown for the embedded default.
pub const EMBEDDED_NAME: &str = "embedded:shapes_multilabel";

/// A model ready to run, with its preprocessing and labels.
pub struct ModelBundle {
    /// The network; it holds the classifier itself unless [`Self::ml_decoder`] replaces it.
    pub model: TResNet,
    /// An ML-Decoder head on the last feature map, when the checkpoint has one instead of a
    /// linear classifier.
    pub ml_decoder: Option<MlDecoder>,
    /// How images must be prepared for it.
    pub preprocess: PreprocessConfig,
    /// Class names, when known.
    pub labels: Option<Vec<String>>,
    /// Where the model came from, for reports.
    pub source: String,
    /// Single- or multi-label, when the bundle says (timm's ImageNet weights: single-label).
    pub task: Option<TaskKind>,
    /// Calibrated per-class thresholds, when the bundle has them.
    pub thresholds: Option<Vec<f32>>,
    /// A detector, when the bundle is one (then [`Self::model`] is its backbone without a
    /// classifier).
    pub detector: Option<Detector>,
}

impl ModelBundle {
    /// Number of classes the model scores (0: a feature extractor).
    pub fn num_classes(&self) -> usize {
        if let Some(d) = &self.detector {
            return d.head.config().num_classes;
        }
        match &self.ml_decoder {
            Some(head) => head.config().num_classes,
            None => self.model.num_classes(),
        }
    }

    /// Logits `(B, num_classes)` for images `(B, 3, H, W)`.
    pub fn logits(&self, images: &Tensor) -> Result<Tensor> {
        if self.detector.is_some() {
            anyhow::bail!(
                "{} is a detection model: it gives boxes, not image scores (use coco-eval --task detection)",
                self.source
            );
        }
        Ok(match &self.ml_decoder {
            Some(head) => head.forward(self.model.forward_features(images)?.last())?,
            None => self.model.forward(images)?,
        })
    }

    /// The bundle if its parts agree: one label name and one threshold (finite, in `[0, 1]`) per
    /// class the model scores. A bundle that disagrees is refused when it is loaded, for every
    /// task, instead of failing at the first photo.
    fn checked(self) -> Result<Self> {
        let classes = self.num_classes();
        if let Some(labels) = &self.labels
            && labels.len() != classes
        {
            anyhow::bail!(
                "{}: {} label names for a model of {classes} classes",
                self.source,
                labels.len()
            );
        }
        if let Some(thresholds) = &self.thresholds {
            if thresholds.len() != classes {
                anyhow::bail!(
                    "{}: {} thresholds for a model of {classes} classes",
                    self.source,
                    thresholds.len()
                );
            }
            if let Some((i, t)) = thresholds
                .iter()
                .enumerate()
                .find(|(_, t)| !(0.0..=1.0).contains(*t))
            {
                anyhow::bail!("{}: threshold {i} is {t}, not in [0, 1]", self.source);
            }
        }
        Ok(self)
    }

    /// Class names, or `class_<i>` when the model carries none.
    pub fn class_names(&self) -> Vec<String> {
        match &self.labels {
            Some(l) => l.clone(),
            None => (0..self.num_classes())
                .map(|i| format!("class_{i}"))
                .collect(),
        }
    }

    /// A short identifier of the model for resumable outputs: its source and architecture.
    pub fn identity(&self) -> String {
        format!(
            "{}#{}",
            self.source,
            serde_json::to_string(self.model.config()).unwrap_or_default()
        )
    }
}

fn task_of(hub: &HubConfig) -> Option<TaskKind> {
    match hub.task.as_deref() {
        Some("multi_label") => Some(TaskKind::MultiLabel),
        Some("single_label") => Some(TaskKind::SingleLabel),
        Some("detection") => Some(TaskKind::Detection),
        _ => None,
    }
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
    load_unchecked(flags, runtime, overrides)?.checked()
}

fn load_unchecked(
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
    let mut resolved = resolve_weights(&weights_spec)?;
    if let Some(hub) = resolved.hub_config.clone()
        && hub.detector.is_some()
    {
        let source = resolved.weights.path.display().to_string();
        return detection_bundle(
            hub,
            &resolved.weights.state_dict,
            source,
            &options,
            overrides,
        );
    }
    // An ML-Decoder head is built on its own; the backbone is then built without a classifier.
    let head_state = resolved.weights.state_dict.take_prefix("head.");
    let ml_decoder = if is_ml_decoder(&head_state) {
        let head =
            MlDecoder::load(head_state, options.dtype, &options.device).with_context(|| {
                format!(
                    "loading the ML-Decoder head of {}",
                    resolved.weights.path.display()
                )
            })?;
        Some(head)
    } else {
        for (k, v) in head_state.iter() {
            resolved
                .weights
                .state_dict
                .insert(format!("head.{k}"), v.clone());
        }
        None
    };
    let config = model_config(
        flags.backbone.as_deref(),
        Some(&resolved),
        if ml_decoder.is_some() {
            Some(0)
        } else {
            flags.num_classes
        },
    )?;
    if let (Some(n), Some(head)) = (flags.num_classes, &ml_decoder)
        && n != head.config().num_classes
    {
        anyhow::bail!(
            "--num-classes {n}: the ML-Decoder head has {} classes",
            head.config().num_classes
        );
    }
    let model = TResNet::new(&config, &resolved.weights.state_dict, &options)
        .with_context(|| format!("loading {}", resolved.weights.path.display()))?;
    let num_classes = ml_decoder
        .as_ref()
        .map_or(model.num_classes(), |h| h.config().num_classes);
    // A checkpoint without config.json: the protocol it was trained for.
    let protocol = match resolved.hub_config {
        Some(_) => None,
        None => protocol_for(&config, num_classes)?,
    };
    let preprocess = overrides.apply(preprocess_for(
        &resolved,
        flags.backbone.as_deref(),
        &config,
        protocol.as_ref(),
    )?);
    let hub = resolved.hub_config.as_ref();
    let labels = hub
        .and_then(|h| h.label_names.clone())
        .or_else(|| labels_in_metadata(&resolved, num_classes))
        .or_else(|| protocol.as_ref().map(|p| p.labels.clone()));
    Ok(ModelBundle {
        labels,
        task: hub.and_then(task_of).or(protocol.as_ref().map(|p| p.task)),
        thresholds: hub.and_then(|h| h.thresholds.clone()),
        model,
        ml_decoder,
        preprocess,
        source: resolved.weights.path.display().to_string(),
        detector: None,
    })
}

/// Class names an official checkpoint stores beside its weights (ASL's `idx_to_class`: a map
/// from index to name), when there is one name per output.
fn labels_in_metadata(resolved: &ResolvedWeights, num_classes: usize) -> Option<Vec<String>> {
    let map = resolved.weights.metadata.get("idx_to_class")?.as_object()?;
    let names: Option<Vec<String>> = (0..num_classes)
        .map(|i| {
            map.get(&i.to_string())
                .and_then(|v| v.as_str())
                .map(String::from)
        })
        .collect();
    names.filter(|n| n.len() == num_classes && num_classes > 0)
}

/// Preprocessing: the weights' `config.json`; else a published tag named outright by
/// `--backbone`; else the protocol of an official checkpoint; else the variant's published tag;
/// else timm's ImageNet evaluation at 224.
fn preprocess_for(
    resolved: &ResolvedWeights,
    backbone: Option<&str>,
    config: &TResNetConfig,
    protocol: Option<&CheckpointProtocol>,
) -> Result<PreprocessConfig> {
    if let Some(cfg) = resolved
        .hub_config
        .as_ref()
        .and_then(|h| h.pretrained_cfg.as_ref())
    {
        return PreprocessConfig::from_pretrained_cfg(cfg).context("config.json pretrained_cfg");
    }
    // A published tag named outright (`tresnet_l.miil_in1k_448`) says how its weights were made.
    if let Some(tag) = backbone
        .filter(|b| b.contains('.'))
        .and_then(find_pretrained)
    {
        return Ok(PreprocessConfig::from_pretrained_cfg(
            &tag.pretrained_cfg(),
        )?);
    }
    if let Some(p) = protocol {
        return Ok(p.preprocess.clone());
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
        task: task_of(&hub),
        thresholds: hub.thresholds.clone(),
        labels: hub.label_names,
        ml_decoder: None,
        source: EMBEDDED_NAME.into(),
        detector: None,
    })
}

/// The embedded detector: a small TResNet with an FPN + FCOS head trained by this project on
/// its synthetic shapes detection data; recipe and commands in `configs/shapes_detection.toml`.
const EMBEDDED_DETECTOR_WEIGHTS: &[u8] =
    include_bytes!("../assets/shapes_detection/model.safetensors");
const EMBEDDED_DETECTOR_CONFIG: &str = include_str!("../assets/shapes_detection/config.json");
/// Name shown for the embedded detector.
pub const EMBEDDED_DETECTOR_NAME: &str = "embedded:shapes_detection";

/// The embedded detector (what `coco-eval --task detection` runs without weights).
pub fn load_embedded_detector(
    runtime: &RuntimeFlags,
    overrides: &PreprocessOverrides,
) -> Result<ModelBundle> {
    let options = BuildOptions::new(runtime.device()?, runtime.dtype()?);
    let hub = HubConfig::parse(EMBEDDED_DETECTOR_CONFIG)?;
    let state: StateDict =
        candle_core::safetensors::load_buffer(EMBEDDED_DETECTOR_WEIGHTS, &Device::Cpu)?
            .into_iter()
            .collect();
    detection_bundle(
        hub,
        &state,
        EMBEDDED_DETECTOR_NAME.into(),
        &options,
        overrides,
    )
}

/// A detection bundle from its `config.json` and weights (backbone + `fpn.*` + `fcos.*`).
fn detection_bundle(
    hub: HubConfig,
    state: &StateDict,
    source: String,
    options: &BuildOptions,
    overrides: &PreprocessOverrides,
) -> Result<ModelBundle> {
    let detector_config: DetectorConfig = serde_json::from_value(
        hub.detector
            .clone()
            .context("config.json has no detector settings")?,
    )
    .with_context(|| format!("{source}: config.json \"detector\""))?;
    let config = hub.to_tresnet_config()?;
    let cfg = hub
        .pretrained_cfg
        .as_ref()
        .with_context(|| format!("{source}: config.json has no pretrained_cfg"))?;
    let preprocess = overrides.apply(PreprocessConfig::from_pretrained_cfg(cfg)?);
    let transform = tresnet_data::DetectionTransform {
        preprocess: preprocess.clone(),
        fit: parse_canvas_fit(hub.canvas_fit.as_deref())?,
        hflip: 0.0,
    };
    let (model, detector) =
        Detector::from_state(&config, &detector_config, state, options, transform)
            .with_context(|| format!("loading {source}"))?;
    if let Some(names) = &hub.label_names
        && names.len() != detector_config.num_classes
    {
        anyhow::bail!(
            "{source}: {} label names for a detector of {} classes",
            names.len(),
            detector_config.num_classes
        );
    }
    Ok(ModelBundle {
        model,
        ml_decoder: None,
        preprocess,
        labels: hub.label_names.clone(),
        source,
        task: Some(TaskKind::Detection),
        thresholds: None,
        detector: Some(detector),
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
    /// Detection: the FPN + FCOS head's settings (its weights are `fpn.*`, `fcos.*`).
    pub detector: Option<DetectorConfig>,
    /// Detection: how images go onto the canvas.
    pub canvas_fit: CanvasFit,
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
        "head": if info.detector.is_some() { "fcos" } else { "linear" },
        "thresholds": info.thresholds,
    });
    let mut config = config;
    if let Some(d) = &info.detector {
        config["detector"] = serde_json::to_value(d)?;
        config["canvas_fit"] = serde_json::to_value(info.canvas_fit)?;
    }
    let path = dir.join("config.json");
    let bytes = serde_json::to_vec_pretty(&config)?;
    tresnet_io::atomic_write(&path, tresnet_io::Durability::Durable, |w| {
        std::io::Write::write_all(w, &bytes)
    })
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
