//! The FCOS training loss: sigmoid focal loss over every location and class, GIoU loss on the
//! boxes of positive locations weighted by their centerness target, and binary cross-entropy
//! on centerness. Focal and centerness terms carry exact analytic gradients; GIoU is built from
//! tensor ops and differentiated by candle.

use candle_core::{DType, Tensor};

use super::fcos_head::FcosOutput;
use super::fcos_targets::FcosTargets;
use crate::error::{HeadsError, Result};
use crate::losses::loss_with_gradient;

/// `log(1 + e^x)`, stable for any `x`.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Sigmoid focal loss of one logit `x` against label `y` (0 or 1), and its derivative:
/// `−α (1−p)^γ log p` for `y = 1`, `−(1−α) p^γ log(1−p)` for `y = 0`, with `p = σ(x)`.
pub fn focal_loss_term(x: f64, positive: bool, alpha: f64, gamma: f64) -> (f64, f64) {
    let p = 1.0 / (1.0 + (-x).exp());
    if positive {
        let log_p = -softplus(-x);
        let w = (1.0 - p).powf(gamma);
        (
            -alpha * w * log_p,
            alpha * w * (gamma * p * log_p - (1.0 - p)),
        )
    } else {
        let log_q = -softplus(x);
        let w = p.powf(gamma);
        (
            -(1.0 - alpha) * w * log_q,
            (1.0 - alpha) * w * (p - gamma * (1.0 - p) * log_q),
        )
    }
}

/// The three terms of the loss and their sum (a scalar that backpropagates).
pub struct FcosLoss {
    /// `classification + box + centerness`.
    pub total: Tensor,
    /// Focal loss summed over locations and classes, divided by the number of positives.
    pub classification: f64,
    /// `Σ centerness_target · (1 − GIoU) / Σ centerness_target` over positives.
    pub box_regression: f64,
    /// Mean binary cross-entropy of centerness over positives.
    pub centerness: f64,
    /// Positive locations in the batch.
    pub num_positive: usize,
}

/// Level outputs `(B, C, H, W)` → `(B, Σ H·W, C)`, levels in order, locations row-major (the
/// order of [`FcosTargets`]).
pub fn flatten_levels(maps: &[&Tensor]) -> Result<Tensor> {
    let parts: Vec<Tensor> = maps
        .iter()
        .map(|m| {
            let (b, c, h, w) = m.dims4()?;
            m.permute((0, 2, 3, 1))?.reshape((b, h * w, c))
        })
        .collect::<candle_core::Result<_>>()?;
    Ok(Tensor::cat(&parts, 1)?)
}

/// The FCOS loss of a batch's outputs against one [`FcosTargets`] per image.
pub fn fcos_loss(
    output: &FcosOutput,
    targets: &[FcosTargets],
    alpha: f32,
    gamma: f32,
) -> Result<FcosLoss> {
    let cls = flatten_levels(
        &output
            .levels
            .iter()
            .map(|l| &l.class_logits)
            .collect::<Vec<_>>(),
    )?;
    let (batch, n, k) = cls.dims3()?;
    if targets.len() != batch || targets.iter().any(|t| t.classes.len() != n) {
        return Err(HeadsError::Invalid(format!(
            "FCOS targets for {} images / {:?} locations, outputs have {batch} images × {n} locations",
            targets.len(),
            targets.first().map(|t| t.classes.len())
        )));
    }
    let device = cls.device().clone();
    let num_positive: usize = targets.iter().map(FcosTargets::num_positive).sum();
    let norm = num_positive.max(1) as f64;

    // Classification: focal loss with its exact gradient.
    let logits: Vec<f64> = cls.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let (alpha, gamma) = (f64::from(alpha), f64::from(gamma));
    let mut value = 0.0;
    let mut grad = vec![0.0; logits.len()];
    for (b, t) in targets.iter().enumerate() {
        for (loc, class) in t.classes.iter().enumerate() {
            for c in 0..k {
                let i = (b * n + loc) * k + c;
                let (l, g) = focal_loss_term(logits[i], *class == Some(c), alpha, gamma);
                value += l;
                grad[i] = g / norm;
            }
        }
    }
    let classification = value / norm;
    let mut total = loss_with_gradient(&cls, classification, &grad)?;

    let (mut box_regression, mut centerness) = (0.0, 0.0);
    if num_positive > 0 {
        let mut positive_rows = Vec::with_capacity(num_positive);
        let mut target_ltrb = Vec::with_capacity(num_positive * 4);
        let mut target_ctr = Vec::with_capacity(num_positive);
        for (b, t) in targets.iter().enumerate() {
            for (loc, class) in t.classes.iter().enumerate() {
                if class.is_some() {
                    positive_rows.push((b * n + loc) as u32);
                    target_ltrb.extend_from_slice(&t.ltrb[loc]);
                    target_ctr.push(t.centerness[loc]);
                }
            }
        }
        let rows = Tensor::from_vec(positive_rows, num_positive, &device)?;
        let ltrb = flatten_levels(&output.levels.iter().map(|l| &l.ltrb).collect::<Vec<_>>())?
            .reshape((batch * n, 4))?
            .index_select(&rows, 0)?
            .to_dtype(DType::F32)?;
        let target = Tensor::from_vec(target_ltrb, (num_positive, 4), &device)?;
        let weight = Tensor::from_vec(target_ctr.clone(), num_positive, &device)?;
        let loss = giou_loss_ltrb(&ltrb, &target)?;
        let weight_sum = f64::from(target_ctr.iter().sum::<f32>()).max(1e-6);
        let box_loss = ((loss * &weight)?.sum_all()? / weight_sum)?;
        box_regression = f64::from(box_loss.to_scalar::<f32>()?);
        total = (total + box_loss)?;

        // Centerness: binary cross-entropy with its exact gradient.
        let ctr = flatten_levels(
            &output
                .levels
                .iter()
                .map(|l| &l.centerness_logits)
                .collect::<Vec<_>>(),
        )?
        .reshape(batch * n)?
        .index_select(&rows, 0)?;
        let x: Vec<f64> = ctr.to_dtype(DType::F64)?.to_vec1()?;
        let mut ctr_grad = Vec::with_capacity(x.len());
        for (&xi, &yi) in x.iter().zip(&target_ctr) {
            let y = f64::from(yi);
            centerness += softplus(xi) - y * xi;
            ctr_grad.push((1.0 / (1.0 + (-xi).exp()) - y) / num_positive as f64);
        }
        centerness /= num_positive as f64;
        total = (total + loss_with_gradient(&ctr, centerness, &ctr_grad)?)?;
    }
    let sum = classification + box_regression + centerness;
    if !sum.is_finite() {
        return Err(HeadsError::NonFinite {
            value: sum,
            context: format!(
                "FCOS loss (classification {classification}, box {box_regression}, centerness {centerness})"
            ),
        });
    }
    Ok(FcosLoss {
        total,
        classification,
        box_regression,
        centerness,
        num_positive,
    })
}

/// `1 − GIoU` of predicted and target boxes given as distances from the same location:
/// `(P, 4)` × `(P, 4)` → `(P)`, differentiable in the prediction.
pub fn giou_loss_ltrb(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    let col = |t: &Tensor, i: usize| t.narrow(1, i, 1).and_then(|c| c.squeeze(1));
    let (pl, pt, pr, pb) = (col(pred, 0)?, col(pred, 1)?, col(pred, 2)?, col(pred, 3)?);
    let (tl, tt, tr, tb) = (
        col(target, 0)?,
        col(target, 1)?,
        col(target, 2)?,
        col(target, 3)?,
    );
    let pred_area = ((&pl + &pr)? * (&pt + &pb)?)?;
    let target_area = ((&tl + &tr)? * (&tt + &tb)?)?;
    let inter_w = (pl.minimum(&tl)? + pr.minimum(&tr)?)?;
    let inter_h = (pt.minimum(&tt)? + pb.minimum(&tb)?)?;
    let inter = (inter_w * inter_h)?;
    let union = ((pred_area + target_area)? - &inter)?;
    let hull_w = (pl.maximum(&tl)? + pr.maximum(&tr)?)?;
    let hull_h = (pt.maximum(&tt)? + pb.maximum(&tb)?)?;
    let hull = ((hull_w * hull_h)? + 1e-7)?;
    let union = (union + 1e-7)?;
    let iou = (inter / &union)?;
    let giou = (iou - ((&hull - &union)? / &hull)?)?;
    Ok(giou.affine(-1.0, 1.0)?)
}
