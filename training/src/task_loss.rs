//! The loss a run minimises: cross-entropy (with label smoothing) for single-label runs, the
//! asymmetric loss for multi-label ones; on batches mixed by Mixup / CutMix, the same losses on
//! the blended targets (single-label: a soft-target cross-entropy).

use candle_core::{Device, Tensor};
use tresnet_heads::losses::{
    AsymmetricLoss, AsymmetricSingleLabelLoss, asymmetric_loss, single_label_loss, soft_target_loss,
};
use tresnet_runtime::TaskKind;

use crate::batch_mixing::{BatchMix, smoothed_one_hot};
use crate::config::TrainConfig;
use crate::data::Target;

/// Mean over the batch of the task's loss on `(B, K)` logits of images mixed as `mix`: a
/// scalar that backpropagates.
pub(crate) fn task_loss(
    task: TaskKind,
    cfg: &TrainConfig,
    logits: &Tensor,
    targets: &[Target],
    mix: &BatchMix,
    device: &Device,
) -> tresnet_heads::Result<Tensor> {
    let smoothing = cfg.label_smoothing;
    match task {
        TaskKind::SingleLabel => {
            let classes: Vec<usize> = targets
                .iter()
                .map(|t| if let Target::Class(c) = t { *c } else { 0 })
                .collect();
            if mix.is_mixed() {
                let k = logits.dims()[1];
                let soft = mix.mix_targets(&smoothed_one_hot(&classes, k, smoothing, device)?)?;
                return soft_target_loss(logits, &soft);
            }
            single_label_loss(
                &AsymmetricSingleLabelLoss::cross_entropy(smoothing),
                logits,
                &classes,
            )
        }
        TaskKind::MultiLabel | TaskKind::Detection => {
            let k = logits.dims()[1];
            let flat: Vec<f32> = targets
                .iter()
                .flat_map(|t| match t {
                    Target::MultiHot(v) => v.to_vec(),
                    Target::Class(_) | Target::Boxes(_) => vec![0.0; k],
                })
                .collect();
            let y = mix.mix_targets(&Tensor::from_vec(flat, (targets.len(), k), device)?)?;
            let m = cfg.multilabel_loss;
            let loss = AsymmetricLoss {
                gamma_neg: m.gamma_neg,
                gamma_pos: m.gamma_pos,
                clip: m.clip,
                ..AsymmetricLoss::default()
            };
            asymmetric_loss(&loss, logits, &y)
        }
    }
}
