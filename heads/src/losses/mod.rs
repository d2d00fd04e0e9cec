//! Losses for the classification heads, each computing its value and its exact gradient (in f64)
//! and exposing both to candle's autograd through [`loss_with_gradient`].

mod asymmetric_loss;
mod asymmetric_single_label;
mod loss_tensor;
mod soft_target_cross_entropy;

pub use asymmetric_loss::AsymmetricLoss;
pub use asymmetric_single_label::{AsymmetricSingleLabelLoss, Reduction};
pub use loss_tensor::{logits_to_f64, loss_with_gradient};
pub use soft_target_cross_entropy::soft_target_cross_entropy;

use candle_core::Tensor;

use crate::error::Result;

/// Multi-label ASL on a `(B, K)` logit tensor and `(B, K)` targets: a scalar that backpropagates.
pub fn asymmetric_loss(loss: &AsymmetricLoss, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (_, _, x) = logits_to_f64(logits)?;
    let y = targets
        .to_dtype(candle_core::DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let (value, grad) = loss.value_and_grad(&x, &y)?;
    loss_with_gradient(logits, value, &grad)
}

/// Soft-target cross-entropy (mean over rows) on `(B, K)` logits and `(B, K)` target
/// distributions: a scalar that backpropagates.
pub fn soft_target_loss(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (_, classes, x) = logits_to_f64(logits)?;
    let y = targets
        .to_dtype(candle_core::DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let (value, grad) = soft_target_cross_entropy(&x, &y, classes)?;
    loss_with_gradient(logits, value, &grad)
}

/// Single-label ASL / cross-entropy on `(B, K)` logits and class indices (mean reduction): a
/// scalar that backpropagates.
pub fn single_label_loss(
    loss: &AsymmetricSingleLabelLoss,
    logits: &Tensor,
    targets: &[usize],
) -> Result<Tensor> {
    let (_, classes, x) = logits_to_f64(logits)?;
    let settings = AsymmetricSingleLabelLoss {
        reduction: Reduction::Mean,
        ..*loss
    };
    let (values, grad) = settings.value_and_grad(&x, classes, targets)?;
    loss_with_gradient(logits, values[0], &grad)
}
