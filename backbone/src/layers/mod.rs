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
pub use batch_norm::BatchNormStats;
pub use blur_pool::BlurPool;
pub use compute::{conv2d, matmul};
pub use conv_norm_act::ConvNormAct;
pub use global_pool::global_pool;
pub use linear::Linear;
pub use space_to_depth::space_to_depth;
pub use squeeze_excite::SqueezeExcite;

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::weights::StateDict;

/// Where layers take their tensors from while a network is built, and what they become.
pub struct LayerWeights<'a> {
    /// The timm-named tensors (CPU, any float dtype).
    pub state: &'a StateDict,
    /// The dtype the network computes in.
    pub dtype: DType,
    /// The device the network runs on.
    pub device: &'a Device,
    /// Fold each batch norm into its convolution.
    pub fold_batch_norm: bool,
}

impl LayerWeights<'_> {
    /// The tensor `key` in the network's dtype, on its device.
    pub fn tensor(&self, key: &str) -> Result<Tensor> {
        self.place(self.state.require(key)?)
    }

    /// Moves a CPU tensor to the network's dtype and device.
    pub fn place(&self, tensor: &Tensor) -> Result<Tensor> {
        Ok(tensor.to_dtype(self.dtype)?.to_device(self.device)?)
    }
}
