//! # tresnet-training
//!
//! Transfer learning and training from scratch: settings, data, optimisers, schedules, EMA,
//! checkpoints and the loop that ties them together (used by `finetune` and `bench --train`).

mod batch_mixing;
mod batch_seed;
mod checkpoint;
mod class_balance;
mod config;
mod data;
mod detection_data;
mod ema;
mod gradients;
mod layer_decay;
mod loss_scale;
mod optimizer;
mod precision;
mod run;
mod schedule;
mod task_loss;
mod trainable_net;
mod trainer;
mod training_set;
mod validation;

pub use batch_mixing::{BatchMix, smoothed_one_hot};
pub use checkpoint::{
    Checkpoint, DataSpec, EpochRecord, RunDefinition, RunState, epochs_without_improvement,
    load_latest_checkpoint, save_checkpoint,
};
pub use class_balance::class_balanced_weights;
pub use config::{Augment, MultiLabelLoss, TrainConfig};
pub use data::{
    DetectionTarget, Target, TrainingData, eval_preprocess, load_recipe, run_preprocess,
    train_transform,
};
pub use detection_data::{
    DetectionTrainingSet, detection_items, detection_transform, write_ground_truth,
};
pub use ema::Ema;
pub use layer_decay::layer_decay_scales;
pub use loss_scale::{GROWTH_INTERVAL, INITIAL_LOSS_SCALE, LossScaleState, LossScaler, ScaledStep};
pub use optimizer::{Optimizer, OptimizerKind, exempt_from_decay, named_gradients};
pub use precision::Precision;
pub use run::{TrainOutcome, TrainRun, train, train_with};
pub use schedule::Schedule;
pub use trainable_net::TrainableNet;
pub use trainer::{StepOutcome, Trainer, best_dir};
pub use training_set::TrainingSet;
pub use validation::{Validation, validate};
