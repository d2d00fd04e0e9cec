//! Saved predictions, scored without running a model. Box results use the COCO results json
//! directly ([`crate::metrics::evaluate_box_results_file`]); multi-label scores use
//! [`ScoreFile`].

mod score_file;

pub use score_file::ScoreFile;
