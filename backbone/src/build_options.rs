//! How a network is materialised: dtype, device, and whether batch norms are folded.

use candle_core::{DType, Device};

/// Options for building a [`crate::TResNet`] from weights.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The dtype weights and activations use (F32 on CPU; F16/BF16 for GPUs).
    pub dtype: DType,
    /// Where the network runs.
    pub device: Device,
    /// Fold every batch norm into its convolution (inference). Off keeps them as separate
    /// `scale · x + shift` steps, which computes the same function.
    pub fold_batch_norm: bool,
    /// The dtype activations are computed in when it differs from `dtype` (mixed-precision
    /// training: f32 weights, f16/bf16 activations). Every layer casts its weights to its input's
    /// dtype, so gradients reach the f32 weights through the cast. `None`: `dtype`.
    pub compute_dtype: Option<DType>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            fold_batch_norm: true,
            compute_dtype: None,
        }
    }
}

impl BuildOptions {
    /// Default options on `device` in `dtype`.
    pub fn new(device: Device, dtype: DType) -> Self {
        Self {
            dtype,
            device,
            ..Self::default()
        }
    }

    /// The dtype activations flow in: `compute_dtype`, else `dtype`.
    pub fn activation_dtype(&self) -> DType {
        self.compute_dtype.unwrap_or(self.dtype)
    }
}
