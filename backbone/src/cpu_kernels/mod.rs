//! Fast CPU kernels for the operations TResNet spends its time in (f32): 1×1 and 3×3 stride-1
//! convolutions (im2col + gemm, bias and activation fused), the anti-aliasing blur (direct), and
//! fused training-graph kernels (batch norm + activation, add + ReLU, channel gating), with
//! gradients, plugged under candle tensors as custom operations. Other devices and dtypes
//! use candle's own operations (see [`crate::layers::conv2d`]).

mod blur;
mod cache_size;
mod conv;
mod conv_bn_act_op;
mod fused;
mod ops;
mod sgemm;
mod simd;
mod space_to_depth;

pub use blur::{blur_backward, blur_forward, blurred_side};
pub use conv::{
    ConvGeometry, Epilogue, conv_backward_input, conv_backward_input_new, conv_backward_weight,
    conv_forward, conv_forward_new,
};
pub use conv_bn_act_op::{ConvBnActOp, ConvBnActSaved, SharedConvBnAct};
pub use fused::{
    add_relu_forward, bn_act_backward, bn_act_forward, channel_scale_backward,
    channel_scale_forward, channel_stats, relu_mask_backward,
};
pub use ops::{AddReluOp, BlurOp, BnActOp, ChannelScaleOp, ConvBiasActOp, ConvOp, SharedStats};
pub use space_to_depth::{SpaceToDepthOp, space_to_depth_forward};
