//! # tresnet-heads
//!
//! What turns backbone features into answers, and answers into the numbers papers report:
//!
//! - heads: [`LinearHead`] (pool + linear) and [`MlDecoder`], chosen by name or by the tensors a
//!   checkpoint holds ([`ClassificationHead`]), assembled with a backbone in [`Classifier`];
//! - losses: the asymmetric loss (multi- and single-label, cross-entropy as a special case) with
//!   exact gradients ([`losses`]);
//! - metrics: top-k, ASL-style and scikit-learn AP, the multi-label P/R/F1 table, threshold
//!   calibration, COCO box AP ([`metrics`]); saved predictions ([`predictions`]);
//! - detection: an FPN + FCOS head with its targets, losses and decoding ([`detection`]).

mod classifier;
pub mod detection;
mod error;
mod head;
mod linear_head;
pub mod losses;
pub mod metrics;
pub mod ml_decoder;
pub mod predictions;

pub use classifier::Classifier;
pub use error::{HeadsError, Result};
pub use head::{ClassificationHead, HeadKind, OutputKind};
pub use linear_head::LinearHead;
pub use ml_decoder::{MlDecoder, MlDecoderConfig};
