//! The plain classification head: global pooling and a linear layer (timm's `ClassifierHead`).

use candle_core::{DType, Device, Tensor};
use tresnet::GlobalPool;
use tresnet::layers::{LayerWeights, Linear, global_pool};
use tresnet::weights::StateDict;

use crate::error::{HeadsError, Result};

/// `fc(pool(x))`: `(B, C, H, W)` → `(B, num_classes)`.
#[derive(Debug, Clone)]
pub struct LinearHead {
    pool: GlobalPool,
    fc: Linear,
}

impl LinearHead {
    /// Builds the head from `fc.weight` `(classes, C')` and `fc.bias` (keys relative to `head.`).
    pub fn load(
        state: &StateDict,
        pool: GlobalPool,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let extra: Vec<&str> = state
            .keys()
            .filter(|k| *k != "fc.weight" && *k != "fc.bias")
            .collect();
        if !extra.is_empty() || !state.contains("fc.weight") || !state.contains("fc.bias") {
            return Err(HeadsError::Invalid(format!(
                "a linear head holds exactly head.fc.weight and head.fc.bias; found {:?}",
                state.keys().collect::<Vec<_>>()
            )));
        }
        let weights = LayerWeights::inference(state, dtype, device, false);
        Ok(Self {
            pool,
            fc: Linear::load("fc", &weights)?,
        })
    }

    /// A freshly initialised head (transfer learning), `N(0, 0.01)` weights as timm.
    pub fn random(
        in_features: usize,
        num_classes: usize,
        pool: GlobalPool,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            pool,
            fc: Linear::random(
                pool.output_width(in_features),
                num_classes,
                seed,
                dtype,
                device,
            )?,
        })
    }

    /// Number of outputs.
    pub fn num_classes(&self) -> usize {
        self.fc.out_features()
    }

    /// Logits from the last feature map.
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        Ok(self.fc.forward(&global_pool(features, self.pool)?)?)
    }
}
