//! COCO box evaluation (pycocotools' `COCOeval(iouType='bbox')`), through the `hotcoco` crate,
//! which reproduces pycocotools bit for bit; this module keeps its types out of our API.

use std::path::Path;

use hotcoco::params::IouType;
use hotcoco::types::Annotation;
use hotcoco::{COCO, COCOeval};

use crate::error::{HeadsError, Result};

/// The names of the 12 summary statistics, in pycocotools' order.
pub const COCO_STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

/// One detection: COCO results-file fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// The image's COCO id.
    pub image_id: u64,
    /// The category's COCO id.
    pub category_id: u64,
    /// `[x, y, width, height]` in pixels of the original image.
    pub bbox_xywh: [f64; 4],
    /// Confidence.
    pub score: f64,
}

/// AP/AR of one category (−1 where undefined, e.g. a category without ground truth).
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryResult {
    /// COCO category id.
    pub category_id: u64,
    /// Category name.
    pub name: String,
    /// AP @[0.50:0.95], all areas, 100 detections.
    pub ap: f64,
    /// AP @0.50.
    pub ap50: f64,
    /// AP @0.75.
    pub ap75: f64,
    /// AR @[0.50:0.95], 100 detections.
    pub ar100: f64,
}

/// The outcome of a box evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxEvaluation {
    /// The 12 statistics ([`COCO_STAT_NAMES`]), pycocotools' `stats`.
    pub stats: [f64; 12],
    /// Per-category AP/AR in ground-truth category order.
    pub per_category: Vec<CategoryResult>,
    /// pycocotools' printed summary, line by line.
    pub summary: Vec<String>,
    /// Non-fatal problems met while loading.
    pub warnings: Vec<String>,
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> HeadsError {
    HeadsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Evaluates a COCO results json (`[{image_id, category_id, bbox, score}, …]`) against an
/// instances file.
pub fn evaluate_box_results_file(ground_truth: &Path, results: &Path) -> Result<BoxEvaluation> {
    let gt = COCO::new(ground_truth).map_err(|e| file_error(ground_truth, e))?;
    let dt = gt.load_res(results).map_err(|e| file_error(results, e))?;
    run(gt, dt, ground_truth)
}

/// Evaluates detections held in memory against an instances file.
pub fn evaluate_boxes(ground_truth: &Path, detections: &[Detection]) -> Result<BoxEvaluation> {
    let gt = COCO::new(ground_truth).map_err(|e| file_error(ground_truth, e))?;
    let anns: Vec<Annotation> = detections
        .iter()
        .map(|d| Annotation {
            image_id: d.image_id,
            category_id: d.category_id,
            bbox: Some(d.bbox_xywh),
            score: Some(d.score),
            ..Annotation::default()
        })
        .collect();
    let dt = gt
        .load_res_anns(anns)
        .map_err(|e| file_error(ground_truth, format!("detections: {e}")))?;
    run(gt, dt, ground_truth)
}

fn run(gt: COCO, dt: COCO, ground_truth: &Path) -> Result<BoxEvaluation> {
    let mut warnings: Vec<String> = gt.load_warnings().to_vec();
    warnings.extend(dt.load_warnings().iter().cloned());
    let categories: Vec<(u64, String)> = gt
        .dataset
        .categories
        .iter()
        .map(|c| (c.id, c.name.clone()))
        .collect();
    let mut eval = COCOeval::new(gt, dt, IouType::Bbox);
    eval.evaluate().map_err(|e| file_error(ground_truth, e))?;
    eval.accumulate();
    let summary = eval.summarize_lines();
    let stats: [f64; 12] = eval
        .stats()
        .and_then(|s| s.get(..12))
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| HeadsError::Invalid("COCO evaluation produced no statistics".into()))?;
    let acc = eval
        .accumulated()
        .ok_or_else(|| HeadsError::Invalid("COCO evaluation did not accumulate".into()))?;
    let shape = acc.shape;
    // area index 0 = all, max-dets index = last (100); IoU index 0 = 0.50, 5 = 0.75.
    let (area, max_det) = (0, shape.m - 1);
    let mean_valid = |values: &mut dyn Iterator<Item = f64>| {
        let valid: Vec<f64> = values.filter(|v| *v > -1.0).collect();
        if valid.is_empty() {
            -1.0
        } else {
            valid.iter().sum::<f64>() / valid.len() as f64
        }
    };
    let per_category = acc
        .cat_ids
        .iter()
        .enumerate()
        .map(|(k, &id)| {
            let precision_at = |t: usize| -> f64 {
                mean_valid(
                    &mut (0..shape.r)
                        .map(|r| acc.precision[acc.precision_idx(t, r, k, area, max_det)]),
                )
            };
            CategoryResult {
                category_id: id,
                name: categories
                    .iter()
                    .find(|c| c.0 == id)
                    .map(|c| c.1.clone())
                    .unwrap_or_default(),
                ap: mean_valid(
                    &mut (0..shape.t)
                        .flat_map(|t| (0..shape.r).map(move |r| (t, r)))
                        .map(|(t, r)| acc.precision[acc.precision_idx(t, r, k, area, max_det)]),
                ),
                ap50: precision_at(0),
                ap75: precision_at(5.min(shape.t - 1)),
                ar100: mean_valid(
                    &mut (0..shape.t).map(|t| acc.recall[acc.recall_idx(t, k, area, max_det)]),
                ),
            }
        })
        .collect();
    Ok(BoxEvaluation {
        stats,
        per_category,
        summary,
        warnings,
    })
}
