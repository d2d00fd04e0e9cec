//! From head outputs to detections: per-level score threshold and top-k, boxes decoded from
//! their locations, class-wise NMS, and the best `max_detections` per image.

use candle_core::DType;

use super::box_geometry::{BoxXyxy, decode_ltrb};
use super::config::DetectorConfig;
use super::fcos_head::FcosOutput;
use super::nms::class_wise_nms;
use crate::error::Result;

/// One detected object, in network-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxDetection {
    /// Class index.
    pub class: usize,
    /// `sqrt(class probability · centerness)`.
    pub score: f32,
    /// `[x1, y1, x2, y2]`, clipped to the input.
    pub bbox: BoxXyxy,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Detections of every image of a batch, best first. `input_size` is `(width, height)` of the
/// network input; boxes are clipped to it.
pub fn decode_detections(
    output: &FcosOutput,
    config: &DetectorConfig,
    input_size: (usize, usize),
) -> Result<Vec<Vec<BoxDetection>>> {
    let batch = output
        .levels
        .first()
        .map_or(Ok(0), |l| l.class_logits.dims4().map(|d| d.0))?;
    let k = config.num_classes;
    let (w_max, h_max) = (input_size.0 as f32, input_size.1 as f32);
    // Every level's outputs on the CPU, once.
    let mut host = Vec::with_capacity(output.levels.len());
    for level in &output.levels {
        let to_vec = |t: &candle_core::Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        };
        host.push((
            level.shape,
            to_vec(&level.class_logits)?,
            to_vec(&level.ltrb)?,
            to_vec(&level.centerness_logits)?,
        ));
    }
    let mut all = Vec::with_capacity(batch);
    for b in 0..batch {
        let mut candidates: Vec<BoxDetection> = Vec::new();
        for (shape, cls, ltrb, ctr) in &host {
            let hw = shape.len();
            let mut level: Vec<(f32, usize, usize)> = Vec::new();
            for c in 0..k {
                for loc in 0..hw {
                    let p = sigmoid(cls[(b * k + c) * hw + loc]);
                    if p > config.score_threshold {
                        let centre = sigmoid(ctr[b * hw + loc]);
                        level.push(((p * centre).sqrt(), c, loc));
                    }
                }
            }
            level.sort_by(|x, y| y.0.total_cmp(&x.0).then((x.1, x.2).cmp(&(y.1, y.2))));
            level.truncate(config.pre_nms_top_k);
            for (score, class, loc) in level {
                let (x, y) = shape.location(loc / shape.width, loc % shape.width);
                let d = [0, 1, 2, 3].map(|j| ltrb[(b * 4 + j) * hw + loc]);
                let raw = decode_ltrb(x, y, &d);
                let bbox = [
                    raw[0].clamp(0.0, w_max),
                    raw[1].clamp(0.0, h_max),
                    raw[2].clamp(0.0, w_max),
                    raw[3].clamp(0.0, h_max),
                ];
                if bbox[2] > bbox[0] && bbox[3] > bbox[1] {
                    candidates.push(BoxDetection { class, score, bbox });
                }
            }
        }
        let boxes: Vec<BoxXyxy> = candidates.iter().map(|d| d.bbox).collect();
        let scores: Vec<f32> = candidates.iter().map(|d| d.score).collect();
        let classes: Vec<usize> = candidates.iter().map(|d| d.class).collect();
        let keep = class_wise_nms(&boxes, &scores, &classes, config.nms_iou);
        all.push(
            keep.into_iter()
                .take(config.max_detections)
                .map(|i| candidates[i])
                .collect(),
        );
    }
    Ok(all)
}
