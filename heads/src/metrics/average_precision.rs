//! Average precision per class and its mean, in the two definitions papers use.
//!
//! - [`asl_average_precision`]: the ASL repository's helper (the COCO multi-label protocol): rank
//!   by score, average the precision at each positive's rank, divide by the number of positives
//!   (+1e-8). Tied scores are ranked **by row index, lower first** (a stable descending sort) — the
//!   repository leaves ties to numpy's unstable sort, which no fixed rule reproduces; this rule is
//!   ours, fixed and tested. Classes without positives get AP 0 and still count in the mean.
//! - [`tie_aware_average_precision`]: scikit-learn's `average_precision_score`: equal scores form
//!   one threshold, AP = Σ (Rₙ − Rₙ₋₁)·Pₙ over thresholds; a class without positives gives 0.
//!
//! Positives are targets equal to 1 exactly; everything else is a negative. Sums are in f64.

use rayon::prelude::*;

use crate::error::{HeadsError, Result};

/// Descending-score order with ties broken by lower index first (`total_cmp` order: NaN
/// ranks above +inf, as a positive NaN is the largest value there).
fn ranking(scores: &[f32]) -> Vec<usize> {
    // Sort (descending order key, index) pairs: unique keys, so an unstable sort is exact.
    let mut keyed: Vec<(u32, u32)> = scores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let bits = s.to_bits();
            let ascending = if bits & 0x8000_0000 != 0 {
                !bits
            } else {
                bits | 0x8000_0000
            };
            (!ascending, i as u32)
        })
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, i)| i as usize).collect()
}

/// ASL-repository AP of one class (see the module docs for the tie rule).
pub fn asl_average_precision(scores: &[f32], targets: &[f32]) -> f64 {
    let mut positives = 0usize;
    let mut precision_sum = 0.0;
    for (rank, &i) in ranking(scores).iter().enumerate() {
        if targets[i] == 1.0 {
            positives += 1;
            precision_sum += positives as f64 / (rank + 1) as f64;
        }
    }
    precision_sum / (positives as f64 + 1e-8)
}

/// scikit-learn's tie-aware AP of one class (0 without positives).
pub fn tie_aware_average_precision(scores: &[f32], targets: &[f32]) -> f64 {
    let total_pos = targets.iter().filter(|t| **t == 1.0).count();
    if total_pos == 0 {
        return 0.0;
    }
    let order = ranking(scores);
    let (mut tp, mut fp) = (0usize, 0usize);
    let (mut ap, mut last_recall) = (0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        // One threshold per group of equal scores.
        let level = scores[order[i]];
        while i < order.len() && scores[order[i]] == level {
            if targets[order[i]] == 1.0 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let recall = tp as f64 / total_pos as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - last_recall) * precision;
        last_recall = recall;
    }
    ap
}

/// A score matrix: `rows × classes`, row-major, with targets of the same shape.
#[derive(Debug, Clone, Copy)]
pub struct ScoreTable<'a> {
    /// Scores (probabilities or logits), row-major.
    pub scores: &'a [f32],
    /// Targets, row-major; 1 marks a positive.
    pub targets: &'a [f32],
    /// Number of classes (columns).
    pub classes: usize,
}

impl<'a> ScoreTable<'a> {
    /// Checks the shapes.
    pub fn new(scores: &'a [f32], targets: &'a [f32], classes: usize) -> Result<Self> {
        if classes == 0 || scores.len() != targets.len() || !scores.len().is_multiple_of(classes) {
            return Err(HeadsError::Invalid(format!(
                "{} scores and {} targets do not form rows of {classes} classes",
                scores.len(),
                targets.len()
            )));
        }
        Ok(Self {
            scores,
            targets,
            classes,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.scores.len() / self.classes
    }

    /// Column `k` of scores and targets.
    pub fn column(&self, k: usize) -> (Vec<f32>, Vec<f32>) {
        let rows = self.rows();
        (
            (0..rows)
                .map(|r| self.scores[r * self.classes + k])
                .collect(),
            (0..rows)
                .map(|r| self.targets[r * self.classes + k])
                .collect(),
        )
    }

    /// Per-class AP with `ap` (classes in parallel).
    pub fn per_class(&self, ap: fn(&[f32], &[f32]) -> f64) -> Vec<f64> {
        (0..self.classes)
            .into_par_iter()
            .map(|k| {
                let (s, t) = self.column(k);
                ap(&s, &t)
            })
            .collect()
    }
}

/// The ASL repository's mAP ×100 over every class (an empty table gives 0).
pub fn asl_mean_average_precision(table: &ScoreTable<'_>) -> f64 {
    if table.rows() == 0 {
        return 0.0;
    }
    let per_class = table.per_class(asl_average_precision);
    100.0 * per_class.iter().sum::<f64>() / per_class.len() as f64
}

/// scikit-learn's micro-averaged AP: all (row, class) pairs as one ranking.
pub fn micro_average_precision(table: &ScoreTable<'_>) -> f64 {
    tie_aware_average_precision(table.scores, table.targets)
}
