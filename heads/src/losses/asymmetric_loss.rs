//! The multi-label asymmetric loss (ASL), value and gradient, exactly as the ASL repository's
//! `AsymmetricLoss` computes them (TRESNET_SPEC §5.1).

use crate::error::{HeadsError, Result};

/// ASL settings. Defaults are the repository's `AsymmetricLoss()`:
/// `gamma_neg 4, gamma_pos 1, clip 0.05, eps 1e-8`, focusing weight without gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AsymmetricLoss {
    /// Focusing exponent for negatives.
    pub gamma_neg: f64,
    /// Focusing exponent for positives.
    pub gamma_pos: f64,
    /// Probability margin shifted off negatives (`p_m = max(p − clip, 0)`); 0 disables it.
    pub clip: f64,
    /// Floor inside the logarithms.
    pub eps: f64,
    /// Treat the focusing weight as a constant in the gradient
    /// (`disable_torch_grad_focal_loss`).
    pub focal_weight_without_grad: bool,
}

impl Default for AsymmetricLoss {
    fn default() -> Self {
        Self {
            gamma_neg: 4.0,
            gamma_pos: 1.0,
            clip: 0.05,
            eps: 1e-8,
            focal_weight_without_grad: true,
        }
    }
}

impl AsymmetricLoss {
    /// The ASL/ML-Decoder COCO training setting: `gamma_neg 4, gamma_pos 0, clip 0.05`.
    pub fn coco_training() -> Self {
        Self {
            gamma_pos: 0.0,
            ..Self::default()
        }
    }

    /// Plain binary cross-entropy (summed): no focusing, no clipping.
    pub fn binary_cross_entropy() -> Self {
        Self {
            gamma_neg: 0.0,
            gamma_pos: 0.0,
            clip: 0.0,
            ..Self::default()
        }
    }

    /// Loss (summed over batch and classes, as the repository) and its gradient with respect to
    /// each logit, for row-major `logits` and `targets` of the same length (targets in [0, 1];
    /// soft values go through the same formulas).
    pub fn value_and_grad(&self, logits: &[f64], targets: &[f64]) -> Result<(f64, Vec<f64>)> {
        if logits.len() != targets.len() {
            return Err(HeadsError::Invalid(format!(
                "{} logits but {} targets",
                logits.len(),
                targets.len()
            )));
        }
        let mut total = 0.0;
        let mut grad = Vec::with_capacity(logits.len());
        for (&x, &y) in logits.iter().zip(targets) {
            let (l, g) = self.element(x, y);
            total += l;
            grad.push(g);
        }
        if !total.is_finite() {
            return Err(HeadsError::NonFinite {
                value: total,
                context: "asymmetric loss".into(),
            });
        }
        Ok((total, grad))
    }

    /// One element's loss and d loss / d logit.
    fn element(&self, x: f64, y: f64) -> (f64, f64) {
        let p = sigmoid(x);
        let dp = p * (1.0 - p);
        // Negative-side probability, shifted by the clip and capped at 1.
        let (p_neg, dp_neg) = if self.clip > 0.0 {
            let shifted = 1.0 - p + self.clip;
            if shifted <= 1.0 {
                (shifted, -dp)
            } else {
                (1.0, 0.0)
            }
        } else {
            (1.0 - p, -dp)
        };
        let (log_pos, dlog_pos) = if p >= self.eps {
            (p.ln(), dp / p)
        } else {
            (self.eps.ln(), 0.0)
        };
        let (log_neg, dlog_neg) = if p_neg >= self.eps {
            (p_neg.ln(), dp_neg / p_neg)
        } else {
            (self.eps.ln(), 0.0)
        };
        let a = y * log_pos + (1.0 - y) * log_neg;
        let da = y * dlog_pos + (1.0 - y) * dlog_neg;
        if self.gamma_neg <= 0.0 && self.gamma_pos <= 0.0 {
            return (-a, -da);
        }
        let pt = p * y + p_neg * (1.0 - y);
        let dpt = dp * y + dp_neg * (1.0 - y);
        let gamma = self.gamma_pos * y + self.gamma_neg * (1.0 - y);
        let base = 1.0 - pt;
        let w = base.powf(gamma);
        // d base^γ / d base = γ·base^(γ−1), defined as 0 where γ = 0 (as torch.pow's gradient).
        let dw = if gamma == 0.0 {
            0.0
        } else {
            gamma * base.powf(gamma - 1.0) * -dpt
        };
        let grad = if self.focal_weight_without_grad {
            -(da * w)
        } else {
            -(da * w + a * dw)
        };
        (-(a * w), grad)
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}
