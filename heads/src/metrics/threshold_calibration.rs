//! Per-class thresholds that maximise F1 on a validation set, for tagging.

use super::average_precision::ScoreTable;

/// One class's calibrated threshold and the F1 it reaches on the data it was fitted on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibratedThreshold {
    /// Predict the class when `score > threshold`.
    pub threshold: f32,
    /// F1 at that threshold (fraction).
    pub f1: f64,
}

/// For each class, the threshold maximising F1 of `score > threshold`. Candidates sit midway
/// between consecutive distinct scores (and just below the lowest); among equally good ones the
/// highest threshold wins (fewest predictions). A class without positives gets its highest score
/// as threshold (never predicted on this data) and F1 0.
pub fn calibrate_thresholds(table: &ScoreTable<'_>) -> Vec<CalibratedThreshold> {
    (0..table.classes)
        .map(|k| {
            let (scores, targets) = table.column(k);
            calibrate_one(&scores, &targets)
        })
        .collect()
}

fn calibrate_one(scores: &[f32], targets: &[f32]) -> CalibratedThreshold {
    let total_pos = targets.iter().filter(|t| **t == 1.0).count();
    let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if total_pos == 0 || scores.is_empty() {
        return CalibratedThreshold {
            threshold: top,
            f1: 0.0,
        };
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut best = CalibratedThreshold {
        threshold: top,
        f1: 0.0,
    };
    let (mut tp, mut predicted) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let level = scores[order[i]];
        while i < order.len() && scores[order[i]] == level {
            tp += usize::from(targets[order[i]] == 1.0);
            predicted += 1;
            i += 1;
        }
        // Everything scoring >= level is predicted: the threshold sits below `level`.
        let threshold = match order.get(i) {
            Some(&next) => level / 2.0 + scores[next] / 2.0,
            None => level - (level.abs() * 1e-6).max(1e-6),
        };
        let f1 = 2.0 * tp as f64 / (predicted + total_pos) as f64;
        if f1 > best.f1 {
            best = CalibratedThreshold { threshold, f1 };
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_f1_optimum_on_a_hand_made_case() {
        // Scores 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.6 (pos), 0.2 (neg).
        // Cut below 0.9: F1 2/4; below 0.8: 2/5; below 0.7: 4/6; below 0.6: 6/7 (best); below 0.2: 6/8.
        let scores = [0.9, 0.8, 0.7, 0.6, 0.2];
        let targets = [1.0, 0.0, 1.0, 1.0, 0.0];
        let table = ScoreTable::new(&scores, &targets, 1).unwrap();
        let t = calibrate_thresholds(&table)[0];
        assert!((t.f1 - 6.0 / 7.0).abs() < 1e-12);
        assert!((t.threshold - 0.4).abs() < 1e-6, "{}", t.threshold);
        let none = ScoreTable::new(&[0.3, 0.5], &[0.0, 0.0], 1).unwrap();
        assert_eq!(
            calibrate_thresholds(&none)[0],
            CalibratedThreshold {
                threshold: 0.5,
                f1: 0.0
            }
        );
    }
}
