//! The multi-label evaluation report: mAP, per-class AP, and the precision/recall/F1 table at a
//! threshold and at top-k, as text for people and JSON for machines.

use serde::Serialize;
use tresnet_heads::metrics::{
    Decision, MultilabelTable, ScoreTable, asl_average_precision, multilabel_table,
    tie_aware_average_precision,
};

/// One class's numbers (AP and the threshold decision's P/R/F1, all in percent).
#[derive(Debug, Clone, Serialize)]
pub struct ClassRow {
    /// Class name.
    pub name: String,
    /// Positives among the evaluated images.
    pub positives: usize,
    /// ASL-style AP.
    pub ap: f64,
    /// Precision at the threshold.
    pub precision: f64,
    /// Recall at the threshold.
    pub recall: f64,
    /// F1 at the threshold.
    pub f1: f64,
}

/// CP/CR/CF1/OP/OR/OF1 in percent.
#[derive(Debug, Clone, Serialize)]
pub struct TableSummary {
    /// How predictions were made (`score > 0.8`, `per-class thresholds`, `top-3`).
    pub decision: String,
    /// Mean per-class precision.
    pub cp: f64,
    /// Mean per-class recall.
    pub cr: f64,
    /// Mean per-class F1.
    pub cf1: f64,
    /// Overall precision.
    pub op: f64,
    /// Overall recall.
    pub or: f64,
    /// Overall F1.
    pub of1: f64,
}

impl TableSummary {
    fn new(decision: String, t: &MultilabelTable) -> Self {
        Self {
            decision,
            cp: t.cp,
            cr: t.cr,
            cf1: t.cf1,
            op: t.op,
            or: t.or,
            of1: t.of1,
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct MultilabelReport {
    /// Images evaluated.
    pub images: usize,
    /// ASL-style mAP in percent (the COCO multi-label protocol; ties ranked by image order).
    #[serde(rename = "mAP")]
    pub map: f64,
    /// scikit-learn's tie-aware mAP in percent.
    pub map_tie_aware: f64,
    /// Tables for each decision rule.
    pub tables: Vec<TableSummary>,
    /// Per-class rows (at the first decision rule).
    pub per_class: Vec<ClassRow>,
}

impl MultilabelReport {
    /// Computes the report; `decisions` are evaluated in order (the first one fills `per_class`).
    pub fn compute(
        table: &ScoreTable<'_>,
        names: &[String],
        decisions: &[(String, Decision)],
    ) -> Self {
        let ap = table.per_class(asl_average_precision);
        let tie_aware = table.per_class(tie_aware_average_precision);
        let mean = |v: &[f64]| 100.0 * v.iter().sum::<f64>() / v.len().max(1) as f64;
        let computed: Vec<(String, MultilabelTable)> = decisions
            .iter()
            .map(|(label, d)| (label.clone(), multilabel_table(table, d)))
            .collect();
        let first = &computed[0].1;
        let per_class = (0..table.classes)
            .map(|k| ClassRow {
                name: names
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| format!("class_{k}")),
                positives: table.column(k).1.iter().filter(|t| **t == 1.0).count(),
                ap: 100.0 * ap[k],
                precision: 100.0 * first.precision[k],
                recall: 100.0 * first.recall[k],
                f1: 100.0 * first.f1[k],
            })
            .collect();
        Self {
            images: table.rows(),
            map: mean(&ap),
            map_tie_aware: mean(&tie_aware),
            tables: computed
                .iter()
                .map(|(l, t)| TableSummary::new(l.clone(), t))
                .collect(),
            per_class,
        }
    }

    /// A fixed-width text rendering.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "images: {}\nmAP: {:.2}  (tie-aware {:.2})\n\n",
            self.images, self.map, self.map_tie_aware
        ));
        out.push_str(&format!(
            "{:<24} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}\n",
            "decision", "CP", "CR", "CF1", "OP", "OR", "OF1"
        ));
        for t in &self.tables {
            out.push_str(&format!(
                "{:<24} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2}\n",
                t.decision, t.cp, t.cr, t.cf1, t.op, t.or, t.of1
            ));
        }
        out.push_str(&format!(
            "\n{:<24} {:>9} {:>7} {:>7} {:>7} {:>7}\n",
            "class", "positives", "AP", "P", "R", "F1"
        ));
        for r in &self.per_class {
            out.push_str(&format!(
                "{:<24} {:>9} {:>7.2} {:>7.2} {:>7.2} {:>7.2}\n",
                r.name, r.positives, r.ap, r.precision, r.recall, r.f1
            ));
        }
        out
    }
}
