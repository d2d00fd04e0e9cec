//! Convolution, blur and matrix product entry points that work in every dtype on every device.
//!
//! f32 on the CPU takes this crate's kernels ([`crate::cpu_kernels`]) for the shapes TResNet
//! uses. candle 0.11's CPU backend has no bf16 matrix product (and so no bf16 convolution): on the
//! CPU, bf16 operands are widened to f32 for the product and the result is rounded back to bf16,
//! the same contract as bf16 hardware (bf16 storage, f32 accumulation). Everything else calls
//! candle directly.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::cpu_kernels::{ConvTiles, Epilogue, PackedWeights, PreparedKernel, WinogradKernel};
use crate::error::Result;
use crate::layout::Activation;
use crate::ops::{AddReluOp, BlurOp, ChannelScaleOp, ConvBiasActAddOp, ConvBiasActOp, ConvOp};

/// Whether the fast CPU convolution handles this case.
pub(crate) fn fast_conv(x: &Tensor, kernel: &Tensor, padding: usize, stride: usize) -> bool {
    let k = kernel.dims();
    x.device().is_cpu()
        && x.dtype() == DType::F32
        && kernel.dtype() == DType::F32
        && stride == 1
        && k.len() == 4
        && k[2] == k[3]
        && (k[2] == 1 || k[2] == 3)
        && padding == k[2] / 2
        && x.rank() == 4
        && x.dims()[1] == k[1]
}

/// `act(conv(x, kernel) + bias)` (stride 1, "same" padding), fused on the CPU: `(N, I, H, W)` ×
/// `(O, I, k, k)` + `(O)` → `(N, O, H, W)`. Not differentiable (inference only).
pub fn conv2d_bias_act(
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    padding: usize,
    activation: Activation,
) -> Result<Tensor> {
    conv2d_bias_act_with(x, kernel, bias, padding, activation, None)
}

/// [`conv2d_bias_act`] whose fast CPU kernel takes `prepared`, the same kernel prepared for bf16
/// or Winograd products.
pub(crate) fn conv2d_bias_act_with(
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    padding: usize,
    activation: Activation,
    prepared: Option<&Arc<PreparedKernel>>,
) -> Result<Tensor> {
    if fast_conv(x, kernel, padding, 1) && bias.dtype() == DType::F32 {
        let op = ConvBiasActOp {
            epilogue: epilogue(activation),
            prepared: prepared.cloned(),
        };
        return Ok(x.contiguous()?.apply_op3_no_bwd(
            &kernel.contiguous()?,
            &bias.flatten_all()?.contiguous()?,
            &op,
        )?);
    }
    let y = conv2d(x, kernel, padding, 1)?.broadcast_add(&bias.reshape((1, (), 1, 1))?)?;
    super::apply_activation(&y, activation)
}

/// `relu(act(conv(x, kernel) + bias) + residual)`: a residual block's last convolution with the
/// shortcut's add and ReLU, `residual` shaped as the output `(N, O, H, W)`. On the CPU in f32
/// one fused operation; elsewhere the convolution, then [`add_relu`]. Not differentiable on the
/// fused path (inference only).
pub fn conv2d_bias_act_add_relu(
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    padding: usize,
    activation: Activation,
    residual: &Tensor,
) -> Result<Tensor> {
    conv2d_bias_act_add_relu_with(x, kernel, bias, padding, activation, None, residual)
}

/// [`conv2d_bias_act_add_relu`] whose fast CPU kernel takes `prepared` (on AMX tiles the add
/// and ReLU run inside the products' epilogue).
pub(crate) fn conv2d_bias_act_add_relu_with(
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    padding: usize,
    activation: Activation,
    prepared: Option<&Arc<PreparedKernel>>,
    residual: &Tensor,
) -> Result<Tensor> {
    if fast_conv(x, kernel, padding, 1) && bias.dtype() == DType::F32 && is_cpu_f32(residual) {
        let op = ConvBiasActAddOp {
            bias: bias.flatten_all()?.to_vec1::<f32>()?,
            epilogue: epilogue(activation),
            then: Epilogue::Relu,
            prepared: prepared.cloned(),
        };
        return Ok(x.contiguous()?.apply_op3_no_bwd(
            &kernel.contiguous()?,
            &residual.contiguous()?,
            &op,
        )?);
    }
    let y = conv2d_bias_act_with(x, kernel, bias, padding, activation, prepared)?;
    add_relu(&y, residual)
}

/// A convolution kernel `(O, I, k, k)` prepared once for a faster CPU product than im2col with
/// f32 operands, as CPU inference networks keep their folded kernels: rounded to bf16 and packed
/// ([`PreparedConvKernel::bf16`]) or, for 3×3, transformed for Winograd F(4×4, 3×3) in f32
/// ([`PreparedConvKernel::winograd`]).
#[derive(Debug, Clone)]
pub struct PreparedConvKernel {
    kernel: Tensor,
    prepared: Arc<PreparedKernel>,
}

impl PreparedConvKernel {
    /// Packs `kernel` (f32 on the CPU) for bf16 products as a network multiplying in bf16 runs
    /// them: on AMX tiles where the CPU has them, else with AVX-512 BF16; `None` on CPUs
    /// without native bf16 ([`crate::native_cpu_bf16`]).
    pub fn bf16(kernel: &Tensor) -> Result<Option<Self>> {
        if !crate::native_cpu_bf16() {
            return Ok(None);
        }
        let (o, i, kh, kw) = kernel.dims4()?;
        let data = kernel
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let prepared = if crate::cpu_kernels::amx_available() && kh == kw {
            PreparedKernel::Tiles(ConvTiles::pack(&data, o, i, kh))
        } else {
            PreparedKernel::Bf16(PackedWeights::pack_rows(&data, o, i * kh * kw))
        };
        Ok(Some(Self {
            kernel: kernel.to_dtype(DType::F32)?,
            prepared: Arc::new(prepared),
        }))
    }

    /// Prepares a 3×3 `kernel` for Winograd products in f32 (transformed on first use, on maps
    /// of at least 16 tiles of 4×4); `None` for other kernels or on CPUs without AVX-512.
    pub fn winograd(kernel: &Tensor) -> Result<Option<Self>> {
        let (_, _, kh, kw) = kernel.dims4()?;
        if (kh, kw) != (3, 3) || !crate::cpu_kernels::winograd_available() {
            return Ok(None);
        }
        Ok(Some(Self {
            kernel: kernel.to_dtype(DType::F32)?,
            prepared: Arc::new(PreparedKernel::Winograd(WinogradKernel::default())),
        }))
    }

    /// [`conv2d_bias_act`] with this kernel's products: `(N, I, H, W)` f32 → `(N, O, H, W)` f32.
    pub fn conv2d_bias_act(
        &self,
        x: &Tensor,
        bias: &Tensor,
        padding: usize,
        activation: Activation,
    ) -> Result<Tensor> {
        conv2d_bias_act_with(
            x,
            &self.kernel,
            bias,
            padding,
            activation,
            Some(&self.prepared),
        )
    }

    /// [`conv2d_bias_act_add_relu`] with this kernel's products.
    pub fn conv2d_bias_act_add_relu(
        &self,
        x: &Tensor,
        bias: &Tensor,
        padding: usize,
        activation: Activation,
        residual: &Tensor,
    ) -> Result<Tensor> {
        conv2d_bias_act_add_relu_with(
            x,
            &self.kernel,
            bias,
            padding,
            activation,
            Some(&self.prepared),
            residual,
        )
    }
}

fn is_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// The fused epilogue for an activation.
pub(crate) fn epilogue(activation: Activation) -> Epilogue {
    match activation {
        Activation::Identity => Epilogue::Identity,
        Activation::Relu => Epilogue::Relu,
        Activation::LeakyRelu(s) => Epilogue::LeakyRelu(s as f32),
    }
}

/// `relu(a + b)` (same shapes), one fused pass on the CPU.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if is_cpu_f32(a) && is_cpu_f32(b) && a.dims() == b.dims() {
        return Ok(a.contiguous()?.apply_op2(&b.contiguous()?, AddReluOp)?);
    }
    Ok((a + b)?.relu()?)
}

/// `x (N, C, H, W)` scaled per channel by `gate (N, C)`, one fused pass on the CPU.
pub fn channel_scale(x: &Tensor, gate: &Tensor) -> Result<Tensor> {
    let (n, c, _, _) = x.dims4()?;
    if is_cpu_f32(x) && is_cpu_f32(gate) && x.rank() == 4 {
        return Ok(x
            .contiguous()?
            .apply_op2(&gate.contiguous()?, ChannelScaleOp)?);
    }
    Ok(x.broadcast_mul(&gate.reshape((n, c, 1, 1))?)?)
}

/// The anti-aliasing blur on `(N, C, H, W)` → `(N, C, ⌈H/2⌉, ⌈W/2⌉)` as one kernel (f32 on the
/// CPU; f32, f16 and bf16 on CUDA with the `cuda` feature), or `None` where no kernel applies.
pub fn fast_blur(x: &Tensor) -> Result<Option<Tensor>> {
    if x.rank() == 4 && blur_kernel_applies(x) {
        return Ok(Some(x.contiguous()?.apply_op1(BlurOp)?));
    }
    Ok(None)
}

fn blur_kernel_applies(x: &Tensor) -> bool {
    match x.device() {
        candle_core::Device::Cpu => x.dtype() == DType::F32,
        candle_core::Device::Cuda(_) => {
            cfg!(feature = "cuda") && matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16)
        }
        _ => false,
    }
}

fn widen_on_cpu(t: &Tensor) -> bool {
    t.dtype() == DType::BF16 && t.device().is_cpu()
}

/// `x.conv2d(kernel, padding, stride, 1, 1)`: `(N, I, H, W)` × `(O, I, k, k)` → `(N, O, H', W')`.
pub fn conv2d(x: &Tensor, kernel: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    if fast_conv(x, kernel, padding, stride) {
        return Ok(x.contiguous()?.apply_op2(&kernel.contiguous()?, ConvOp)?);
    }
    if widen_on_cpu(x) {
        let y =
            x.to_dtype(DType::F32)?
                .conv2d(&kernel.to_dtype(DType::F32)?, padding, stride, 1, 1)?;
        return Ok(y.to_dtype(DType::BF16)?);
    }
    Ok(x.conv2d(kernel, padding, stride, 1, 1)?)
}

/// `a.matmul(b)`: `(…, m, k)` × `(k, n)` → `(…, m, n)`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if widen_on_cpu(a) {
        let y = a.to_dtype(DType::F32)?.matmul(&b.to_dtype(DType::F32)?)?;
        return Ok(y.to_dtype(DType::BF16)?);
    }
    Ok(a.matmul(b)?)
}
