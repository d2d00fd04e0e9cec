//! The projection shortcut of a stage's first block.

use candle_core::Tensor;

use crate::error::Result;
use crate::layers::{ConvNormAct, LayerWeights, avg_pool_2x2_ceil};
use crate::layout::ShortcutSpec;

/// Optional 2×2 ceil-mode average pool, then 1×1 conv + batch norm without activation:
/// `(N, I, H, W)` → `(N, O, ⌈H/2⌉, ⌈W/2⌉)` (pooled) or `(N, O, H, W)`.
#[derive(Debug, Clone)]
pub struct Shortcut {
    avg_pool: bool,
    conv: ConvNormAct,
}

impl Shortcut {
    /// Builds the shortcut described by `spec`.
    pub fn load(spec: &ShortcutSpec, weights: &LayerWeights<'_>) -> Result<Self> {
        Ok(Self {
            avg_pool: spec.avg_pool,
            conv: ConvNormAct::load(&spec.conv, weights)?,
        })
    }

    /// Projects `x` to the block's output shape.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.avg_pool {
            self.conv.forward(&avg_pool_2x2_ceil(x)?)
        } else {
            self.conv.forward(x)
        }
    }
}
