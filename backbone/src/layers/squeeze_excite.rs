//! Squeeze-and-excitation channel gating.

use candle_core::{D, Tensor};

use super::{LayerWeights, channel_scale, matmul, widen};
use crate::error::Result;
use crate::layout::SqueezeExciteSpec;

/// `x · σ(W₂ · relu(W₁ · mean_hw(x) + b₁) + b₂)` on `(N, C, H, W)`, shape preserved; `W₁` is
/// `(hidden, C)`, `W₂` is `(C, hidden)` (timm stores them as 1×1 convs).
#[derive(Debug, Clone)]
pub struct SqueezeExcite {
    /// `(hidden, C)`: a view of `fc1.weight` (so training updates show through).
    fc1: Tensor,
    /// `(1, hidden)`.
    fc1_bias: Tensor,
    /// `(C, hidden)`.
    fc2: Tensor,
    /// `(1, C)`.
    fc2_bias: Tensor,
}

impl SqueezeExcite {
    /// Builds the module from `{prefix}.fc1.*` and `{prefix}.fc2.*`.
    pub fn load(spec: &SqueezeExciteSpec, weights: &LayerWeights<'_>) -> Result<Self> {
        let p = &spec.prefix;
        let matrix = |key: String, rows: usize, cols: usize| -> Result<Tensor> {
            Ok(weights.tensor(&key)?.reshape((rows, cols))?)
        };
        let row = |key: String, n: usize| -> Result<Tensor> {
            Ok(weights.tensor(&key)?.reshape((1, n))?)
        };
        Ok(Self {
            fc1: matrix(format!("{p}.fc1.weight"), spec.hidden, spec.channels)?,
            fc1_bias: row(format!("{p}.fc1.bias"), spec.hidden)?,
            fc2: matrix(format!("{p}.fc2.weight"), spec.channels, spec.hidden)?,
            fc2_bias: row(format!("{p}.fc2.bias"), spec.channels)?,
        })
    }

    /// Gates the channels of `(N, C, H, W)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        // The squeeze accumulates in f32 for half-precision activations.
        let squeezed = widen(x)?
            .flatten_from(2)?
            .mean(D::Minus1)?
            .to_dtype(x.dtype())?;
        // Weights in the activations' dtype (a no-op except under mixed precision).
        let dtype = x.dtype();
        let hidden = matmul(&squeezed, &self.fc1.to_dtype(dtype)?.t()?)?
            .broadcast_add(&self.fc1_bias.to_dtype(dtype)?)?
            .relu()?;
        let gate = candle_nn::ops::sigmoid(
            &matmul(&hidden, &self.fc2.to_dtype(dtype)?.t()?)?
                .broadcast_add(&self.fc2_bias.to_dtype(dtype)?)?,
        )?;
        channel_scale(x, &gate.reshape((n, c))?)
    }
}
