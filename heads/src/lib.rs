//! # tresnet-heads
//!
//! What turns backbone features into answers, and answers into the numbers papers report. So far:
//! top-k selection and top-k accuracy for single-label classification.

pub mod top_k;

pub use top_k::{top_k, top_k_accuracy};
