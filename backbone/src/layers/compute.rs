//! Convolution and matrix product entry points that work in every dtype on every device.
//!
//! candle 0.11's CPU backend has no bf16 matrix product (and so no bf16 convolution). On the CPU,
//! bf16 operands are widened to f32 for the product and the result is rounded back to bf16: the
//! same contract as bf16 hardware (bf16 storage, f32 accumulation). Every other case calls candle
//! directly.

use candle_core::{DType, Tensor};

use crate::error::Result;

fn widen_on_cpu(t: &Tensor) -> bool {
    t.dtype() == DType::BF16 && t.device().is_cpu()
}

/// `x.conv2d(kernel, padding, stride, 1, 1)`: `(N, I, H, W)` × `(O, I, k, k)` → `(N, O, H', W')`.
pub fn conv2d(x: &Tensor, kernel: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
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
