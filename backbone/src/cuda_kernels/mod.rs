//! This crate's own CUDA kernels (feature `cuda`), compiled to PTX by `build.rs` and loaded once
//! per device by candle's module cache: TResNet's anti-aliasing blur and its gradient as single
//! kernels (f32, f16, bf16). Plugged under candle tensors by the custom operations in
//! [`crate::ops`], whose `cuda_fwd` calls land here; nothing here depends on the rest of the crate.

mod blur;

pub use blur::{blur_backward, blur_forward};

/// The PTX of every kernel in `src/cuda_kernels/*.cu`.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/tresnet_kernels.ptx"));

/// Name of the PTX module in candle's per-device cache.
const MODULE: &str = "tresnet_kernels";
