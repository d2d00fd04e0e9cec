//! The standard multi-label table: per-class precision, recall and F1 and their class means
//! (CP, CR, CF1), and the overall ones (OP, OR, OF1), for predictions made by a threshold or by
//! taking each row's top k (as in the ASL repository's validation and the ML-GCN papers).

use super::average_precision::ScoreTable;
use super::top_k::top_k;

/// How scores become positive predictions.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// `score > threshold` (strict), one threshold for all classes.
    Threshold(f32),
    /// `score > threshold[k]` per class (calibrated thresholds).
    PerClass(Vec<f32>),
    /// The `k` best classes of each row (ties: lower class index first).
    TopK(usize),
}

/// The table, all values in percent.
#[derive(Debug, Clone, PartialEq)]
pub struct MultilabelTable {
    /// Mean per-class precision.
    pub cp: f64,
    /// Mean per-class recall.
    pub cr: f64,
    /// Mean per-class F1 (the ASL repository's definition).
    pub cf1: f64,
    /// `2·CP·CR / (CP + CR)` (the ML-GCN papers' definition of CF1).
    pub cf1_harmonic: f64,
    /// Overall precision `Σtp / Σ(tp + fp)`.
    pub op: f64,
    /// Overall recall `Σtp / Σ(tp + fn)`.
    pub or: f64,
    /// `2·OP·OR / (OP + OR)`.
    pub of1: f64,
    /// Per-class precision (fraction), 0 where no true positive.
    pub precision: Vec<f64>,
    /// Per-class recall (fraction), 0 where no true positive.
    pub recall: Vec<f64>,
    /// Per-class F1 (fraction).
    pub f1: Vec<f64>,
}

fn harmonic(a: f64, b: f64) -> f64 {
    if a + b > 0.0 {
        2.0 * a * b / (a + b)
    } else {
        0.0
    }
}

/// Computes the table for `decision` over a score table.
pub fn multilabel_table(table: &ScoreTable<'_>, decision: &Decision) -> MultilabelTable {
    let (rows, classes) = (table.rows(), table.classes);
    let mut tp = vec![0usize; classes];
    let mut fp = vec![0usize; classes];
    let mut fn_ = vec![0usize; classes];
    for r in 0..rows {
        let s = &table.scores[r * classes..(r + 1) * classes];
        let t = &table.targets[r * classes..(r + 1) * classes];
        let mut predicted = vec![false; classes];
        match decision {
            Decision::Threshold(th) => predicted.iter_mut().zip(s).for_each(|(p, v)| *p = v > th),
            Decision::PerClass(th) => predicted
                .iter_mut()
                .zip(s.iter().zip(th))
                .for_each(|(p, (v, th))| *p = v > th),
            Decision::TopK(k) => top_k(s, *k).iter().for_each(|(c, _)| predicted[*c] = true),
        }
        for k in 0..classes {
            match (predicted[k], t[k] == 1.0) {
                (true, true) => tp[k] += 1,
                (true, false) => fp[k] += 1,
                (false, true) => fn_[k] += 1,
                (false, false) => {}
            }
        }
    }
    let ratio = |a: usize, b: usize| if a == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision: Vec<f64> = (0..classes).map(|k| ratio(tp[k], tp[k] + fp[k])).collect();
    let recall: Vec<f64> = (0..classes).map(|k| ratio(tp[k], tp[k] + fn_[k])).collect();
    let f1: Vec<f64> = precision
        .iter()
        .zip(&recall)
        .map(|(p, r)| harmonic(*p, *r))
        .collect();
    let mean = |v: &[f64]| 100.0 * v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (cp, cr) = (mean(&precision), mean(&recall));
    let (stp, sfp, sfn) = (
        tp.iter().sum::<usize>(),
        fp.iter().sum::<usize>(),
        fn_.iter().sum::<usize>(),
    );
    let op = 100.0 * ratio(stp, stp + sfp);
    let or = 100.0 * ratio(stp, stp + sfn);
    MultilabelTable {
        cp,
        cr,
        cf1: mean(&f1),
        cf1_harmonic: harmonic(cp, cr),
        op,
        or,
        of1: harmonic(op, or),
        precision,
        recall,
        f1,
    }
}
