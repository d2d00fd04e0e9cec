//! Global pooling of the last feature map.

use candle_core::{D, Tensor};

use super::widen;
use crate::config::GlobalPool;
use crate::error::Result;

/// Pools `(N, C, H, W)` to `(N, C)` (or `(N, 2C)` for `catavgmax`), accumulating half-precision
/// inputs in f32.
pub fn global_pool(x: &Tensor, pool: GlobalPool) -> Result<Tensor> {
    let flat = widen(x)?.flatten_from(2)?;
    let pooled = match pool {
        GlobalPool::Fast | GlobalPool::Avg => flat.mean(D::Minus1)?,
        GlobalPool::Max => flat.max(D::Minus1)?,
        GlobalPool::AvgMax => ((flat.mean(D::Minus1)? + flat.max(D::Minus1)?)? * 0.5)?,
        GlobalPool::CatAvgMax => Tensor::cat(&[flat.mean(D::Minus1)?, flat.max(D::Minus1)?], 1)?,
    };
    Ok(pooled.to_dtype(x.dtype())?)
}
