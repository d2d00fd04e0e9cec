//! The building blocks of a TResNet: each file one layer, each with a `forward` on NCHW tensors.

mod activation;
mod avg_pool_ceil;
mod batch_norm;
mod blur_pool;
mod compute;
mod conv_norm_act;
mod global_pool;
mod linear;
mod space_to_depth;
mod squeeze_excite;

pub use activation::apply_activation;
pub use avg_pool_ceil::avg_pool_2x2_ceil;
pub use batch_norm::{BatchNormStats, BatchNormTrain, RunningStats};
pub use blur_pool::BlurPool;
pub use compute::{
    PreparedConvKernel, add_relu, channel_scale, conv2d, conv2d_bias_act, conv2d_bias_act_add_relu,
    fast_blur, matmul,
};
pub use conv_norm_act::ConvNormAct;
pub use global_pool::global_pool;
pub use linear::Linear;
pub use space_to_depth::space_to_depth;
pub use squeeze_excite::SqueezeExcite;

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};

use crate::cpu_kernels::Products;
use crate::error::Result;
use crate::weights::StateDict;

/// How batch norms are built.
#[derive(Debug, Clone, Copy)]
pub enum NormMode<'a> {
    /// Folded into the preceding convolution (inference).
    Fold,
    /// Kept as `scale · x + shift` from the running statistics (inference).
    Separate,
    /// Training: batch statistics, running-statistic updates with `momentum`; every batch norm
    /// built is recorded in `registry` under its prefix.
    Train {
        /// PyTorch's momentum (0.1): `running = (1 − m)·running + m·batch`.
        momentum: f64,
        /// The batch norms built, by weight prefix (e.g. `body.layer1.0.conv1.bn`).
        registry: &'a Mutex<Vec<(String, Arc<BatchNormTrain>)>>,
    },
}

/// Where layers take their tensors from while a network is built, and what they become.
pub struct LayerWeights<'a> {
    /// The timm-named tensors (any float dtype; for training, the variables themselves).
    pub state: &'a StateDict,
    /// The dtype the network computes in.
    pub dtype: DType,
    /// The device the network runs on.
    pub device: &'a Device,
    /// How batch norms are built.
    pub norm: NormMode<'a>,
    /// How the fused CPU convolutions multiply (bf16 operands on CPUs that have them, when a
    /// CPU network is asked for in bf16).
    pub(crate) products: Products,
}

impl<'a> LayerWeights<'a> {
    /// Weights for inference with batch norms folded or not.
    pub fn inference(state: &'a StateDict, dtype: DType, device: &'a Device, fold: bool) -> Self {
        Self {
            state,
            dtype,
            device,
            norm: if fold {
                NormMode::Fold
            } else {
                NormMode::Separate
            },
            products: Products::F32,
        }
    }

    /// The tensor `key` in the network's dtype, on its device (the same tensor when it already
    /// is: training variables stay variables).
    pub fn tensor(&self, key: &str) -> Result<Tensor> {
        self.place(self.state.require(key)?)
    }

    /// Moves a tensor to the network's dtype and device.
    pub fn place(&self, tensor: &Tensor) -> Result<Tensor> {
        Ok(tensor.to_dtype(self.dtype)?.to_device(self.device)?)
    }
}

/// `x` in f32 when it is f16/bf16 (for sums that must not lose precision), else `x` itself.
pub fn widen(x: &Tensor) -> Result<Tensor> {
    Ok(match x.dtype() {
        DType::F16 | DType::BF16 => x.to_dtype(DType::F32)?,
        _ => x.clone(),
    })
}
