//! One training run's moving parts behind two calls: [`Trainer::step`] takes a batch through the
//! loss, loss scaling, the non-finite guard, gradient accumulation, clipping, the optimiser
//! update and EMA; [`Trainer::end_epoch`] validates, exports the best model as a bundle and
//! checkpoints. `finetune` and `bench --train` both run these.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use candle_core::{DType, Device, Tensor};
use tresnet::StochasticDepth;
use tresnet::layers::RunningStats;
use tresnet::weights::StateDict;
use tresnet_heads::HeadsError;
use tresnet_heads::metrics::{ScoreTable, calibrate_thresholds};
use tresnet_runtime::TaskKind;
use tresnet_runtime::model_bundle::{BundleInfo, write_bundle};

use crate::batch_mixing::BatchMix;
use crate::batch_seed::{Stream, batch_seed};
use crate::checkpoint::{Checkpoint, EpochRecord, RunDefinition, RunState, save_checkpoint};
use crate::data::{Target, TrainingData, run_preprocess};
use crate::ema::Ema;
use crate::layer_decay::layer_decay_scales;
use crate::loss_scale::{LossScaler, ScaledStep};
use crate::optimizer::{Optimizer, named_gradients};
use crate::task_loss::task_loss;
use crate::trainable_net::TrainableNet;
use crate::validation::validate;

/// Batches in a row whose loss may be non-finite before the run gives up.
const MAX_CONSECUTIVE_BAD_BATCHES: usize = 10;

/// What one [`Trainer::step`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// The batch's gradient was added to the accumulated one; no update yet.
    Accumulated {
        /// The batch's loss.
        loss: f64,
    },
    /// The weights were updated.
    Updated {
        /// The batch's loss.
        loss: f64,
        /// The learning rate of the update.
        lr: f64,
    },
    /// No update: the loss or a gradient was not finite, or an f16 gradient overflowed at the
    /// loss scale. The weights are unchanged; the message says which and where.
    Skipped {
        /// What happened, for the log.
        message: String,
    },
}

impl StepOutcome {
    /// A short note for the progress line.
    pub fn note(&self) -> String {
        match self {
            Self::Accumulated { loss } => format!("loss {loss:.4}"),
            Self::Updated { loss, lr } => format!("loss {loss:.4} lr {lr:.2e}"),
            Self::Skipped { message } => format!("[{message}]"),
        }
    }
}

/// A training run in memory: network, optimiser, loss scaler, EMA and where the run stands.
pub struct Trainer {
    definition: RunDefinition,
    model: TrainableNet,
    optimizer: Optimizer,
    scaler: LossScaler,
    ema: Option<Ema>,
    state: RunState,
    device: Device,
    total_steps: usize,
    accumulate: usize,
    /// Summed gradients of the micro-batches since the last update.
    pending: Option<HashMap<String, Tensor>>,
    /// The batch-norm statistics before the first of those micro-batches: put back when their
    /// update is skipped, so a batch of NaNs cannot poison the running statistics.
    window_statistics: Option<Vec<RunningStats>>,
    micro: usize,
    consecutive_bad: usize,
    frozen: Vec<String>,
    skipped_steps: Vec<(usize, String)>,
    overflow_steps: usize,
}

impl Trainer {
    /// A fresh run of `definition` from `init` (timm names, classifier sized for the classes)
    /// on `device`; `batches_per_epoch` sets the schedule's length.
    pub fn new(
        definition: RunDefinition,
        init: &StateDict,
        batches_per_epoch: usize,
        device: &Device,
    ) -> Result<Self> {
        let state = RunState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            best_metric: None,
            history: Vec::new(),
            epoch_loss: (0.0, 0),
            loss_scale: None,
        };
        Self::build(
            definition,
            init,
            None,
            None,
            state,
            batches_per_epoch,
            device,
        )
    }

    /// Continues the run a checkpoint holds; `definition` must be the one it was written by.
    pub fn resume(
        definition: RunDefinition,
        checkpoint: Checkpoint,
        batches_per_epoch: usize,
        device: &Device,
    ) -> Result<Self> {
        if checkpoint.definition != definition {
            bail!(
                "the checkpoint was written by a run with other settings; resume without changing them"
            );
        }
        Self::build(
            definition,
            &checkpoint.model,
            checkpoint.ema,
            Some(checkpoint.optimizer),
            checkpoint.state,
            batches_per_epoch,
            device,
        )
    }

    fn build(
        definition: RunDefinition,
        weights: &StateDict,
        ema_weights: Option<StateDict>,
        optimizer_state: Option<StateDict>,
        state: RunState,
        batches_per_epoch: usize,
        device: &Device,
    ) -> Result<Self> {
        let cfg = &definition.train;
        cfg.validate()?;
        let model = TrainableNet::new(&definition, weights, device)?;
        let mut optimizer = Optimizer::new(cfg.optimizer, cfg.weight_decay, model.parameters());
        if let Some(decay) = cfg.layer_decay {
            let names = model.parameters().iter().map(|(n, _)| n.as_str());
            optimizer = optimizer.with_lr_scales(&layer_decay_scales(
                names,
                definition.model.layers,
                decay,
            ));
        }
        if let Some(s) = &optimizer_state {
            optimizer.load_state(s)?;
        }
        let mut scaler = LossScaler::new(cfg.precision.needs_loss_scaling());
        if let Some(s) = state.loss_scale {
            scaler.load_state(s);
        }
        let ema = match cfg.ema_decay {
            Some(decay) => Some(Ema::new(
                decay,
                match ema_weights {
                    Some(e) => e,
                    None => model.state_dict()?,
                },
            )),
            None => None,
        };
        let accumulate = cfg.accumulate.max(1);
        let steps_per_epoch = (batches_per_epoch / accumulate).max(1);
        let total_steps = steps_per_epoch * cfg.epochs;
        let frozen = cfg.frozen_prefixes(state.epoch);
        let trainer = Self {
            model,
            optimizer,
            scaler,
            ema,
            state,
            device: device.clone(),
            total_steps,
            accumulate,
            pending: None,
            window_statistics: None,
            micro: 0,
            consecutive_bad: 0,
            frozen,
            skipped_steps: Vec::new(),
            overflow_steps: 0,
            definition,
        };
        trainer.apply_freezing();
        Ok(trainer)
    }

    /// What the run trains, on what, with which settings.
    pub fn definition(&self) -> &RunDefinition {
        &self.definition
    }

    /// Where the run stands (steps, epoch, history).
    pub fn state(&self) -> &RunState {
        &self.state
    }

    /// Updates skipped for a non-finite loss or gradient, with their step and message.
    pub fn skipped_steps(&self) -> &[(usize, String)] {
        &self.skipped_steps
    }

    /// Updates skipped because an f16 gradient overflowed at the loss scale (a few at the start
    /// of an `f16-mixed` run are normal: the scale halves each time).
    pub fn overflow_steps(&self) -> usize {
        self.overflow_steps
    }

    /// The current weights, on the CPU in timm's names.
    pub fn weights(&self) -> Result<StateDict> {
        self.model.state_dict()
    }

    /// Freezes what the settings freeze at the current epoch, thaws the rest.
    fn apply_freezing(&self) {
        self.model.set_frozen(&["body.".to_string()], false);
        self.model.set_frozen(&self.frozen, true);
    }

    /// One batch: images `(B, 3, H, W)` on the trainer's device and one target per image,
    /// mixed first when the settings turn Mixup / CutMix on. Its loss is backpropagated (scaled under f16) and added to the micro-batches since the
    /// last update; every `accumulate` batches their mean gradient is unscaled, checked,
    /// clipped and applied at the schedule's rate, and the EMA follows. A non-finite loss or
    /// gradient skips the update and leaves the weights as they were; ten non-finite losses in
    /// a row end the run with an error.
    pub fn step(&mut self, images: &Tensor, targets: &[Target]) -> Result<StepOutcome> {
        let device = self.device.clone();
        // Forward, backward and update on the CPU worker pool (see `tresnet::on_cpu_workers`).
        tresnet::on_cpu_workers(&device, || self.step_here(images, targets))
    }

    /// [`Self::step`] on the calling thread.
    fn step_here(&mut self, images: &Tensor, targets: &[Target]) -> Result<StepOutcome> {
        let def = &self.definition;
        let cfg = &def.train;
        // The forward pass updates the batch-norm statistics; batches whose update is skipped
        // must not.
        if self.micro == 0 {
            self.window_statistics = Some(self.model.running_statistics());
        }
        let loss = if def.task == TaskKind::Detection {
            self.model.detection_loss(images, targets)?
        } else {
            // Mixup / CutMix and stochastic depth (when on): drawn from the seed, epoch and
            // batch, so a resumed run mixes and drops as an uninterrupted one.
            let (_, _, height, width) = images.dims4()?;
            let mix = BatchMix::draw(
                cfg,
                self.state.epoch,
                self.state.batch_in_epoch,
                height,
                width,
            );
            let depth = (cfg.drop_path > 0.0).then(|| StochasticDepth {
                rate: cfg.drop_path,
                seed: batch_seed(
                    cfg.seed,
                    Stream::DropPath,
                    self.state.epoch,
                    self.state.batch_in_epoch,
                ),
            });
            task_loss(
                def.task,
                cfg,
                &self
                    .model
                    .logits(&mix.mix_images(images)?, depth.as_ref())?,
                targets,
                &mix,
                &self.device,
            )
        };
        let loss = match loss {
            Ok(l) => l,
            Err(HeadsError::NonFinite { value, context }) => {
                let message = format!(
                    "epoch {} batch {}: loss is {value} ({context}); batch skipped, weights unchanged",
                    self.state.epoch + 1,
                    self.state.batch_in_epoch + 1
                );
                self.state.batch_in_epoch += 1;
                return self.skip(message, true);
            }
            Err(e) => return Err(e.into()),
        };
        let value = f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        let grads = named_gradients(
            self.model.parameters(),
            &self.scaler.scale_loss(&loss)?.backward()?,
        );
        self.pending = Some(match self.pending.take() {
            None => grads,
            Some(mut sum) => {
                for (k, g) in grads {
                    let total = match sum.remove(&k) {
                        Some(s) => (s + g)?,
                        None => g,
                    };
                    sum.insert(k, total);
                }
                sum
            }
        });
        self.micro += 1;
        self.state.batch_in_epoch += 1;
        self.state.epoch_loss.0 += value;
        self.state.epoch_loss.1 += 1;
        if self.micro < self.accumulate {
            return Ok(StepOutcome::Accumulated { loss: value });
        }
        self.micro = 0;
        let mut grads = self.pending.take().unwrap_or_default();
        if self.accumulate > 1 {
            for g in grads.values_mut() {
                *g = (&*g / self.accumulate as f64)?;
            }
        }
        if let ScaledStep::Overflow { scale } = self.scaler.unscale(&mut grads)? {
            // No update from these batches; an f16 run retries at half the loss scale.
            self.state.loss_scale = self.scaler.is_enabled().then(|| self.scaler.state());
            if self.scaler.is_enabled() {
                self.overflow_steps += 1;
                let message = format!(
                    "gradient overflow at loss scale {scale}; step skipped, scale now {}",
                    self.scaler.scale()
                );
                return self.skip(message, false);
            }
            let message = format!(
                "epoch {} batch {}: a gradient is NaN or infinite; step skipped, weights unchanged",
                self.state.epoch + 1,
                self.state.batch_in_epoch
            );
            return self.skip(message, true);
        }
        self.state.loss_scale = self.scaler.is_enabled().then(|| self.scaler.state());
        if let Some(max) = cfg.clip_grad {
            crate::gradients::clip_gradients(&mut grads, max)?;
        }
        let lr = cfg.schedule.lr(cfg.lr, self.state.step, self.total_steps);
        self.optimizer.step(&grads, lr, &self.frozen)?;
        self.state.step += 1;
        self.consecutive_bad = 0;
        self.window_statistics = None;
        if let Some(e) = self.ema.as_mut() {
            e.update(&self.model.state_dict()?)?;
        }
        Ok(StepOutcome::Updated { loss: value, lr })
    }

    /// Drops the micro-batches since the last update and puts back the batch-norm statistics
    /// they changed. `non_finite` (a NaN/inf loss or gradient, not an f16 overflow) is
    /// recorded, and ten in a row end the run.
    fn skip(&mut self, message: String, non_finite: bool) -> Result<StepOutcome> {
        if let Some(saved) = self.window_statistics.take() {
            self.model.restore_running_statistics(saved);
        }
        self.pending = None;
        self.micro = 0;
        if non_finite {
            self.skipped_steps.push((self.state.step, message.clone()));
            self.consecutive_bad += 1;
            if self.consecutive_bad >= MAX_CONSECUTIVE_BAD_BATCHES {
                bail!(
                    "{MAX_CONSECUTIVE_BAD_BATCHES} consecutive batches had a non-finite loss or \
                     gradient; stopping (lower the learning rate?)"
                );
            }
        }
        Ok(StepOutcome::Skipped { message })
    }

    /// Whether the settings ask for a checkpoint after the update just made.
    pub fn checkpoint_due(&self) -> bool {
        self.definition
            .train
            .checkpoint_every
            .is_some_and(|k| k > 0 && self.state.step.is_multiple_of(k))
    }

    /// Saves a checkpoint of the run into `run_dir` (atomically; `latest` points at it).
    pub fn checkpoint(&self, run_dir: &Path) -> Result<PathBuf> {
        save_checkpoint(
            run_dir,
            &self.definition,
            &self.state,
            &self.model.state_dict()?,
            self.ema.as_ref().map(Ema::state),
            &self.optimizer.state()?,
        )
    }

    /// Ends the epoch: validates the weights (and their EMA) on `data`'s validation images,
    /// exports the better of them to `run_dir/best` when it beats every earlier epoch (with
    /// calibrated thresholds for multi-label runs), records the epoch (`img_per_sec` is the
    /// caller's measure), moves to the next epoch and checkpoints.
    pub fn end_epoch(
        &mut self,
        data: &TrainingData,
        run_dir: &Path,
        img_per_sec: f64,
    ) -> Result<EpochRecord> {
        let def = &self.definition;
        let cfg = &def.train;
        let current = self.model.state_dict()?;
        let raw = validate(def, &current, data, &self.device, cfg.workers)?;
        let averaged = match &self.ema {
            Some(e) => Some(validate(def, e.state(), data, &self.device, cfg.workers)?),
            None => None,
        };
        let record = EpochRecord {
            epoch: self.state.epoch,
            train_loss: self.state.epoch_loss.0 / self.state.epoch_loss.1.max(1) as f64,
            metric: raw.metric,
            ap50: raw.ap50,
            ema_metric: averaged.as_ref().map(|v| v.metric),
            img_per_sec,
        };
        let (best_of_epoch, best_state) = match (&averaged, &self.ema) {
            (Some(a), Some(e)) if a.metric > raw.metric => (a, e.state().clone()),
            _ => (&raw, current),
        };
        if self
            .state
            .best_metric
            .is_none_or(|b| best_of_epoch.metric > b)
        {
            self.state.best_metric = Some(best_of_epoch.metric);
            let thresholds = (def.task == TaskKind::MultiLabel)
                .then(|| {
                    ScoreTable::new(
                        &best_of_epoch.scores,
                        &best_of_epoch.targets,
                        data.class_names.len(),
                    )
                    .map(|t| {
                        calibrate_thresholds(&t)
                            .iter()
                            .map(|c| c.threshold)
                            .collect::<Vec<f32>>()
                    })
                })
                .transpose()?;
            write_bundle(
                &best_dir(run_dir),
                &best_state,
                &BundleInfo {
                    config: def.model.clone(),
                    task: def.task,
                    class_names: data.class_names.clone(),
                    preprocess: run_preprocess(def.task, cfg),
                    thresholds,
                    detector: cfg.detector.clone(),
                    canvas_fit: cfg.canvas_fit,
                },
            )?;
        }
        self.state.history.push(record.clone());
        self.state.epoch += 1;
        self.state.batch_in_epoch = 0;
        self.state.epoch_loss = (0.0, 0);
        self.pending = None;
        self.window_statistics = None;
        self.micro = 0;
        self.frozen = self.definition.train.frozen_prefixes(self.state.epoch);
        self.apply_freezing();
        self.checkpoint(run_dir)?;
        Ok(record)
    }
}

/// Where a run exports its best model.
pub fn best_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("best")
}
