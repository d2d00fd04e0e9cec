//! Transfer learning and training from scratch: settings, data, optimisers, schedules, EMA,
//! checkpoints and the loop that ties them together (used by `finetune`).

mod checkpoint;
mod config;
mod data;
mod ema;
mod optimizer;
mod progress;
mod schedule;
mod trainer;

pub use checkpoint::{
    Checkpoint, DataSpec, EpochRecord, RunDefinition, RunState, TaskKind, load_latest_checkpoint,
    save_checkpoint,
};
pub use config::{Augment, MultiLabelLoss, TrainConfig};
pub use data::{Target, TrainingData, eval_preprocess, load_recipe, train_transform};
pub use ema::Ema;
pub use optimizer::{Optimizer, OptimizerKind, exempt_from_decay, named_gradients};
pub use progress::{Progress, format_duration};
pub use schedule::Schedule;
pub use trainer::{TrainOutcome, TrainRun, Validation, train, validate};
