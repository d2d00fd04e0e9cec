//! The error type of the heads crate.

use std::path::PathBuf;

/// What can go wrong in heads, losses and metrics.
#[derive(Debug, thiserror::Error)]
pub enum HeadsError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Building or loading a layer failed in the backbone crate's machinery.
    #[error(transparent)]
    Backbone(#[from] tresnet::Error),
    /// Inputs of the wrong shape or inconsistent arguments.
    #[error("{0}")]
    Invalid(String),
    /// A loss came out NaN or infinite (the step must not update weights).
    #[error("non-finite loss ({value}): {context}")]
    NonFinite {
        /// The value.
        value: f64,
        /// Where it came from.
        context: String,
    },
    /// A predictions or ground-truth file is unreadable or malformed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, with a line number where there is one.
        reason: String,
    },
}

/// Result alias of the heads crate.
pub type Result<T> = std::result::Result<T, HeadsError>;
