//! The single-label asymmetric loss (the ASL repository's `ASLSingleLabel`), which with zero
//! focusing is cross-entropy with label smoothing.

use crate::error::{HeadsError, Result};

/// How per-sample losses are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// Mean over the batch.
    Mean,
    /// One loss per sample (the gradient returned is that of their sum).
    None,
}

/// Single-label ASL settings. Defaults are the repository's: `gamma_pos 0, gamma_neg 4,
/// label smoothing 0.1, mean` (timm's port defaults to `gamma_pos 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AsymmetricSingleLabelLoss {
    /// Focusing exponent of the target class: weight `(1 − p)^gamma_pos`.
    pub gamma_pos: f64,
    /// Focusing exponent of the other classes: weight `p^gamma_neg`.
    pub gamma_neg: f64,
    /// Label smoothing: targets `t·(1 − ε) + ε/K`.
    pub smoothing: f64,
    /// Batch reduction.
    pub reduction: Reduction,
}

impl Default for AsymmetricSingleLabelLoss {
    fn default() -> Self {
        Self {
            gamma_pos: 0.0,
            gamma_neg: 4.0,
            smoothing: 0.1,
            reduction: Reduction::Mean,
        }
    }
}

impl AsymmetricSingleLabelLoss {
    /// Cross-entropy with optional label smoothing (no focusing), mean over the batch.
    pub fn cross_entropy(smoothing: f64) -> Self {
        Self {
            gamma_pos: 0.0,
            gamma_neg: 0.0,
            smoothing,
            reduction: Reduction::Mean,
        }
    }

    /// Losses (one value for `Mean`, one per row for `None`) and the gradient with respect to the
    /// `(rows, classes)` row-major logits, for class-index targets.
    pub fn value_and_grad(
        &self,
        logits: &[f64],
        classes: usize,
        targets: &[usize],
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        if classes == 0 || logits.len() != classes * targets.len() {
            return Err(HeadsError::Invalid(format!(
                "{} logits do not form {} rows of {classes} classes",
                logits.len(),
                targets.len()
            )));
        }
        if let Some(t) = targets.iter().find(|t| **t >= classes) {
            return Err(HeadsError::Invalid(format!(
                "target class {t} is out of range for {classes} classes"
            )));
        }
        let rows = targets.len();
        let scale = match self.reduction {
            Reduction::Mean => 1.0 / rows as f64,
            Reduction::None => 1.0,
        };
        let mut losses = Vec::with_capacity(rows);
        let mut grad = vec![0.0; logits.len()];
        for (r, &target) in targets.iter().enumerate() {
            let x = &logits[r * classes..(r + 1) * classes];
            let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_sum = x.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
            let log_p: Vec<f64> = x.iter().map(|v| v - log_sum).collect();
            let p: Vec<f64> = log_p.iter().map(|v| v.exp()).collect();
            // a_k = t_k · (w_k + log p_k · dw_k/dp_k · p_k); dL/dx_j = −(a_j − p_j Σ a_k).
            let mut loss = 0.0;
            let mut a = vec![0.0; classes];
            for k in 0..classes {
                let t = if k == target {
                    1.0 - self.smoothing
                } else {
                    0.0
                } + self.smoothing / classes as f64;
                let (w, dw) = if k == target {
                    focus(1.0 - p[k], self.gamma_pos, -1.0)
                } else {
                    focus(p[k], self.gamma_neg, 1.0)
                };
                loss -= t * log_p[k] * w;
                a[k] = t * (w + log_p[k] * dw * p[k]);
            }
            let sum_a: f64 = a.iter().sum();
            for j in 0..classes {
                grad[r * classes + j] = -(a[j] - p[j] * sum_a) * scale;
            }
            losses.push(loss);
        }
        let losses = match self.reduction {
            Reduction::Mean => vec![losses.iter().sum::<f64>() * scale],
            Reduction::None => losses,
        };
        if let Some(v) = losses.iter().find(|v| !v.is_finite()) {
            return Err(HeadsError::NonFinite {
                value: *v,
                context: "single-label asymmetric loss".into(),
            });
        }
        Ok((losses, grad))
    }
}

/// `base^γ` and its derivative with respect to p, where `d base / d p = sign`
/// (0 when γ = 0, as torch's pow gradient).
fn focus(base: f64, gamma: f64, sign: f64) -> (f64, f64) {
    let w = base.powf(gamma);
    let dw = if gamma == 0.0 {
        0.0
    } else {
        gamma * base.powf(gamma - 1.0) * sign
    };
    (w, dw)
}
