//! Transfer learning and training from scratch: settings, data, optimisers, schedules, EMA,
//! checkpoints and the loop that ties them together (used by `finetune`).

mod checkpoint;
mod config;
mod data;
mod detection_data;
mod ema;
mod loss_scale;
mod optimizer;
mod precision;
mod progress;
mod schedule;
mod sgd_in_place;
mod trainable_net;
mod trainer;

pub use checkpoint::{
    Checkpoint, DataSpec, EpochRecord, RunDefinition, RunState, TaskKind, load_latest_checkpoint,
    save_checkpoint,
};
pub use config::{Augment, MultiLabelLoss, TrainConfig};
pub use data::{
    DetectionTarget, Target, TrainingData, eval_preprocess, load_recipe, train_transform,
};
pub use detection_data::{
    DetectionTrainingSet, detection_items, detection_transform, parse_canvas_fit,
    write_ground_truth,
};
pub use ema::Ema;
pub use loss_scale::{GROWTH_INTERVAL, INITIAL_LOSS_SCALE, LossScaleState, LossScaler, ScaledStep};
pub use optimizer::{Optimizer, OptimizerKind, exempt_from_decay, named_gradients};
pub use precision::Precision;
pub use progress::{Progress, format_duration};
pub use schedule::Schedule;
pub use trainable_net::{DETECTION_PREFIXES, TrainableNet, split_detection_state};
pub use trainer::{TrainOutcome, TrainRun, Validation, train, validate};
