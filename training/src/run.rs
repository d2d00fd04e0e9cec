//! A whole run: the loader over the training set feeding [`Trainer::step`] epoch after epoch,
//! with checkpoints as the settings ask and [`Trainer::end_epoch`] after each epoch.

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use tresnet::weights::StateDict;
use tresnet_data::{BadItemPolicy, LoaderOptions};
use tresnet_runtime::Progress;

use crate::checkpoint::{
    Checkpoint, EpochRecord, RunDefinition, RunState, epochs_without_improvement,
};
use crate::class_balance::class_balanced_weights;
use crate::data::{Target, TrainingData, run_preprocess};
use crate::trainer::{StepOutcome, Trainer, best_dir};
use crate::training_set::TrainingSet;
use crate::validation::collate;

/// A run to start or continue.
pub struct TrainRun<'a> {
    /// Settings, architecture, task and classes.
    pub definition: RunDefinition,
    /// The images.
    pub data: &'a TrainingData,
    /// Where checkpoints and the best bundle go.
    pub run_dir: PathBuf,
    /// Where to train.
    pub device: Device,
    /// Starting weights (timm names, classifier already sized for the classes); unused when
    /// resuming.
    pub init: StateDict,
    /// No progress lines.
    pub quiet: bool,
}

/// How a run ended.
#[derive(Debug)]
pub struct TrainOutcome {
    /// Finished epochs.
    pub history: Vec<EpochRecord>,
    /// Best validation metric (top-1 % or mAP %).
    pub best_metric: Option<f64>,
    /// The exported best model.
    pub bundle_dir: PathBuf,
    /// Final weights.
    pub final_state: StateDict,
    /// Steps whose loss was NaN/inf and that were skipped, with the message.
    pub skipped_steps: Vec<(usize, String)>,
    /// Whether the caller stopped the run before its last epoch.
    pub stopped_early: bool,
    /// The epochs run when `patience` ended the run before its last epoch.
    pub patience_stop: Option<usize>,
    /// Optimiser steps skipped because an f16 gradient overflowed at the loss scale (the scale
    /// was halved each time; a few at the start of an `f16-mixed` run are normal).
    pub overflow_steps: usize,
}

/// Runs (or continues, with `resume`) a training run to its last epoch.
pub fn train(run: TrainRun<'_>, resume: Option<Checkpoint>) -> Result<TrainOutcome> {
    train_with(run, resume, |_| ControlFlow::Continue(()))
}

/// [`train`], asking `after_update` after every optimiser update whether to go on; on
/// [`ControlFlow::Break`] the run checkpoints and returns (resuming it later continues exactly
/// where it stopped).
pub fn train_with(
    run: TrainRun<'_>,
    resume: Option<Checkpoint>,
    mut after_update: impl FnMut(&RunState) -> ControlFlow<()>,
) -> Result<TrainOutcome> {
    let def = &run.definition;
    let cfg = &def.train;
    cfg.validate()?;
    run.data.validate(cfg.batch_size)?;
    let batches_per_epoch = run.data.train.len() / cfg.batch_size;
    let mut trainer = match resume {
        Some(ckpt) => Trainer::resume(def.clone(), ckpt, batches_per_epoch, &run.device)?,
        None => Trainer::new(def.clone(), &run.init, batches_per_epoch, &run.device)?,
    };
    let set = TrainingSet::new(def.task, &run.data.train, cfg);
    // Class-balanced draws (`balance`): the same weights every epoch, new draws each.
    let sample_weights = if cfg.balance {
        let targets: Vec<&Target> = run.data.train.iter().map(|(_, t)| t).collect();
        let weights = class_balanced_weights(&targets, run.data.class_names.len())
            .context("training setting `balance` applies to classification runs")?;
        Some(std::sync::Arc::<[f64]>::from(weights))
    } else {
        None
    };
    let input = run_preprocess(def.task, cfg);
    let outcome = |trainer: &Trainer, stopped_early: bool| -> Result<TrainOutcome> {
        Ok(TrainOutcome {
            history: trainer.state().history.clone(),
            best_metric: trainer.state().best_metric,
            bundle_dir: best_dir(&run.run_dir),
            final_state: trainer.weights()?,
            skipped_steps: trainer.skipped_steps().to_vec(),
            stopped_early,
            patience_stop: None,
            overflow_steps: trainer.overflow_steps(),
        })
    };
    // Early stopping counts from the history, so a resumed run stops where it would have.
    let out_of_patience = |trainer: &Trainer| {
        cfg.patience
            .is_some_and(|p| epochs_without_improvement(&trainer.state().history) >= p)
    };
    while trainer.state().epoch < cfg.epochs {
        if out_of_patience(&trainer) {
            return Ok(TrainOutcome {
                patience_stop: Some(trainer.state().epoch),
                ..outcome(&trainer, false)?
            });
        }
        let epoch = trainer.state().epoch;
        let options = LoaderOptions {
            batch_size: cfg.batch_size,
            workers: cfg.workers,
            shuffle_seed: Some(cfg.seed),
            seed: cfg.seed,
            epoch: epoch as u64,
            drop_last: true,
            bad_items: BadItemPolicy::Fail,
            start_batch: trainer.state().batch_in_epoch,
            sample_weights: sample_weights.clone(),
            ..LoaderOptions::default()
        };
        let loader = set.loader(&options)?;
        let mut progress = Progress::new(
            format!("epoch {}/{}", epoch + 1, cfg.epochs),
            loader.num_batches(),
            run.quiet,
        );
        for batch in loader {
            let batch = batch.context("training data")?;
            let n = batch.items.len();
            let (images, targets) = collate(batch.items, &input, &run.device)?;
            let step = trainer.step(&images, &targets)?;
            progress.step(n, &step.note());
            if let StepOutcome::Updated { .. } = step {
                let stop = after_update(trainer.state()).is_break();
                if stop || trainer.checkpoint_due() {
                    trainer.checkpoint(&run.run_dir)?;
                }
                if stop {
                    return outcome(&trainer, true);
                }
            }
        }
        trainer.end_epoch(run.data, &run.run_dir, progress.rate())?;
    }
    outcome(&trainer, false)
}
