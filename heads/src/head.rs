//! Choosing a head by name or by the tensors a checkpoint holds, and what its outputs mean.

use candle_core::{D, DType, Device, Tensor};
use tresnet::GlobalPool;
use tresnet::weights::StateDict;

use crate::error::{HeadsError, Result};
use crate::linear_head::LinearHead;
use crate::ml_decoder::{MlDecoder, is_ml_decoder};

/// The kinds of classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// Global pooling + linear (`head.fc.*`).
    Linear,
    /// ML-Decoder (`head.query_embed.*`, `head.decoder.*`).
    MlDecoder,
}

impl HeadKind {
    /// Parses `linear` (or `fc`) and `ml_decoder` (or `ml-decoder`, `mldecoder`).
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "linear" | "fc" => Ok(Self::Linear),
            "ml_decoder" | "ml-decoder" | "mldecoder" => Ok(Self::MlDecoder),
            other => Err(HeadsError::Invalid(format!(
                "unknown head `{other}` (linear, ml_decoder)"
            ))),
        }
    }

    /// The kind whose tensors `head_state` (keys relative to `head.`) holds, if any.
    pub fn detect(head_state: &StateDict) -> Option<Self> {
        if is_ml_decoder(head_state) {
            Some(Self::MlDecoder)
        } else if head_state.contains("fc.weight") {
            Some(Self::Linear)
        } else {
            None
        }
    }
}

/// How logits become scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// Single-label: softmax over classes.
    Softmax,
    /// Multi-label: an independent sigmoid per class.
    Sigmoid,
}

impl OutputKind {
    /// Scores in `[0, 1]` from `(B, K)` logits, computed in f32.
    pub fn scores(self, logits: &Tensor) -> Result<Tensor> {
        let x = logits.to_dtype(DType::F32)?;
        Ok(match self {
            OutputKind::Softmax => candle_nn::ops::softmax(&x, D::Minus1)?,
            OutputKind::Sigmoid => candle_nn::ops::sigmoid(&x)?,
        })
    }
}

/// A classification head over the backbone's last feature map; the backbone does not know which.
#[derive(Debug, Clone)]
pub enum ClassificationHead {
    /// Pool + linear.
    Linear(LinearHead),
    /// ML-Decoder (boxed: it is much larger than the linear head).
    MlDecoder(Box<MlDecoder>),
}

impl ClassificationHead {
    /// Builds the head `head_state` holds (keys relative to `head.`); `kind` asserts which one is
    /// expected. `pool` is used by a linear head.
    pub fn load(
        head_state: StateDict,
        kind: Option<HeadKind>,
        pool: GlobalPool,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let found = HeadKind::detect(&head_state);
        let kind = match (kind, found) {
            (Some(want), Some(have)) if want != have => {
                return Err(HeadsError::Invalid(format!(
                    "the checkpoint holds a {have:?} head, not the {want:?} head asked for"
                )));
            }
            (_, Some(have)) => have,
            (want, None) => {
                let what = want.map_or("classification".to_string(), |k| format!("{k:?}"));
                return Err(HeadsError::Invalid(format!(
                    "no {what} head tensors in the checkpoint (keys under head.: {:?})",
                    head_state.keys().take(8).collect::<Vec<_>>()
                )));
            }
        };
        Ok(match kind {
            HeadKind::Linear => Self::Linear(LinearHead::load(&head_state, pool, dtype, device)?),
            HeadKind::MlDecoder => {
                Self::MlDecoder(Box::new(MlDecoder::load(head_state, dtype, device)?))
            }
        })
    }

    /// Which kind this is.
    pub fn kind(&self) -> HeadKind {
        match self {
            Self::Linear(_) => HeadKind::Linear,
            Self::MlDecoder(_) => HeadKind::MlDecoder,
        }
    }

    /// Number of outputs.
    pub fn num_classes(&self) -> usize {
        match self {
            Self::Linear(h) => h.num_classes(),
            Self::MlDecoder(h) => h.config().num_classes,
        }
    }

    /// Logits `(B, num_classes)` from the last feature map `(B, C, H, W)`.
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        match self {
            Self::Linear(h) => h.forward(features),
            Self::MlDecoder(h) => h.forward(features),
        }
    }
}
