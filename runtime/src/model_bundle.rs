//! A runnable model with what it needs around it: preprocessing and label names, resolved from the
//! weights' `config.json`, the published tag, the protocol of an official checkpoint, or the
//! embedded default.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use tresnet::pretrained::find_pretrained;
use tresnet::weights::{ResolvedWeights, StateDict, model_config, resolve_weights};
use tresnet::{BuildOptions, HubConfig, TResNet, TResNetConfig};
use tresnet_data::{CanvasFit, PreprocessConfig, ResizeMode};
use tresnet_heads::detection::DetectorConfig;
use tresnet_heads::{ClassificationHead, Classifier, HeadKind};

use crate::bundle_config::{BundleConfig, BundleSettings, HeadName};
use crate::checkpoint_protocol::{CheckpointProtocol, protocol_for};
use crate::detector::Detector;
use crate::task_kind::TaskKind;

/// The embedded default model: a small TResNet (layers [1,1,1,1], width 0.25, 64×64 inputs)
/// trained by this project on its synthetic shapes dataset, multi-label (six shapes), with
/// calibrated thresholds; recipe and commands in `configs/shapes_multilabel.toml`.
const EMBEDDED_WEIGHTS: &[u8] = include_bytes!("../assets/shapes_multilabel/model.safetensors");
const EMBEDDED_CONFIG: &str = include_str!("../assets/shapes_multilabel/config.json");
/// Name shown for the embedded default.
pub const EMBEDDED_NAME: &str = "embedded:shapes_multilabel";

/// Which network and weights to load (what `--backbone`, `--weights`, `--num-classes` and
/// `--no-fold` say on the command line).
#[derive(Debug, Clone, Default)]
pub struct ModelSpec {
    /// Architecture (`tresnet_m` …), optionally with a timm tag (`tresnet_l.miil_in1k_448`);
    /// without `weights`, the tag's weights are looked up in the local Hugging Face cache.
    pub backbone: Option<String>,
    /// A weights file, a bundle directory or a cached hub id.
    pub weights: Option<String>,
    /// Number of classes the head must have (default: whatever the checkpoint holds).
    pub num_classes: Option<usize>,
    /// Keep batch norms separate instead of folding them into the convolutions.
    pub keep_batch_norms: bool,
}

impl ModelSpec {
    /// Whether this names the embedded default (neither backbone nor weights).
    pub fn is_embedded_default(&self) -> bool {
        self.backbone.is_none() && self.weights.is_none()
    }
}

/// The network of a bundle, by what sits on the backbone.
pub enum BundleNetwork {
    /// A backbone and a classification head (linear or ML-Decoder): `(B, 3, H, W)` →
    /// `(B, num_classes)` logits.
    Classifier(Classifier),
    /// A backbone without a head: feature maps and pooled features only.
    Features(TResNet),
    /// A backbone with the FPN + FCOS detection head (boxed: the largest by far).
    Detector(Box<Detector>),
}

/// A model ready to run, with its preprocessing and labels.
pub struct ModelBundle {
    /// The network.
    pub network: BundleNetwork,
    /// The whole architecture, `num_classes` included (the backbone itself is built without a
    /// classifier).
    pub architecture: TResNetConfig,
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
}

impl ModelBundle {
    /// The backbone, whatever head it feeds.
    pub fn backbone(&self) -> &TResNet {
        match &self.network {
            BundleNetwork::Classifier(c) => &c.backbone,
            BundleNetwork::Features(b) => b,
            BundleNetwork::Detector(d) => &d.backbone,
        }
    }

    /// The detector, when the bundle is one.
    pub fn detector(&self) -> Option<&Detector> {
        match &self.network {
            BundleNetwork::Detector(d) => Some(d),
            _ => None,
        }
    }

    /// The classification head's kind, when there is one.
    pub fn head_kind(&self) -> Option<HeadKind> {
        match &self.network {
            BundleNetwork::Classifier(c) => Some(c.head.kind()),
            _ => None,
        }
    }

    /// Number of classes the model scores (0: a feature extractor).
    pub fn num_classes(&self) -> usize {
        match &self.network {
            BundleNetwork::Classifier(c) => c.head.num_classes(),
            BundleNetwork::Features(_) => 0,
            BundleNetwork::Detector(d) => d.head.config().num_classes,
        }
    }

    /// Logits `(B, num_classes)` for images `(B, 3, H, W)`; a feature extractor gives its pooled
    /// features `(B, num_features)`, as timm's `forward` with `num_classes=0`.
    pub fn logits(&self, images: &Tensor) -> Result<Tensor> {
        // The backbone and the head in one pass on the CPU worker pool.
        tresnet::on_cpu_workers(self.backbone().device(), || self.logits_here(images))
    }

    /// [`Self::logits`] on the calling thread.
    fn logits_here(&self, images: &Tensor) -> Result<Tensor> {
        match &self.network {
            BundleNetwork::Classifier(c) => Ok(c.forward(images)?),
            BundleNetwork::Features(b) => Ok(b.forward(images)?),
            BundleNetwork::Detector(_) => anyhow::bail!(
                "{} is a detection model: it gives boxes, not image scores (use coco-eval --task detection)",
                self.source
            ),
        }
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
            serde_json::to_string(&self.architecture).unwrap_or_default()
        )
    }
}

/// Overrides of the model's own preprocessing (`--input-size`, `--resize`).
#[derive(Debug, Clone, Default)]
pub struct PreprocessOverrides {
    /// Square input size.
    pub input_size: Option<usize>,
    /// Squish or centre crop.
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

/// Loads the model `spec` describes on `device` in `dtype`; with neither backbone nor weights,
/// the embedded default.
pub fn load_bundle(
    spec: &ModelSpec,
    device: &Device,
    dtype: DType,
    overrides: &PreprocessOverrides,
) -> Result<ModelBundle> {
    let options = BuildOptions {
        fold_batch_norm: !spec.keep_batch_norms,
        ..BuildOptions::new(device.clone(), dtype)
    };
    load_unchecked(spec, &options, overrides)?.checked()
}

fn load_unchecked(
    spec: &ModelSpec,
    options: &BuildOptions,
    overrides: &PreprocessOverrides,
) -> Result<ModelBundle> {
    if spec.is_embedded_default() {
        return load_embedded(options, overrides);
    }
    let weights_spec = match (&spec.weights, &spec.backbone) {
        (Some(w), _) => w.clone(),
        (None, Some(name)) => {
            let tag = find_pretrained(name).with_context(|| {
                format!(
                    "--backbone {name}: no published timm weights for this name; give --weights"
                )
            })?;
            tag.hub_id()
        }
        (None, None) => unreachable!("the embedded default is handled above"),
    };
    let mut resolved = resolve_weights(&weights_spec)?;
    let source = resolved.weights.path.display().to_string();
    let bundle_config = resolved
        .hub_config
        .clone()
        .map(BundleConfig::from_hub)
        .transpose()
        .with_context(|| format!("{source}: config.json"))?;
    if let Some(bundle_config) = &bundle_config
        && bundle_config.settings.detector.is_some()
    {
        return detection_bundle(
            bundle_config,
            &resolved.weights.state_dict,
            source,
            options,
            overrides,
        );
    }
    // The head is built by the heads crate; the backbone without a classifier.
    let head_state = resolved.weights.state_dict.take_prefix("head.");
    let head_kind = HeadKind::detect(&head_state);
    let body = model_config(spec.backbone.as_deref(), Some(&resolved), Some(0))?;
    let backbone = TResNet::new(&body, &resolved.weights.state_dict, options)
        .with_context(|| format!("loading {source}"))?;
    let network = match head_kind {
        Some(kind) => {
            // The head computes in the backbone's dtype (a CPU network asked for in bf16 is
            // an f32 one multiplying in bf16).
            let head = ClassificationHead::load(
                head_state,
                Some(kind),
                body.global_pool,
                backbone.dtype(),
                &options.device,
            )
            .with_context(|| format!("loading the head of {source}"))?;
            BundleNetwork::Classifier(Classifier { backbone, head })
        }
        None => BundleNetwork::Features(backbone),
    };
    let num_classes = match &network {
        BundleNetwork::Classifier(c) => c.head.num_classes(),
        _ => 0,
    };
    if let Some(n) = spec.num_classes
        && n != num_classes
    {
        anyhow::bail!(
            "--num-classes {n}: the checkpoint's head has {num_classes} classes \
             (retrain the head with finetune to change them)"
        );
    }
    let architecture = body.with_num_classes(num_classes);
    // A checkpoint without config.json: the protocol it was trained for.
    let protocol = match &bundle_config {
        Some(_) => None,
        None => protocol_for(&architecture, num_classes)?,
    };
    let preprocess = overrides.apply(preprocess_for(
        &resolved,
        spec.backbone.as_deref(),
        &architecture,
        protocol.as_ref(),
    )?);
    let labels = bundle_config
        .as_ref()
        .and_then(|c| c.hub.label_names.clone())
        .or_else(|| labels_in_metadata(&resolved, num_classes))
        .or_else(|| protocol.as_ref().map(|p| p.labels.clone()));
    let settings = bundle_config.map(|c| c.settings).unwrap_or_default();
    Ok(ModelBundle {
        network,
        architecture,
        labels,
        task: settings.task.or(protocol.as_ref().map(|p| p.task)),
        thresholds: settings.thresholds,
        preprocess,
        source,
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
    let config = BundleConfig::parse(EMBEDDED_CONFIG)?;
    let architecture = config.hub.to_tresnet_config()?;
    let mut state: StateDict =
        candle_core::safetensors::load_buffer(EMBEDDED_WEIGHTS, &Device::Cpu)?
            .into_iter()
            .collect();
    let head_state = state.take_prefix("head.");
    let body = architecture.clone().with_num_classes(0);
    let backbone = TResNet::new(&body, &state, options)?;
    let head = ClassificationHead::load(
        head_state,
        Some(HeadKind::Linear),
        body.global_pool,
        backbone.dtype(),
        &options.device,
    )?;
    let cfg = config
        .hub
        .pretrained_cfg
        .as_ref()
        .context("embedded config.json has no pretrained_cfg")?;
    Ok(ModelBundle {
        network: BundleNetwork::Classifier(Classifier { backbone, head }),
        architecture,
        preprocess: overrides.apply(PreprocessConfig::from_pretrained_cfg(cfg)?),
        task: config.settings.task,
        thresholds: config.settings.thresholds,
        labels: config.hub.label_names,
        source: EMBEDDED_NAME.into(),
    })
}

/// The embedded detector: a small TResNet with an FPN + FCOS head trained by this project on
/// its synthetic shapes detection data; recipe and commands in `configs/shapes_detection.toml`.
const EMBEDDED_DETECTOR_WEIGHTS: &[u8] =
    include_bytes!("../assets/shapes_detection/model.safetensors");
const EMBEDDED_DETECTOR_CONFIG: &str = include_str!("../assets/shapes_detection/config.json");
/// Name shown for the embedded detector.
pub const EMBEDDED_DETECTOR_NAME: &str = "embedded:shapes_detection";

/// The embedded detector (what `coco-eval --task detection` runs without weights), on `device`
/// in `dtype`.
pub fn load_embedded_detector(
    device: &Device,
    dtype: DType,
    overrides: &PreprocessOverrides,
) -> Result<ModelBundle> {
    let options = BuildOptions::new(device.clone(), dtype);
    let config = BundleConfig::parse(EMBEDDED_DETECTOR_CONFIG)?;
    let state: StateDict =
        candle_core::safetensors::load_buffer(EMBEDDED_DETECTOR_WEIGHTS, &Device::Cpu)?
            .into_iter()
            .collect();
    detection_bundle(
        &config,
        &state,
        EMBEDDED_DETECTOR_NAME.into(),
        &options,
        overrides,
    )
}

/// A detection bundle from its `config.json` and weights (backbone + `fpn.*` + `fcos.*`).
fn detection_bundle(
    config: &BundleConfig,
    state: &StateDict,
    source: String,
    options: &BuildOptions,
    overrides: &PreprocessOverrides,
) -> Result<ModelBundle> {
    let detector_config = config
        .settings
        .detector
        .clone()
        .with_context(|| format!("{source}: config.json has no detector settings"))?;
    let architecture = config.hub.to_tresnet_config()?.with_num_classes(0);
    let cfg = config
        .hub
        .pretrained_cfg
        .as_ref()
        .with_context(|| format!("{source}: config.json has no pretrained_cfg"))?;
    let preprocess = overrides.apply(PreprocessConfig::from_pretrained_cfg(cfg)?);
    let transform = tresnet_data::DetectionTransform {
        preprocess: preprocess.clone(),
        fit: config.canvas_fit(),
        hflip: 0.0,
    };
    let detector = Detector::from_state(&architecture, &detector_config, state, options, transform)
        .with_context(|| format!("loading {source}"))?;
    if let Some(names) = &config.hub.label_names
        && names.len() != detector_config.num_classes
    {
        anyhow::bail!(
            "{source}: {} label names for a detector of {} classes",
            names.len(),
            detector_config.num_classes
        );
    }
    Ok(ModelBundle {
        network: BundleNetwork::Detector(Box::new(detector)),
        architecture,
        preprocess,
        labels: config.hub.label_names.clone(),
        source,
        task: Some(TaskKind::Detection),
        thresholds: None,
    })
}

/// What a bundle's `config.json` says besides the weights.
#[derive(Debug, Clone)]
pub struct BundleInfo {
    /// The architecture.
    pub config: TResNetConfig,
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

impl BundleInfo {
    /// The `config.json` this bundle is written with.
    pub fn bundle_config(&self) -> BundleConfig {
        let c = &self.config;
        let mut hub = HubConfig::describing(c);
        let mut pretrained_cfg = self.preprocess.to_pretrained_cfg();
        pretrained_cfg["num_classes"] = c.num_classes.into();
        hub.pretrained_cfg = Some(pretrained_cfg);
        hub.label_names = Some(self.class_names.clone());
        let detection = self.detector.is_some();
        BundleConfig {
            hub,
            settings: BundleSettings {
                task: Some(self.task),
                thresholds: self.thresholds.clone(),
                head: Some(if detection {
                    HeadName::Fcos
                } else {
                    HeadName::Linear
                }),
                detector: self.detector.clone(),
                canvas_fit: detection.then_some(self.canvas_fit),
            },
        }
    }
}

/// Writes a bundle directory: `model.safetensors` + a timm-style `config.json` (architecture and
/// every `model_args`, classes, label names, preprocessing, task, thresholds), each written to a
/// temporary file and renamed into place.
pub fn write_bundle(dir: &Path, state: &StateDict, info: &BundleInfo) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    state.save_safetensors(&dir.join("model.safetensors"))?;
    let path = dir.join("config.json");
    let text = info.bundle_config().to_json()?;
    tresnet_io::atomic_write(&path, tresnet_io::Durability::Durable, |w| {
        std::io::Write::write_all(w, text.as_bytes())
    })
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
