//! The numeric precision a run trains in.

use candle_core::DType;
use serde::{Deserialize, Serialize};

/// How a run computes: plain f32, or mixed precision (f32 master weights, f16/bf16 activations
/// and products, batch norms and the loss in f32).
/// Spelled `f32`, `f16-mixed` and `bf16-mixed` in recipes, checkpoints and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Precision {
    /// Everything in f32.
    #[default]
    #[serde(rename = "f32")]
    #[cfg_attr(feature = "clap", value(name = "f32"))]
    F32,
    /// f16 compute with dynamic loss scaling (gradients would underflow in f16 without it).
    #[serde(rename = "f16-mixed")]
    #[cfg_attr(feature = "clap", value(name = "f16-mixed"))]
    F16Mixed,
    /// bf16 compute (f32's exponent range: no loss scaling needed).
    #[serde(rename = "bf16-mixed")]
    #[cfg_attr(feature = "clap", value(name = "bf16-mixed"))]
    Bf16Mixed,
}

impl Precision {
    /// The dtype activations are computed in, or `None` for plain f32.
    pub fn compute_dtype(self) -> Option<DType> {
        match self {
            Self::F32 => None,
            Self::F16Mixed => Some(DType::F16),
            Self::Bf16Mixed => Some(DType::BF16),
        }
    }

    /// Whether gradients need loss scaling (f16's narrow exponent range).
    pub fn needs_loss_scaling(self) -> bool {
        self == Self::F16Mixed
    }

    /// The canonical name (`f32`, `f16-mixed`, `bf16-mixed`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16Mixed => "f16-mixed",
            Self::Bf16Mixed => "bf16-mixed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_the_canonical_names() {
        for p in [Precision::F32, Precision::F16Mixed, Precision::Bf16Mixed] {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
            assert_eq!(serde_json::from_str::<Precision>(&json).unwrap(), p);
        }
    }
}
