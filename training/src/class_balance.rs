//! Class-balanced sampling weights for skewed training sets (`balance`): drawn with these
//! weights, every class is seen about equally often per epoch, as PyTorch users get with a
//! `WeightedRandomSampler` over inverse class counts.
//!
//! - Single-label: an image weighs `1 / (images of its class)`.
//! - Multi-label: an image weighs `1 / (images of its rarest label)`; images without a label
//!   weigh `1 / (images without a label)`, as a class of their own.

use crate::data::Target;

/// One weight per target; `None` for detection targets (boxes are not balanced).
pub fn class_balanced_weights(targets: &[&Target], classes: usize) -> Option<Vec<f64>> {
    // Images per class, and (last slot) multi-label images with no label.
    let mut counts = vec![0usize; classes + 1];
    for target in targets {
        match target {
            Target::Class(c) => counts[(*c).min(classes)] += 1,
            Target::MultiHot(hot) => {
                let mut any = false;
                for (c, _) in hot.iter().enumerate().filter(|(_, v)| **v > 0.5) {
                    counts[c.min(classes)] += 1;
                    any = true;
                }
                if !any {
                    counts[classes] += 1;
                }
            }
            Target::Boxes(_) => return None,
        }
    }
    let inverse = |c: usize| 1.0 / counts[c].max(1) as f64;
    Some(
        targets
            .iter()
            .map(|target| match target {
                Target::Class(c) => inverse((*c).min(classes)),
                Target::MultiHot(hot) => hot
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v > 0.5)
                    .map(|(c, _)| inverse(c.min(classes)))
                    .fold(None, |best: Option<f64>, w| {
                        Some(best.map_or(w, |b| b.max(w)))
                    })
                    .unwrap_or_else(|| inverse(classes)),
                Target::Boxes(_) => 0.0,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn single_label_weights_are_inverse_class_counts() {
        let t: Vec<Target> = [0, 0, 0, 1].iter().map(|&c| Target::Class(c)).collect();
        let w = class_balanced_weights(&t.iter().collect::<Vec<_>>(), 2).unwrap();
        assert_eq!(w, vec![1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 1.0]);
        // On a skewed set (90 / 9 / 1 images) every class carries the same total weight.
        let skewed: Vec<Target> = (0..100)
            .map(|i| {
                Target::Class(if i < 90 {
                    0
                } else if i < 99 {
                    1
                } else {
                    2
                })
            })
            .collect();
        let w = class_balanced_weights(&skewed.iter().collect::<Vec<_>>(), 3).unwrap();
        for class in 0..3 {
            let total: f64 = skewed
                .iter()
                .zip(&w)
                .filter(|(t, _)| **t == Target::Class(class))
                .map(|(_, w)| w)
                .sum();
            assert!((total - 1.0).abs() < 1e-12, "class {class}: {total}");
        }
    }

    #[test]
    fn multi_label_images_weigh_as_their_rarest_label() {
        let hot = |v: &[f32]| Target::MultiHot(Arc::from(v));
        let t = [
            hot(&[1.0, 0.0, 0.0]),
            hot(&[1.0, 1.0, 0.0]),
            hot(&[1.0, 0.0, 0.0]),
            hot(&[0.0, 0.0, 0.0]),
        ];
        let w = class_balanced_weights(&t.iter().collect::<Vec<_>>(), 3).unwrap();
        // Label 0 on 3 images, label 1 on 1, one image without a label.
        assert_eq!(w, vec![1.0 / 3.0, 1.0, 1.0 / 3.0, 1.0]);
    }
}
