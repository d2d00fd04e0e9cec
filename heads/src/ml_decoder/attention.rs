//! Multi-head cross-attention with torch's `nn.MultiheadAttention` weight layout.

use candle_core::{D, Tensor};
use tresnet::layers::{LayerWeights, Linear, matmul};

use crate::error::Result;

/// `softmax(q·kᵀ/√d)·v` over `num_heads` heads, with the packed `in_proj_weight` `(3E, E)` split
/// into query/key/value projections and an output projection.
#[derive(Debug, Clone)]
pub struct CrossAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    num_heads: usize,
}

impl CrossAttention {
    /// Loads `{prefix}.in_proj_weight`, `.in_proj_bias`, `.out_proj.{weight,bias}`.
    pub fn load(
        prefix: &str,
        embed_dim: usize,
        num_heads: usize,
        weights: &LayerWeights<'_>,
    ) -> Result<Self> {
        let w = weights.tensor(&format!("{prefix}.in_proj_weight"))?;
        let b = weights.tensor(&format!("{prefix}.in_proj_bias"))?;
        let part = |i: usize| -> Result<Linear> {
            Ok(Linear::from_tensors(
                &w.narrow(0, i * embed_dim, embed_dim)?,
                &b.narrow(0, i * embed_dim, embed_dim)?,
            )?)
        };
        Ok(Self {
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            out: Linear::load(&format!("{prefix}.out_proj"), weights)?,
            num_heads,
        })
    }

    /// Queries `(B, K, E)` attend over memory `(B, T, E)`: returns `(B, K, E)`.
    pub fn forward(&self, queries: &Tensor, memory: &Tensor) -> Result<Tensor> {
        let (b, k, e) = queries.dims3()?;
        let t = memory.dims()[1];
        let (h, d) = (self.num_heads, e / self.num_heads);
        let split = |x: Tensor, n: usize| -> Result<Tensor> {
            Ok(x.reshape((b, n, h, d))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split(
            (self.q.forward_any(queries)? * (1.0 / (d as f64).sqrt()))?,
            k,
        )?;
        let key = split(self.k.forward_any(memory)?, t)?;
        let value = split(self.v.forward_any(memory)?, t)?;
        let scores = matmul(&q, &key.transpose(2, 3)?.contiguous()?)?;
        let attention = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let mixed = matmul(&attention, &value)?
            .transpose(1, 2)?
            .reshape((b, k, e))?;
        Ok(self.out.forward_any(&mixed)?)
    }
}
