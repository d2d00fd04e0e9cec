//! Training checkpoints: weights, EMA, optimiser state and where the run stood, in one safetensors
//! file written atomically, with a `latest` pointer so a killed run resumes from its last one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tresnet::TResNetConfig;
use tresnet::weights::StateDict;

use crate::config::TrainConfig;
use crate::loss_scale::LossScaleState;
use tresnet_runtime::TaskKind;
use tresnet_runtime::safetensors_output::write_safetensors;

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

impl EpochRecord {
    /// The better of the raw and EMA weights' metrics: what the best model is chosen by.
    pub fn best_metric(&self) -> f64 {
        self.ema_metric.map_or(self.metric, |e| e.max(self.metric))
    }
}

/// Epochs since the last one that improved on every earlier epoch (0 when the latest did, or
/// when there is no history): what early stopping counts.
pub fn epochs_without_improvement(history: &[EpochRecord]) -> usize {
    let mut best: Option<(usize, f64)> = None;
    for (i, record) in history.iter().enumerate() {
        let metric = record.best_metric();
        if best.is_none_or(|(_, b)| metric > b) {
            best = Some((i, metric));
        }
    }
    best.map_or(0, |(i, _)| history.len() - 1 - i)
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
    /// A flat image folder with a CSV/TSV of `file,labels` (see [`tresnet_data::LabelTable`]).
    LabelFile {
        /// The image folder the file names are relative to.
        images: PathBuf,
        /// Training labels.
        labels: PathBuf,
        /// Validation labels (same folder), if separate.
        val_labels: Option<PathBuf>,
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
    /// Newer checkpoints that could not be read and were passed over, with the reason (a save
    /// cut by a crash or a power cut); empty when `latest` was good.
    pub passed_over: Vec<String>,
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
    remove_killed_saves(&dir)?;
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
    tresnet_io::atomic_write(&latest, tresnet_io::Durability::Durable, |w| {
        std::io::Write::write_all(w, name.as_bytes())
    })
    .with_context(|| format!("updating {}", latest.display()))?;
    // Older checkpoints than the previous one are no longer needed.
    let mut old: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| is_checkpoint_name(&n.to_string_lossy()))
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

/// Removes what a save killed mid-way left in `dir`: the `.step-….partial` / `.latest.….partial`
/// temporary files of [`tresnet_io::atomic_write`] (never a finished checkpoint).
fn remove_killed_saves(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if (name.starts_with(".step-") || name.starts_with(".latest."))
            && name.ends_with(tresnet_io::TEMPORARY_SUFFIX)
            && entry.file_type()?.is_file()
        {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Whether `name` is a checkpoint file name this module writes: `step-<digits>.safetensors`.
fn is_checkpoint_name(name: &str) -> bool {
    name.strip_prefix("step-")
        .and_then(|rest| rest.strip_suffix(".safetensors"))
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads the newest good checkpoint of `run_dir`: the one `latest` names, else (when that one is
/// missing, cut short or corrupt, as after a power cut) the newest `step-*.safetensors` that reads
/// completely. `latest` must hold a bare checkpoint file name; anything else (a path, `..`) is
/// refused rather than followed.
pub fn load_latest_checkpoint(run_dir: &Path) -> Result<Checkpoint> {
    let dir = checkpoints_dir(run_dir);
    let latest = dir.join("latest");
    let mut passed_over = Vec::new();
    let pointed = match tresnet_io::read_text_limited(&latest, 4096) {
        Ok(text) if is_checkpoint_name(text.trim()) => Some(text.trim().to_string()),
        Ok(text) => {
            passed_over.push(format!(
                "{}: holds {:?}, not a checkpoint file name of the form step-<number>.safetensors",
                latest.display(),
                text.chars().take(80).collect::<String>()
            ));
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            passed_over.push(format!("{}: {e}", latest.display()));
            None
        }
    };
    let listing = match std::fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{}: no checkpoint to resume from", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut others: Vec<String> = listing
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_checkpoint_name(n) && Some(n) != pointed.as_ref())
        .collect();
    others.sort_by(|a, b| b.cmp(a));
    let candidates: Vec<String> = pointed.into_iter().chain(others).collect();
    if candidates.is_empty() {
        passed_over.insert(0, "no checkpoint to resume from".into());
        bail!("{}: {}", dir.display(), passed_over.join("; "));
    }
    for name in candidates {
        let path = dir.join(&name);
        match read_checkpoint(&path) {
            Ok(mut checkpoint) => {
                checkpoint.passed_over = passed_over;
                return Ok(checkpoint);
            }
            Err(e) => passed_over.push(format!("{e:#}")),
        }
    }
    bail!(
        "{}: no readable checkpoint ({})",
        dir.display(),
        passed_over.join("; ")
    )
}

/// Reads one checkpoint file completely.
fn read_checkpoint(path: &Path) -> Result<Checkpoint> {
    let bytes = tresnet_io::read_limited(
        path,
        tresnet_io::env_limit("TRESNET_MAX_CHECKPOINT_BYTES", 16 << 30),
    )
    .with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| path.display().to_string())?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let field = |k: &str| {
        meta.get(k)
            .with_context(|| format!("{}: metadata lacks `{k}`", path.display()))
    };
    let definition: RunDefinition = serde_json::from_str(field("definition")?)
        .with_context(|| format!("{}: run definition", path.display()))?;
    let state: RunState = serde_json::from_str(field("state")?)
        .with_context(|| format!("{}: run state", path.display()))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .with_context(|| path.display().to_string())?;
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
        passed_over: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition() -> RunDefinition {
        RunDefinition {
            train: TrainConfig::default(),
            model: TResNetConfig::variant("tresnet_m").unwrap(),
            task: TaskKind::SingleLabel,
            class_names: vec!["a".into(), "b".into()],
            data: DataSpec::Folder {
                train: "train".into(),
                val: None,
            },
        }
    }

    fn state(step: usize) -> RunState {
        RunState {
            step,
            epoch: 0,
            batch_in_epoch: step,
            best_metric: None,
            history: Vec::new(),
            epoch_loss: (0.0, 0),
            loss_scale: None,
        }
    }

    fn weights(value: f32) -> StateDict {
        [(
            "w".to_string(),
            Tensor::full(value, (2, 2), &Device::Cpu).unwrap(),
        )]
        .into_iter()
        .collect()
    }

    #[test]
    fn resume_passes_over_what_a_crash_or_a_crafted_pointer_leaves() {
        let run = tempfile::tempdir().unwrap();
        let def = definition();
        save_checkpoint(
            run.path(),
            &def,
            &state(1),
            &weights(1.0),
            None,
            &weights(0.0),
        )
        .unwrap();
        let second = save_checkpoint(
            run.path(),
            &def,
            &state(2),
            &weights(2.0),
            None,
            &weights(0.0),
        )
        .unwrap();
        let dir = checkpoints_dir(run.path());
        // A power cut: `latest` names a file whose data never reached the disk.
        std::fs::write(&second, b"").unwrap();
        let resumed = load_latest_checkpoint(run.path()).unwrap();
        assert_eq!(resumed.state.step, 1);
        assert_eq!(resumed.passed_over.len(), 1, "{:?}", resumed.passed_over);
        assert!(resumed.passed_over[0].contains("step-00000002"));
        // A pointer that leaves the directory is refused, not followed.
        std::fs::write(dir.join("latest"), "../../../etc/passwd").unwrap();
        let resumed = load_latest_checkpoint(run.path()).unwrap();
        assert_eq!(resumed.state.step, 1);
        assert!(resumed.passed_over[0].contains("not a checkpoint file name"));
        // A save killed mid-way left its temporary file; the next save removes it.
        let partial = dir.join(".step-00000003.safetensors.AbCdEf012345.partial");
        std::fs::write(&partial, vec![0u8; 1024]).unwrap();
        save_checkpoint(
            run.path(),
            &def,
            &state(3),
            &weights(3.0),
            None,
            &weights(0.0),
        )
        .unwrap();
        assert!(!partial.exists());
        assert_eq!(load_latest_checkpoint(run.path()).unwrap().state.step, 3);
        std::fs::remove_dir_all(&dir).unwrap();
        let Err(err) = load_latest_checkpoint(run.path()) else {
            panic!("resumed from nothing");
        };
        assert!(
            err.to_string().contains("no checkpoint to resume from"),
            "{err}"
        );
    }
}
