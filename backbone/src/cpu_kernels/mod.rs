//! Fast CPU kernels for the operations TResNet spends its time in (f32), on plain slices: 1×1 and
//! 3×3 stride-1 convolutions (im2col + gemm, or Winograd F(4×4, 3×3) for 3×3 on AVX-512; with
//! bf16 products by AVX-512 BF16, or on AMX tiles as implicit products; bias and activation
//! fused), the anti-aliasing blur
//! (direct), fused training-graph kernels (batch norm + activation, add + ReLU, channel gating)
//! with their gradients, space-to-depth and SGD's update. [`crate::ops`] plugs them under candle
//! tensors; other devices and dtypes use candle's own operations (see [`crate::layers::conv2d`]).

mod aligned;
mod amx;
mod bf16_gemm;
mod blur;
mod cache_size;
mod conv;
mod conv_amx;
mod conv_bf16;
mod fused;
mod peak_rate;
mod sgd;
mod sgemm;
mod simd;
pub(crate) mod space_to_depth;
mod thread_scratch;
mod winograd;

pub use amx::amx_available;
pub use bf16_gemm::{PackedWeights, native_bf16};
pub use blur::{blur_backward, blur_forward, blurred_side};
pub use conv::{
    ConvGeometry, Epilogue, PreparedKernel, Residual, conv_backward_input, conv_backward_input_new,
    conv_backward_weight, conv_forward_new, conv_forward_residual_new,
};
pub use conv_amx::ConvTiles;
pub use fused::{
    add_relu_forward, bn_act_backward, bn_act_forward, channel_scale_backward,
    channel_scale_forward, channel_stats, relu_mask_backward,
};
pub use peak_rate::{PeakRates, peak_rates};
pub use sgd::{SgdSettings, momentum_update, param_update};
pub use sgemm::Products;
pub use simd::{zeroed, zeroed_with_spare};
pub use space_to_depth::space_to_depth_forward;
pub use winograd::{WinogradKernel, winograd_available};
