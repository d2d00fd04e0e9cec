//! ML-Decoder's single decoder layer ("TransformerDecoderLayerOptimal"): no self-attention.

use candle_core::Tensor;
use tresnet::layers::{LayerWeights, Linear};

use super::attention::CrossAttention;
use crate::error::Result;

/// LayerNorm epsilon of every norm in the layer.
const LAYER_NORM_EPS: f32 = 1e-5;

/// `t = LN1(2·q)`; `t = LN2(t + attn(t, mem))`; `t = LN3(t + W₂·relu(W₁·t))` on `(B, K, E)`.
/// (At inference the reference's `tgt + dropout(tgt)` is `2·tgt`.)
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    norms: [(Tensor, Tensor); 3],
    attention: CrossAttention,
    linear1: Linear,
    linear2: Linear,
}

impl DecoderLayer {
    /// Loads `{prefix}.norm1..3`, `.multihead_attn`, `.linear1`, `.linear2`.
    pub fn load(
        prefix: &str,
        embed_dim: usize,
        num_heads: usize,
        weights: &LayerWeights<'_>,
    ) -> Result<Self> {
        let norm = |i: usize| -> Result<(Tensor, Tensor)> {
            Ok((
                weights.tensor(&format!("{prefix}.norm{i}.weight"))?,
                weights.tensor(&format!("{prefix}.norm{i}.bias"))?,
            ))
        };
        Ok(Self {
            norms: [norm(1)?, norm(2)?, norm(3)?],
            attention: CrossAttention::load(
                &format!("{prefix}.multihead_attn"),
                embed_dim,
                num_heads,
                weights,
            )?,
            linear1: Linear::load(&format!("{prefix}.linear1"), weights)?,
            linear2: Linear::load(&format!("{prefix}.linear2"), weights)?,
        })
    }

    fn norm(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        let (w, b) = &self.norms[i];
        Ok(candle_nn::ops::layer_norm(x, w, b, LAYER_NORM_EPS)?)
    }

    /// Runs the layer: queries `(B, K, E)`, memory `(B, T, E)` → `(B, K, E)`.
    pub fn forward(&self, queries: &Tensor, memory: &Tensor) -> Result<Tensor> {
        let t = self.norm(0, &(queries + queries)?)?;
        let t = self.norm(1, &(&t + self.attention.forward(&t, memory)?)?)?;
        let ffn = self
            .linear2
            .forward_any(&self.linear1.forward_any(&t)?.relu()?)?;
        self.norm(2, &(t + ffn)?)
    }
}
