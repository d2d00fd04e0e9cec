//! The numbers papers report: top-k accuracy, average precision (ASL-style and scikit-learn's),
//! the multi-label precision/recall/F1 table, per-class threshold calibration, and COCO box AP.

mod average_precision;
mod coco_box_eval;
mod multilabel_table;
mod threshold_calibration;
mod top_k;

pub use average_precision::{
    ScoreTable, asl_average_precision, asl_mean_average_precision, micro_average_precision,
    tie_aware_average_precision,
};
pub use coco_box_eval::{
    BoxEvaluation, COCO_STAT_NAMES, CategoryResult, Detection, evaluate_box_results_file,
    evaluate_boxes,
};
pub use multilabel_table::{Decision, MultilabelTable, multilabel_table};
pub use threshold_calibration::{CalibratedThreshold, calibrate_thresholds};
pub use top_k::{top_k, top_k_accuracy};
