//! TResNet's residual block (basic or bottleneck).

use candle_core::Tensor;

use super::Shortcut;
use crate::error::Result;
use crate::layers::{ConvNormAct, LayerWeights, SqueezeExcite, add_relu};
use crate::layout::{BlockKind, BlockSpec};

/// `relu(branch(x) + shortcut(x))`, where the branch is the block's convs with squeeze-and-excite
/// after the second one (basic: on the output; bottleneck: on the middle width, before conv3):
/// `(N, I, H, W)` → `(N, O, H', W')` with `H' = ⌈H/2⌉` in a stage's first block, else `H`.
#[derive(Debug, Clone)]
pub struct ResidualBlock {
    kind: BlockKind,
    shortcut: Option<Shortcut>,
    convs: Vec<ConvNormAct>,
    squeeze_excite: Option<SqueezeExcite>,
}

impl ResidualBlock {
    /// Builds the block described by `spec`.
    pub fn load(spec: &BlockSpec, weights: &LayerWeights<'_>) -> Result<Self> {
        Ok(Self {
            kind: spec.kind,
            shortcut: spec
                .shortcut
                .as_ref()
                .map(|s| Shortcut::load(s, weights))
                .transpose()?,
            convs: spec
                .convs
                .iter()
                .map(|c| ConvNormAct::load(c, weights))
                .collect::<Result<_>>()?,
            squeeze_excite: spec
                .squeeze_excite
                .as_ref()
                .map(|s| SqueezeExcite::load(s, weights))
                .transpose()?,
        })
    }

    /// Basic or bottleneck.
    pub fn kind(&self) -> BlockKind {
        self.kind
    }

    /// Runs the block.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, None)
    }

    /// Runs the block with its branch scaled per sample by `branch_factor` `(N, 1, 1, 1)`
    /// before the shortcut is added (stochastic depth in training; `None`: as `forward`).
    pub fn forward_with(&self, x: &Tensor, branch_factor: Option<&Tensor>) -> Result<Tensor> {
        let shortcut = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        let mut out = x.clone();
        let last = self.convs.len().saturating_sub(1);
        for (index, conv) in self.convs.iter().enumerate() {
            let se_after = index == 1 && self.squeeze_excite.is_some();
            if index == last && !se_after && branch_factor.is_none() {
                // The add and ReLU inside the last convolution's epilogue.
                return conv.forward_add_relu(&out, &shortcut);
            }
            out = conv.forward(&out)?;
            if se_after && let Some(se) = &self.squeeze_excite {
                out = se.forward(&out)?;
            }
        }
        if let Some(factor) = branch_factor {
            out = out.broadcast_mul(factor)?;
        }
        add_relu(&out, &shortcut)
    }
}
