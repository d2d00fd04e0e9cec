//! Training checkpoints: weights, EMA, optimiser state and where the run stood, in one safetensors
//! file written atomically, with a `latest` pointer so a killed run resumes from its last one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tresnet::TResNetConfig;
use tresnet::weights::{StateDict, temporary_sibling};

use super::config::TrainConfig;
use super::loss_scale::LossScaleState;
use crate::safetensors_output::write_safetensors;

/// What kind of labels a run learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// One class per image (softmax).
    SingleLabel,
    /// Any number of classes per image (sigmoid).
    MultiLabel,
    /// Boxes with classes (FPN + FCOS head).
    Detection,
}

/// One epoch's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number (0-based).
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation metric of the raw weights (top-1 %, mAP % or COCO AP %).
    pub metric: f64,
    /// Detection: AP at IoU 0.5 (%) of the raw weights.
    #[serde(default)]
    pub ap50: Option<f64>,
    /// Validation metric of the EMA weights.
    pub ema_metric: Option<f64>,
    /// Training images per second.
    pub img_per_sec: f64,
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimiser steps taken.
    pub step: usize,
    /// Current epoch.
    pub epoch: usize,
    /// Batches of the current epoch already consumed.
    pub batch_in_epoch: usize,
    /// Best validation metric so far.
    pub best_metric: Option<f64>,
    /// Finished epochs.
    pub history: Vec<EpochRecord>,
    /// Running sum of this epoch's losses and their count (so a resumed epoch reports the same
    /// mean).
    pub epoch_loss: (f64, usize),
    /// The f16 loss scaler's factor (mixed-precision f16 runs).
    #[serde(default)]
    pub loss_scale: Option<LossScaleState>,
}

/// Where a run's images come from (so `--resume DIR` needs nothing else).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSpec {
    /// ImageFolder trees.
    Folder {
        /// Training root.
        train: PathBuf,
        /// Validation root, if separate.
        val: Option<PathBuf>,
    },
    /// COCO instances files with their image folders.
    Coco {
        /// Training json.
        train_json: PathBuf,
        /// Training images.
        train_images: PathBuf,
        /// Validation json and images, if separate.
        val: Option<(PathBuf, PathBuf)>,
    },
}

/// Everything that defines a run, stored with each checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDefinition {
    /// The training settings.
    pub train: TrainConfig,
    /// The architecture.
    pub model: TResNetConfig,
    /// Single- or multi-label.
    pub task: TaskKind,
    /// Class names.
    pub class_names: Vec<String>,
    /// The images.
    pub data: DataSpec,
}

/// A checkpoint read back.
pub struct Checkpoint {
    /// What the run is.
    pub definition: RunDefinition,
    /// Where it stood.
    pub state: RunState,
    /// Model weights and statistics.
    pub model: StateDict,
    /// EMA weights, when the run keeps them.
    pub ema: Option<StateDict>,
    /// Optimiser buffers.
    pub optimizer: StateDict,
}

fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Writes a checkpoint and points `latest` at it; keeps the two most recent files.
pub fn save_checkpoint(
    run_dir: &Path,
    definition: &RunDefinition,
    state: &RunState,
    model: &StateDict,
    ema: Option<&StateDict>,
    optimizer: &StateDict,
) -> Result<PathBuf> {
    let dir = checkpoints_dir(run_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut add = |prefix: &str, sd: &StateDict| {
        tensors.extend(sd.iter().map(|(k, v)| (format!("{prefix}{k}"), v.clone())));
    };
    add("model.", model);
    if let Some(ema) = ema {
        add("ema.", ema);
    }
    add("optimizer.", optimizer);
    let name = format!("step-{:08}.safetensors", state.step);
    let path = dir.join(&name);
    let metadata = HashMap::from([
        ("definition".to_string(), serde_json::to_string(definition)?),
        ("state".to_string(), serde_json::to_string(state)?),
    ]);
    write_safetensors(&path, &tensors, metadata)?;
    let latest = dir.join("latest");
    let tmp = temporary_sibling(&latest);
    std::fs::write(&tmp, &name)
        .and_then(|()| std::fs::rename(&tmp, &latest))
        .with_context(|| format!("updating {}", latest.display()))?;
    // Older checkpoints than the previous one are no longer needed.
    let mut old: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
                && *p != path
        })
        .collect();
    old.sort();
    if old.len() > 1 {
        for p in &old[..old.len() - 1] {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(path)
}

/// Reads the checkpoint `latest` points to in `run_dir`.
pub fn load_latest_checkpoint(run_dir: &Path) -> Result<Checkpoint> {
    let dir = checkpoints_dir(run_dir);
    let latest = dir.join("latest");
    let name = std::fs::read_to_string(&latest)
        .with_context(|| format!("{}: no checkpoint to resume from", latest.display()))?;
    let path = dir.join(name.trim());
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| path.display().to_string())?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let field = |k: &str| {
        meta.get(k)
            .with_context(|| format!("{}: metadata lacks `{k}`", path.display()))
    };
    let definition: RunDefinition = serde_json::from_str(field("definition")?)?;
    let state: RunState = serde_json::from_str(field("state")?)?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    let mut all: StateDict = tensors.into_iter().collect();
    let model = all.take_prefix("model.");
    let ema = all.take_prefix("ema.");
    let optimizer = all.take_prefix("optimizer.");
    if model.is_empty() {
        bail!("{}: holds no model weights", path.display());
    }
    Ok(Checkpoint {
        definition,
        state,
        model,
        ema: (!ema.is_empty()).then_some(ema),
        optimizer,
    })
}
