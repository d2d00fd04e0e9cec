//! # tresnet-apps
//!
//! What only the command-line tools need: the shared flags (turned into the runtime's plain
//! options), the allocator choice, HTML galleries, drawn boxes, plots, multi-label reports, tag
//! records and XMP sidecars. Models run through `tresnet-runtime`; training is `tresnet-training`.
//! The binaries in `src/bin/` parse flags and call these libraries.

pub mod allocator;
pub mod box_drawing;
pub mod candle_pool;
pub mod cli;
pub mod gallery;
pub mod largest_batch;
pub mod multilabel_report;
pub mod plots;
pub mod shard;
pub mod tag_records;
pub mod xmp_document;
pub mod xmp_sidecar;
