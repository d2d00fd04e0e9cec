//! The error type of the backbone crate.

use std::path::PathBuf;

/// Everything that can go wrong while building, loading or running a TResNet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A configuration value is out of range or inconsistent.
    #[error("invalid TResNet configuration: {0}")]
    Config(String),

    /// A model name that is not one of the known variants.
    #[error("unknown TResNet variant `{name}` (known: {known})")]
    UnknownVariant {
        /// The name that was asked for.
        name: String,
        /// The names that exist, comma separated.
        known: String,
    },

    /// The input tensor does not have a shape the network accepts.
    #[error("input of shape {shape:?} rejected: {reason}")]
    InputShape {
        /// The offending shape.
        shape: Vec<usize>,
        /// Why it is rejected.
        reason: String,
    },

    /// A checkpoint file is malformed or of an unsupported kind.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A state dict does not match the architecture (strict loading).
    #[error(transparent)]
    StateDictMismatch(#[from] crate::weights::StateDictMismatch),

    /// A weight name given on the command line could not be resolved.
    #[error("{0}")]
    WeightsNotFound(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A checkpoint problem for `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias of the backbone crate.
pub type Result<T> = std::result::Result<T, Error>;
