//! The settings of a training run: a TOML recipe in `configs/`, overridden by flags.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::optimizer::OptimizerKind;
use crate::precision::Precision;
use crate::schedule::Schedule;

/// How much data augmentation training uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Augment {
    /// Only the geometric crop (random resized crop, or squish) and flips.
    Light,
    /// Light + RandAugment (and Cutout for multi-label), the published recipes.
    #[default]
    Full,
    /// Deterministic resizing only (for debugging).
    None,
}

/// The asymmetric loss settings of a multi-label run (ASL's COCO recipe by default:
/// `gamma_neg 4, gamma_pos 0, clip 0.05`; `0, 0, 0` is plain binary cross-entropy).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiLabelLoss {
    /// Focusing exponent of negatives.
    pub gamma_neg: f64,
    /// Focusing exponent of positives.
    pub gamma_pos: f64,
    /// Probability margin of negatives.
    pub clip: f64,
}

impl Default for MultiLabelLoss {
    fn default() -> Self {
        Self {
            gamma_neg: 4.0,
            gamma_pos: 0.0,
            clip: 0.05,
        }
    }
}

/// Every setting of a run. Field names are the recipe's TOML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Images per optimiser step (before accumulation).
    pub batch_size: usize,
    /// Micro-batches accumulated per optimiser step.
    pub accumulate: usize,
    /// Base (peak) learning rate.
    pub lr: f64,
    /// Update rule.
    pub optimizer: OptimizerKind,
    /// Weight decay (not applied to biases and batch-norm parameters).
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Layer-wise learning-rate decay in (0, 1]: the head at the full rate, each block before
    /// it `layer_decay` times the one after, the stem least (timm's `layer_decay`).
    pub layer_decay: Option<f64>,
    /// Clip the global gradient norm to this value.
    pub clip_grad: Option<f64>,
    /// Keep an exponential moving average of the weights with this decay (e.g. 0.9997).
    pub ema_decay: Option<f64>,
    /// Label smoothing for single-label training.
    pub label_smoothing: f64,
    /// Stochastic depth: the last block's drop probability, rising linearly from 0 over the
    /// blocks (timm's `drop_path_rate`); 0 turns it off. Training passes only.
    pub drop_path: f64,
    /// Mixup's α (the Beta distribution of the blend weight); 0 turns Mixup off.
    pub mixup: f64,
    /// CutMix's α; 0 turns CutMix off.
    pub cutmix: f64,
    /// Probability that a batch is mixed at all (when `mixup` or `cutmix` is on).
    pub mixup_prob: f64,
    /// With both on: probability that a mixed batch uses CutMix rather than Mixup.
    pub mixup_switch_prob: f64,
    /// The multi-label loss.
    pub multilabel_loss: MultiLabelLoss,
    /// Square input size.
    pub input_size: usize,
    /// Augmentation strength.
    pub augment: Augment,
    /// Freeze the stem and the first `freeze_stages − 1` stages (0: nothing frozen).
    pub freeze_stages: usize,
    /// Epoch at which frozen stages are released (none: stay frozen).
    pub unfreeze_epoch: Option<usize>,
    /// Class-balanced sampling: each epoch draws as many images as the training set holds,
    /// with replacement, weighted by the inverse frequency of their class (multi-label: of their
    /// rarest label), so skewed folders train on every class about equally.
    pub balance: bool,
    /// Stop once this many epochs in a row have not improved the best validation metric (the
    /// better of the raw and EMA weights'); none: run every epoch.
    pub patience: Option<usize>,
    /// Write a checkpoint every this many optimiser steps (and at every epoch's end).
    pub checkpoint_every: Option<usize>,
    /// Seed of initialisation, shuffling and augmentation.
    pub seed: u64,
    /// Data-loading threads.
    pub workers: usize,
    /// Fraction of the training set held out for validation when no validation set is given.
    pub val_fraction: f64,
    /// Architecture to train from scratch (a variant name), when no weights are given.
    pub architecture: Option<String>,
    /// Arguments overriding the architecture's (`layers`, `width_factor`, `v2`, …).
    pub model_args: Option<serde_json::Map<String, serde_json::Value>>,
    /// Detection: the FPN + FCOS head (its `num_classes` is set from the data).
    pub detector: Option<tresnet_heads::detection::DetectorConfig>,
    /// Detection: how images go onto the square canvas.
    pub canvas_fit: tresnet_data::CanvasFit,
    /// `f32`, or mixed precision: `f16-mixed` (with dynamic loss scaling) or `bf16-mixed`.
    pub precision: Precision,
    /// Preprocessing as timm's `pretrained_cfg` (`interpolation`, `crop_mode`, `crop_pct`,
    /// `mean`, `std`): what the run trains, validates and exports with, at `input_size`.
    /// `finetune` takes it from the starting weights when the recipe has none; absent, the
    /// task's default (timm's ImageNet evaluation, or the multi-label squish).
    pub pretrained_cfg: Option<serde_json::Value>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 32,
            accumulate: 1,
            lr: 1e-3,
            optimizer: OptimizerKind::adamw(),
            weight_decay: 1e-4,
            schedule: Schedule::one_cycle(),
            layer_decay: None,
            clip_grad: None,
            ema_decay: None,
            label_smoothing: 0.1,
            drop_path: 0.0,
            mixup: 0.0,
            cutmix: 0.0,
            mixup_prob: 1.0,
            mixup_switch_prob: 0.5,
            multilabel_loss: MultiLabelLoss::default(),
            input_size: 224,
            augment: Augment::Full,
            freeze_stages: 0,
            unfreeze_epoch: None,
            checkpoint_every: None,
            balance: false,
            patience: None,
            seed: 0,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            val_fraction: 0.1,
            architecture: None,
            model_args: None,
            detector: None,
            canvas_fit: tresnet_data::CanvasFit::Squish,
            precision: Precision::F32,
            pretrained_cfg: None,
        }
    }
}

impl TrainConfig {
    /// The top-level keys a TOML recipe sets (to tell a recipe's value from a default).
    pub fn keys_in_toml_file(path: &std::path::Path) -> Result<Vec<String>> {
        let text = tresnet_io::read_text_limited(path, 1 << 20)
            .with_context(|| format!("reading recipe {}", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("recipe {}", path.display()))?;
        Ok(table.keys().cloned().collect())
    }

    /// Reads a TOML recipe (missing keys keep their defaults; unknown keys are errors).
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self> {
        let text = tresnet_io::read_text_limited(path, 1 << 20)
            .with_context(|| format!("reading recipe {}", path.display()))?;
        let config: Self =
            toml::from_str(&text).with_context(|| format!("recipe {}", path.display()))?;
        config
            .validate()
            .with_context(|| format!("recipe {}", path.display()))?;
        Ok(config)
    }

    /// Checks every setting before a run starts, naming the recipe key (flags set the key of the
    /// same name) and the value that is out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, rule: &str, value: &dyn std::fmt::Display| {
            anyhow::anyhow!("training setting `{key}` must be {rule}, got {value}")
        };
        let at_least_one = [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("accumulate", self.accumulate),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err(bad(key, "at least 1", &value));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(bad("lr", "a positive finite number", &self.lr));
        }
        let non_negative = [
            ("weight_decay", self.weight_decay),
            ("mixup", self.mixup),
            ("cutmix", self.cutmix),
            ("multilabel_loss.gamma_neg", self.multilabel_loss.gamma_neg),
            ("multilabel_loss.gamma_pos", self.multilabel_loss.gamma_pos),
        ];
        for (key, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return Err(bad(key, "a finite number ≥ 0", &value));
            }
        }
        let fractions = [
            ("label_smoothing", self.label_smoothing),
            ("drop_path", self.drop_path),
            ("multilabel_loss.clip", self.multilabel_loss.clip),
            ("val_fraction", self.val_fraction),
        ];
        for (key, value) in fractions {
            if !(0.0..1.0).contains(&value) {
                return Err(bad(key, "in [0, 1)", &value));
            }
        }
        for (key, value) in [
            ("mixup_prob", self.mixup_prob),
            ("mixup_switch_prob", self.mixup_switch_prob),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(bad(key, "in [0, 1]", &value));
            }
        }
        if (self.mixup > 0.0 || self.cutmix > 0.0) && self.detector.is_some() {
            return Err(anyhow::anyhow!(
                "training settings `mixup` / `cutmix` blend classification targets; detection \
                 runs cannot use them"
            ));
        }
        if self.balance && self.detector.is_some() {
            return Err(anyhow::anyhow!(
                "training setting `balance` weighs images by class; detection runs cannot use it"
            ));
        }
        if self.drop_path > 0.0 && self.detector.is_some() {
            return Err(anyhow::anyhow!(
                "training setting `drop_path` applies to classification runs; detection runs \
                 train without it"
            ));
        }
        if let Some(clip) = self.clip_grad
            && !(clip.is_finite() && clip > 0.0)
        {
            return Err(bad("clip_grad", "a positive finite number", &clip));
        }
        if let Some(decay) = self.ema_decay
            && !(decay > 0.0 && decay < 1.0)
        {
            return Err(bad("ema_decay", "in (0, 1)", &decay));
        }
        if let Some(0) = self.checkpoint_every {
            return Err(bad("checkpoint_every", "at least 1", &0));
        }
        if let Some(decay) = self.layer_decay
            && !(decay > 0.0 && decay <= 1.0)
        {
            return Err(bad("layer_decay", "in (0, 1]", &decay));
        }
        if let Some(0) = self.patience {
            return Err(bad("patience", "at least 1", &0));
        }
        if !(tresnet::MIN_INPUT_SIDE..=4096).contains(&self.input_size) {
            return Err(bad(
                "input_size",
                &format!("in {}..=4096", tresnet::MIN_INPUT_SIDE),
                &self.input_size,
            ));
        }
        if let Some(cfg) = &self.pretrained_cfg {
            tresnet_data::PreprocessConfig::from_pretrained_cfg(cfg)
                .map_err(|e| anyhow::anyhow!("training setting `pretrained_cfg`: {e}"))?;
        }
        if self.freeze_stages > 5 {
            return Err(bad("freeze_stages", "at most 5", &self.freeze_stages));
        }
        Ok(())
    }

    /// The weight prefixes frozen by `freeze_stages`.
    pub fn frozen_prefixes(&self, epoch: usize) -> Vec<String> {
        if self.freeze_stages == 0 || self.unfreeze_epoch.is_some_and(|e| epoch >= e) {
            return Vec::new();
        }
        let mut prefixes = vec!["body.conv1.".to_string()];
        prefixes.extend((1..self.freeze_stages.min(5)).map(|s| format!("body.layer{s}.")));
        prefixes
    }
}
