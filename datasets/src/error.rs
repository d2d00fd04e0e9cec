//! The error type of the data crate: every variant names the file it concerns.

use std::path::PathBuf;

/// What can go wrong reading or preparing data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not a decodable image (corrupt, truncated, empty, or another kind of file).
    #[error("{path}: cannot decode image: {reason}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The image or file is larger than the configured limits (decompression-bomb guard).
    #[error("{path}: refused: {reason}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Which limit, and by how much.
        reason: String,
    },
    /// An annotation file is malformed or inconsistent.
    #[error("{path}: {reason}")]
    Annotations {
        /// The annotation file.
        path: PathBuf,
        /// What is wrong, naming the offending entry.
        reason: String,
    },
    /// A path inside a dataset would leave the dataset's root.
    #[error("{path}: refused: `{entry}` escapes the image root (absolute or `..` path)")]
    EscapesRoot {
        /// The file that named it.
        path: PathBuf,
        /// The offending entry.
        entry: String,
    },
    /// A preprocessing configuration is invalid.
    #[error("invalid preprocessing configuration: {0}")]
    Config(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of the data crate.
pub type Result<T> = std::result::Result<T, DataError>;
