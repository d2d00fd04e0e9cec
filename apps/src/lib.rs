//! # tresnet-apps
//!
//! The glue the command-line tools share: the common flags, loading a model bundle (weights,
//! architecture, preprocessing, labels) with an embedded default, preparing image inputs, and
//! writing outputs atomically. The binaries in `src/bin/` stay thin.

/// mimalloc reuses freed tensor buffers (see [`allocator`]).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod allocator;
pub mod box_drawing;
pub mod checkpoint_protocol;
pub mod cli;
pub mod detection_inference;
pub mod gallery;
pub mod image_inputs;
pub mod inference;
pub mod largest_batch;
pub mod model_bundle;
pub mod multilabel_report;
pub mod plots;
pub mod safetensors_output;
pub mod tag_records;
pub mod training;
pub mod xmp_sidecar;
