//! Mixup and CutMix over a batch, as timm's `Mixup` in its batch mode: each image is blended
//! with the image at the mirrored position of the batch (`i ↔ N−1−i`), all with one weight λ;
//! the targets are blended with the same λ (single-label: smoothed one-hot distributions, so the
//! loss becomes a soft-target cross-entropy; multi-label: the multi-hot vectors).
//!
//! - Mixup: `x' = λ·x + (1−λ)·flip(x)`, λ ~ Beta(α, α).
//! - CutMix: a box of `⌊H·√(1−λ)⌋ × ⌊W·√(1−λ)⌋` pixels centred on a uniform pixel (clipped to
//!   the image) is pasted from the mirrored image, and λ becomes the uncovered fraction of the image.
//!
//! The draw of a batch depends only on the run's seed, the epoch and the batch's index, so a
//! resumed run mixes exactly as an uninterrupted one.

use std::ops::Range;

use candle_core::{DType, Device, IndexOp, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution};

use crate::batch_seed::{Stream, batch_seed};
use crate::config::TrainConfig;

/// How one batch is mixed.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchMix {
    /// Not mixed.
    None,
    /// Every pixel blended: `λ·x + (1−λ)·flip(x)`.
    Mixup {
        /// Weight of each image's own content.
        lam: f64,
    },
    /// A box pasted from the mirrored image.
    CutMix {
        /// The fraction of each image left uncovered (the weight of its own target).
        lam: f64,
        /// Rows of the box.
        rows: Range<usize>,
        /// Columns of the box.
        cols: Range<usize>,
    },
}

impl BatchMix {
    /// The mix of batch `batch` of epoch `epoch` for images of `height × width`, drawn as timm
    /// does: mixing at all with probability `mixup_prob`; with both α set, CutMix with
    /// probability `mixup_switch_prob`; λ from Beta(α, α) of the chosen kind.
    pub fn draw(
        cfg: &TrainConfig,
        epoch: usize,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Self {
        let (mixup, cutmix) = (cfg.mixup, cfg.cutmix);
        if mixup <= 0.0 && cutmix <= 0.0 {
            return Self::None;
        }
        let mut rng = StdRng::seed_from_u64(batch_seed(cfg.seed, Stream::Mixing, epoch, batch));
        if rng.random::<f64>() >= cfg.mixup_prob {
            return Self::None;
        }
        let use_cutmix = if mixup > 0.0 && cutmix > 0.0 {
            rng.random::<f64>() < cfg.mixup_switch_prob
        } else {
            cutmix > 0.0
        };
        let alpha = if use_cutmix { cutmix } else { mixup };
        // `validate` keeps α finite and > 0 here, so the distribution exists.
        let lam = Beta::new(alpha, alpha).map_or(1.0, |b| b.sample(&mut rng));
        if !use_cutmix {
            return Self::Mixup { lam };
        }
        let cy = rng.random_range(0..height.max(1));
        let cx = rng.random_range(0..width.max(1));
        Self::cutmix(lam, height, width, cy, cx)
    }

    /// CutMix with drawn weight `lam` and box centre `(cy, cx)` on `height × width` images:
    /// the box and the corrected weight (1 − the box's share of the image).
    pub fn cutmix(lam: f64, height: usize, width: usize, cy: usize, cx: usize) -> Self {
        let ratio = (1.0 - lam).clamp(0.0, 1.0).sqrt();
        let (cut_h, cut_w) = (
            (height as f64 * ratio) as usize,
            (width as f64 * ratio) as usize,
        );
        // `cut` long, centred (the extra pixel of an odd length after the centre), clipped.
        let span = |centre: usize, cut: usize, side: usize| {
            centre.saturating_sub(cut / 2).min(side)..(centre + cut.div_ceil(2)).min(side)
        };
        let rows = span(cy, cut_h, height);
        let cols = span(cx, cut_w, width);
        let area = rows.len() * cols.len();
        let lam = 1.0 - area as f64 / (height * width).max(1) as f64;
        Self::CutMix { lam, rows, cols }
    }

    /// The weight of each image's own target (1 when not mixed).
    pub fn lam(&self) -> f64 {
        match self {
            Self::None => 1.0,
            Self::Mixup { lam } | Self::CutMix { lam, .. } => *lam,
        }
    }

    /// Whether the batch is mixed at all.
    pub fn is_mixed(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// The mixed images: `(N, C, H, W)` → `(N, C, H, W)`, same dtype.
    pub fn mix_images(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::None => Ok(x.clone()),
            Self::Mixup { lam } => {
                let flipped = mirrored(x)?;
                x.affine(*lam, 0.0)? + flipped.affine(1.0 - lam, 0.0)?
            }
            Self::CutMix { rows, cols, .. } => {
                if rows.is_empty() || cols.is_empty() {
                    return Ok(x.clone());
                }
                let flipped = mirrored(x)?;
                let patch = flipped.i((.., .., rows.clone(), cols.clone()))?;
                let (n, c) = (x.dim(0)?, x.dim(1)?);
                x.slice_assign(
                    &[0..n, 0..c, rows.clone(), cols.clone()],
                    &patch.contiguous()?,
                )
            }
        }
    }

    /// Mixed targets: `(N, K)` → `λ·y + (1−λ)·flip(y)`, in f32.
    pub fn mix_targets(&self, y: &Tensor) -> candle_core::Result<Tensor> {
        let y = y.to_dtype(DType::F32)?;
        if !self.is_mixed() {
            return Ok(y);
        }
        let lam = self.lam();
        y.affine(lam, 0.0)? + mirrored(&y)?.affine(1.0 - lam, 0.0)?
    }
}

/// Single-label targets as distributions: `1 − s + s/K` on the class, `s/K` elsewhere (timm's
/// smoothed one-hot), `(N, K)` f32.
pub fn smoothed_one_hot(
    classes: &[usize],
    num_classes: usize,
    smoothing: f64,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let off = smoothing / num_classes as f64;
    let on = 1.0 - smoothing + off;
    let mut flat = vec![off as f32; classes.len() * num_classes];
    for (row, &c) in classes.iter().enumerate() {
        if c < num_classes {
            flat[row * num_classes + c] = on as f32;
        }
    }
    Tensor::from_vec(flat, (classes.len(), num_classes), device)
}

/// The batch in reverse order along its first axis.
fn mirrored(x: &Tensor) -> candle_core::Result<Tensor> {
    let n = x.dim(0)?;
    let order: Vec<u32> = (0..n as u32).rev().collect();
    x.index_select(&Tensor::new(order.as_slice(), x.device())?, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mixing(mixup: f64, cutmix: f64) -> TrainConfig {
        TrainConfig {
            mixup,
            cutmix,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn draws_repeat_for_the_same_batch_and_vary_across_batches() {
        let cfg = mixing(0.8, 1.0);
        let a = BatchMix::draw(&cfg, 2, 7, 64, 48);
        assert_eq!(a, BatchMix::draw(&cfg, 2, 7, 64, 48));
        let draws: Vec<BatchMix> = (0..200)
            .map(|b| BatchMix::draw(&cfg, 0, b, 64, 48))
            .collect();
        let cut = draws
            .iter()
            .filter(|m| matches!(m, BatchMix::CutMix { .. }))
            .count();
        // Switch probability 0.5: both kinds, roughly half each.
        assert!((60..140).contains(&cut), "{cut} of 200 CutMix");
        assert!(draws.iter().all(|m| (0.0..=1.0).contains(&m.lam())));
        let mut lams: Vec<u64> = draws.iter().map(|m| m.lam().to_bits()).collect();
        lams.dedup();
        assert!(lams.len() > 150, "λ barely varies");
    }

    #[test]
    fn off_and_probability_zero_never_mix() {
        assert_eq!(
            BatchMix::draw(&mixing(0.0, 0.0), 0, 0, 8, 8),
            BatchMix::None
        );
        let cfg = TrainConfig {
            mixup_prob: 0.0,
            ..mixing(1.0, 1.0)
        };
        assert!((0..50).all(|b| BatchMix::draw(&cfg, 1, b, 8, 8) == BatchMix::None));
        let only_cutmix = mixing(0.0, 1.0);
        assert!((0..50).all(|b| matches!(
            BatchMix::draw(&only_cutmix, 0, b, 8, 8),
            BatchMix::CutMix { .. }
        )));
    }
}
