//! The candle custom operations over this crate's kernels, with their backward passes: each runs
//! the CPU kernel in [`crate::cpu_kernels`] on contiguous f32 inputs and, where one exists, the
//! CUDA kernel in `cuda_kernels` on the GPU. Layers call these; the SGD step is public for the
//! training crate's optimiser.

mod conv_bn_act;
mod sgd_step;
mod space_to_depth;

pub(crate) use conv_bn_act::ConvBnActOp;
pub use sgd_step::{SgdSettings, sgd_applies, sgd_step_in_place};
pub(crate) use space_to_depth::SpaceToDepthOp;

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use crate::cpu_kernels::{
    ConvGeometry, Epilogue, Residual, conv_backward_input_new, conv_backward_weight,
    conv_forward_new, conv_forward_residual_new,
};
use crate::cpu_kernels::{PreparedKernel, Products, zeroed};
use crate::cpu_kernels::{
    add_relu_forward, bn_act_backward, bn_act_forward, channel_scale_backward,
    channel_scale_forward, channel_stats, relu_mask_backward,
};
use crate::cpu_kernels::{blur_backward, blur_forward, blurred_side};

pub(super) fn f32_slice<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: the fast CPU kernel needs a contiguous tensor"),
    }
}

pub(super) fn geometry(x: &Layout, w: &Layout) -> candle_core::Result<ConvGeometry> {
    let (batch, in_channels, height, width) = x.shape().dims4()?;
    let (out_channels, wi, k, k2) = w.shape().dims4()?;
    if wi != in_channels || k != k2 || !(k == 1 || k == 3) {
        candle_core::bail!(
            "conv kernel {:?} does not fit input {:?}",
            w.dims(),
            x.dims()
        );
    }
    Ok(ConvGeometry {
        batch,
        in_channels,
        out_channels,
        height,
        width,
        kernel: k,
    })
}

/// Stride-1 "same" convolution (1×1 or 3×3), differentiable in both arguments.
pub(crate) struct ConvOp;

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "tresnet-conv"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = geometry(l1, l2)?;
        let out = conv_forward_new(
            f32_slice(s1, l1, "conv input")?,
            f32_slice(s2, l2, "conv weight")?,
            None,
            Epilogue::Identity,
            &g,
            Some(&PreparedKernel::per_call_winograd()),
        );
        Ok((
            CpuStorage::F32(out),
            Shape::from((g.batch, g.out_channels, g.height, g.width)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let g_x = grad.apply_op2_no_bwd(w, &ConvGradInputOp)?;
        let g_w = x.apply_op2_no_bwd(
            &grad,
            &ConvGradWeightOp {
                weight_shape: w.shape().clone(),
            },
        )?;
        Ok((Some(g_x), Some(g_w)))
    }
}

/// The input gradient of [`ConvOp`]: `(grad_out, weight)` → `grad_in`.
struct ConvGradInputOp;

impl CustomOp2 for ConvGradInputOp {
    fn name(&self) -> &'static str {
        "tresnet-conv-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, out_channels, height, width) = l1.shape().dims4()?;
        let (o, in_channels, k, _) = l2.shape().dims4()?;
        if o != out_channels {
            candle_core::bail!(
                "conv gradient: {:?} does not fit weight {:?}",
                l1.dims(),
                l2.dims()
            );
        }
        let g = ConvGeometry {
            batch,
            in_channels,
            out_channels,
            height,
            width,
            kernel: k,
        };
        let out = conv_backward_input_new(
            f32_slice(s1, l1, "conv gradient")?,
            f32_slice(s2, l2, "conv weight")?,
            &g,
        );
        Ok((
            CpuStorage::F32(out),
            Shape::from((batch, in_channels, height, width)),
        ))
    }
}

/// The weight gradient of [`ConvOp`]: `(input, grad_out)` → `grad_weight`.
struct ConvGradWeightOp {
    weight_shape: Shape,
}

impl CustomOp2 for ConvGradWeightOp {
    fn name(&self) -> &'static str {
        "tresnet-conv-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, in_channels, height, width) = l1.shape().dims4()?;
        let (out_channels, _, k, _) = self.weight_shape.dims4()?;
        let g = ConvGeometry {
            batch,
            in_channels,
            out_channels,
            height,
            width,
            kernel: k,
        };
        let mut out = zeroed(self.weight_shape.elem_count());
        conv_backward_weight(
            f32_slice(s1, l1, "conv input")?,
            f32_slice(s2, l2, "conv gradient")?,
            &g,
            Products::F32,
            &mut out,
        );
        Ok((CpuStorage::F32(out), self.weight_shape.clone()))
    }
}

/// An error unless `bias` holds one value per output channel of `g`.
fn check_bias(bias: &[f32], g: &ConvGeometry) -> candle_core::Result<()> {
    if bias.len() != g.out_channels {
        candle_core::bail!(
            "conv bias has {} values for {} channels",
            bias.len(),
            g.out_channels
        );
    }
    Ok(())
}

/// Inference convolution with the bias add and activation fused: `(x, weight, bias)`.
pub(crate) struct ConvBiasActOp {
    /// The fused activation.
    pub epilogue: Epilogue,
    /// The weights prepared for bf16 or Winograd products (at build time), or `None` for the
    /// im2col f32 products.
    pub prepared: Option<Arc<PreparedKernel>>,
}

impl CustomOp3 for ConvBiasActOp {
    fn name(&self) -> &'static str {
        "tresnet-conv-bias-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = geometry(l1, l2)?;
        let bias = f32_slice(s3, l3, "conv bias")?;
        check_bias(bias, &g)?;
        let out = conv_forward_new(
            f32_slice(s1, l1, "conv input")?,
            f32_slice(s2, l2, "conv weight")?,
            Some(bias),
            self.epilogue,
            &g,
            self.prepared.as_deref(),
        );
        Ok((
            CpuStorage::F32(out),
            Shape::from((g.batch, g.out_channels, g.height, g.width)),
        ))
    }
}

/// `then(act(conv(x, w) + bias) + residual)` on `(x (N, I, H, W), w (O, I, k, k), residual (N,
/// O, H, W))` → `(N, O, H, W)`, stride 1, "same" padding: a residual block's last convolution
/// with its shortcut's add and ReLU (inference only; f32 on the CPU).
pub(crate) struct ConvBiasActAddOp {
    /// The convolution's bias, one value per output channel.
    pub bias: Vec<f32>,
    /// The convolution's activation.
    pub epilogue: Epilogue,
    /// The activation of the sum.
    pub then: Epilogue,
    /// The weights prepared for faster products, as in [`ConvBiasActOp`].
    pub prepared: Option<Arc<PreparedKernel>>,
}

impl CustomOp3 for ConvBiasActAddOp {
    fn name(&self) -> &'static str {
        "tresnet-conv-bias-act-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = geometry(l1, l2)?;
        check_bias(&self.bias, &g)?;
        let output = Shape::from((g.batch, g.out_channels, g.height, g.width));
        if l3.shape() != &output {
            candle_core::bail!(
                "conv residual {:?} for an output of {:?}",
                l3.shape(),
                output
            );
        }
        let residual = Residual {
            values: f32_slice(s3, l3, "conv residual")?,
            then: self.then,
        };
        let out = conv_forward_residual_new(
            f32_slice(s1, l1, "conv input")?,
            f32_slice(s2, l2, "conv weight")?,
            Some(&self.bias),
            self.epilogue,
            &g,
            self.prepared.as_deref(),
            residual,
        );
        Ok((CpuStorage::F32(out), output))
    }
}

/// The anti-aliasing blur, differentiable: `(N, C, H, W)` → `(N, C, ⌈H/2⌉, ⌈W/2⌉)`. f32 on the
/// CPU; with the `cuda` feature also on CUDA devices in f32, f16 and bf16 (one kernel each way).
pub(crate) struct BlurOp;

impl CustomOp1 for BlurOp {
    fn name(&self) -> &'static str {
        "tresnet-blur"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let (ho, wo) = (blurred_side(h), blurred_side(w));
        let mut out = zeroed(n * c * ho * wo);
        blur_forward(f32_slice(s, l, "blur input")?, n * c, h, w, &mut out);
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }

    /// One kernel (`cuda_kernels/blur.cu`) in the input's dtype: f32, f16 or bf16.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let out = crate::cuda_kernels::blur_forward(
            s,
            l,
            n * c,
            (h, w),
            (blurred_side(h), blurred_side(w)),
        )?;
        Ok((out, Shape::from((n, c, blurred_side(h), blurred_side(w)))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (_, _, h, w) = x.dims4()?;
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&BlurGradOp {
            height: h,
            width: w,
        })?))
    }
}

/// The gradient of [`BlurOp`].
struct BlurGradOp {
    height: usize,
    width: usize,
}

impl CustomOp1 for BlurGradOp {
    fn name(&self) -> &'static str {
        "tresnet-blur-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, _, _) = l.shape().dims4()?;
        let mut out = zeroed(n * c * self.height * self.width);
        blur_backward(
            f32_slice(s, l, "blur gradient")?,
            n * c,
            self.height,
            self.width,
            &mut out,
        );
        Ok((
            CpuStorage::F32(out),
            Shape::from((n, c, self.height, self.width)),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (n, c, _, _) = l.shape().dims4()?;
        let out = crate::cuda_kernels::blur_backward(
            s,
            l,
            n * c,
            (self.height, self.width),
            (blurred_side(self.height), blurred_side(self.width)),
        )?;
        Ok((out, Shape::from((n, c, self.height, self.width))))
    }
}

/// Batch statistics of the last forward of a [`BnActOp`]: per-channel mean and biased variance.
pub(crate) type SharedStats = Arc<Mutex<Option<(Vec<f32>, Vec<f32>)>>>;

pub(super) fn nchw(l: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let (n, c, h, w) = l.shape().dims4()?;
    Ok((n, c, h * w))
}

/// Training batch norm with its activation fused: `(x, γ, β)` → `act(γ·x̂ + β)`, x̂ normalised
/// with the batch's statistics (written to `stats` for the running-statistic update).
pub(crate) struct BnActOp {
    /// Fused activation.
    pub act: Epilogue,
    /// Variance epsilon.
    pub eps: f32,
    /// Where the forward pass leaves its statistics.
    pub stats: SharedStats,
}

impl BnActOp {
    fn invstd(&self, var: &[f32]) -> Vec<f32> {
        var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect()
    }
}

impl CustomOp3 for BnActOp {
    fn name(&self) -> &'static str {
        "tresnet-bn-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = nchw(l1)?;
        let x = f32_slice(s1, l1, "batch-norm input")?;
        let (mean, var) = channel_stats(x, dims.0, dims.1, dims.2);
        let invstd = self.invstd(&var);
        let mut y = zeroed(x.len());
        bn_act_forward(
            x,
            &mean,
            &invstd,
            f32_slice(s2, l2, "gamma")?,
            f32_slice(s3, l3, "beta")?,
            self.act,
            dims,
            &mut y,
        );
        *self
            .stats
            .lock()
            .map_err(|_| candle_core::Error::Msg("batch-norm statistics lock".into()))? =
            Some((mean, var));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (mean, var) = self
            .stats
            .lock()
            .map_err(|_| candle_core::Error::Msg("batch-norm statistics lock".into()))?
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("batch-norm backward before forward".into()))?;
        let c = mean.len();
        let op = BnActGradOp {
            act: self.act,
            mean,
            invstd: self.invstd(&var),
        };
        let packed =
            x.apply_op3_no_bwd(&grad.contiguous()?, &Tensor::cat(&[gamma, beta], 0)?, &op)?;
        let len = x.elem_count();
        Ok((
            Some(packed.narrow(0, 0, len)?.reshape(x.shape())?),
            Some(packed.narrow(0, len, c)?),
            Some(packed.narrow(0, len + c, c)?),
        ))
    }
}

/// `(x, dy, γ ‖ β)` → `dx ‖ dγ ‖ dβ` packed in one vector.
struct BnActGradOp {
    act: Epilogue,
    mean: Vec<f32>,
    invstd: Vec<f32>,
}

impl CustomOp3 for BnActGradOp {
    fn name(&self) -> &'static str {
        "tresnet-bn-act-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = nchw(l1)?;
        let affine = f32_slice(s3, l3, "batch-norm gamma and beta")?;
        let (gamma, beta) = affine.split_at(dims.1);
        let packed = bn_act_backward(
            f32_slice(s1, l1, "batch-norm input")?,
            f32_slice(s2, l2, "batch-norm gradient")?,
            &self.mean,
            &self.invstd,
            gamma,
            beta,
            self.act,
            dims,
        );
        let n = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(n)))
    }
}

/// `relu(a + b)`, differentiable in both.
pub(crate) struct AddReluOp;

impl CustomOp2 for AddReluOp {
    fn name(&self) -> &'static str {
        "tresnet-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "add-relu: shapes {:?} and {:?} differ",
                l1.dims(),
                l2.dims()
            );
        }
        let (a, b) = (
            f32_slice(s1, l1, "add-relu input")?,
            f32_slice(s2, l2, "add-relu input")?,
        );
        let mut y = zeroed(a.len());
        add_relu_forward(a, b, &mut y);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = y.apply_op2_no_bwd(&grad.contiguous()?, &ReluMaskOp)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// `(y, dy)` → `dy · [y > 0]`.
struct ReluMaskOp;

impl CustomOp2 for ReluMaskOp {
    fn name(&self) -> &'static str {
        "tresnet-relu-mask"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = relu_mask_backward(
            f32_slice(s1, l1, "relu output")?,
            f32_slice(s2, l2, "relu gradient")?,
        );
        Ok((CpuStorage::F32(g), l1.shape().clone()))
    }
}

/// `x (N, C, H, W) · gate (N, C)` per channel, differentiable in both.
pub(crate) struct ChannelScaleOp;

impl CustomOp2 for ChannelScaleOp {
    fn name(&self) -> &'static str {
        "tresnet-channel-scale"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, hw) = nchw(l1)?;
        if l2.shape().elem_count() != n * c {
            candle_core::bail!(
                "channel scale: gate {:?} does not fit {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        let x = f32_slice(s1, l1, "scaled input")?;
        let mut y = zeroed(x.len());
        channel_scale_forward(x, f32_slice(s2, l2, "gate")?, hw, &mut y);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gate: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(gate, &grad.contiguous()?, &ChannelScaleGradOp)?;
        let len = x.elem_count();
        Ok((
            Some(packed.narrow(0, 0, len)?.reshape(x.shape())?),
            Some(
                packed
                    .narrow(0, len, gate.elem_count())?
                    .reshape(gate.shape())?,
            ),
        ))
    }
}

/// `(x, gate, dy)` → `dx ‖ dgate`.
struct ChannelScaleGradOp;

impl CustomOp3 for ChannelScaleGradOp {
    fn name(&self) -> &'static str {
        "tresnet-channel-scale-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, _, hw) = nchw(l1)?;
        let packed = channel_scale_backward(
            f32_slice(s1, l1, "scaled input")?,
            f32_slice(s2, l2, "gate")?,
            f32_slice(s3, l3, "scale gradient")?,
            hw,
        );
        let n = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(n)))
    }
}
