//! Turning an analytically computed loss and gradient into a candle scalar that backpropagates.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// A scalar tensor whose value is `value` and whose gradient with respect to `logits` is `grad`
/// (same shape as `logits`): `value + Σ logits·g − stopgrad(Σ logits·g)`. The two sums cancel
/// exactly in the forward pass; only `g` flows back.
pub fn loss_with_gradient(logits: &Tensor, value: f64, grad: &[f64]) -> Result<Tensor> {
    let g = Tensor::from_slice(grad, logits.shape(), logits.device())?.to_dtype(logits.dtype())?;
    let linear = (logits * &g)?.sum_all()?;
    let constant = Tensor::new(value, logits.device())?.to_dtype(DType::F32)?;
    let linear = linear.to_dtype(DType::F32)?;
    Ok(((&linear - linear.detach())? + constant)?)
}

/// The logits of a `(rows, classes)` tensor as f64, row-major.
pub fn logits_to_f64(logits: &Tensor) -> Result<(usize, usize, Vec<f64>)> {
    let (rows, classes) = logits.dims2()?;
    let flat = logits
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    Ok((rows, classes, flat))
}
