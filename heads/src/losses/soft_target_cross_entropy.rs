//! Cross-entropy against soft targets (a distribution over classes per row), the loss a
//! single-label run minimises once Mixup or CutMix has blended its targets: per row
//! `Σₖ −yₖ·log softmax(z)ₖ`, averaged over the rows (timm's `SoftTargetCrossEntropy`).

use crate::error::{HeadsError, Result};

/// The mean soft-target cross-entropy of row-major `logits` and `targets` (`rows × classes`
/// each) and its gradient with respect to each logit: `(softmax(z)·Σₖyₖ − y) / rows`.
pub fn soft_target_cross_entropy(
    logits: &[f64],
    targets: &[f64],
    classes: usize,
) -> Result<(f64, Vec<f64>)> {
    if classes == 0 || logits.len() != targets.len() || !logits.len().is_multiple_of(classes) {
        return Err(HeadsError::Invalid(format!(
            "soft-target cross-entropy: {} logits and {} targets for {classes} classes",
            logits.len(),
            targets.len()
        )));
    }
    let rows = logits.len() / classes;
    let mut total = 0.0;
    let mut grad = Vec::with_capacity(logits.len());
    for (z, y) in logits
        .chunks_exact(classes)
        .zip(targets.chunks_exact(classes))
    {
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
        let log_sum = max + sum.ln();
        let mass: f64 = y.iter().sum();
        total += z.iter().zip(y).map(|(v, t)| t * (log_sum - v)).sum::<f64>();
        grad.extend(
            z.iter()
                .zip(y)
                .map(|(v, t)| ((v - log_sum).exp() * mass - t) / rows as f64),
        );
    }
    let value = total / rows.max(1) as f64;
    if !value.is_finite() {
        return Err(HeadsError::NonFinite {
            value,
            context: "soft-target cross-entropy".into(),
        });
    }
    Ok((value, grad))
}
