//! Axis-aligned boxes `[x1, y1, x2, y2]` and their FCOS encoding as distances from a location
//! to the four sides `[left, top, right, bottom]`.

/// A box `[x1, y1, x2, y2]` in pixels.
pub type BoxXyxy = [f32; 4];

/// Area of a box (0 for an empty or inverted one).
pub fn box_area(b: &BoxXyxy) -> f32 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

/// Intersection over union of two boxes (0 when both are empty).
pub fn box_iou(a: &BoxXyxy, b: &BoxXyxy) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = box_area(a) + box_area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Generalised IoU: IoU minus the share of the smallest enclosing box not covered by the union.
pub fn generalized_iou(a: &BoxXyxy, b: &BoxXyxy) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = box_area(a) + box_area(b) - inter;
    let hull = (a[2].max(b[2]) - a[0].min(b[0])) * (a[3].max(b[3]) - a[1].min(b[1]));
    let iou = if union > 0.0 { inter / union } else { 0.0 };
    if hull > 0.0 {
        iou - (hull - union) / hull
    } else {
        iou
    }
}

/// Distances `[l, t, r, b]` from location `(x, y)` to the sides of `b` (negative outside).
pub fn encode_ltrb(x: f32, y: f32, b: &BoxXyxy) -> [f32; 4] {
    [x - b[0], y - b[1], b[2] - x, b[3] - y]
}

/// The box whose sides lie `[l, t, r, b]` away from location `(x, y)`.
pub fn decode_ltrb(x: f32, y: f32, d: &[f32; 4]) -> BoxXyxy {
    [x - d[0], y - d[1], x + d[2], y + d[3]]
}

/// FCOS centerness of a location inside a box: `sqrt(min(l,r)/max(l,r) · min(t,b)/max(t,b))`,
/// 1 at the centre and 0 on the border.
pub fn centerness(d: &[f32; 4]) -> f32 {
    let lr = d[0].min(d[2]) / d[0].max(d[2]);
    let tb = d[1].min(d[3]) / d[1].max(d[3]);
    (lr * tb).max(0.0).sqrt()
}

/// `[x1, y1, x2, y2]` → COCO's `[x, y, width, height]`.
pub fn xyxy_to_xywh(b: &BoxXyxy) -> [f32; 4] {
    [b[0], b[1], b[2] - b[0], b[3] - b[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_and_giou_of_hand_made_boxes() {
        let a = [0.0, 0.0, 2.0, 2.0];
        let b = [1.0, 1.0, 3.0, 3.0];
        // Intersection 1, union 7, hull 9.
        assert!((box_iou(&a, &b) - 1.0 / 7.0).abs() < 1e-7);
        assert!((generalized_iou(&a, &b) - (1.0 / 7.0 - 2.0 / 9.0)).abs() < 1e-7);
        // Disjoint: IoU 0, GIoU = -(hull - union)/hull = -(9 - 2)/9 … with a = [0,0,1,1], c = [2,2,3,3].
        let c = [0.0, 0.0, 1.0, 1.0];
        let d = [2.0, 2.0, 3.0, 3.0];
        assert_eq!(box_iou(&c, &d), 0.0);
        assert!((generalized_iou(&c, &d) + 7.0 / 9.0).abs() < 1e-7);
        assert!((generalized_iou(&a, &a) - 1.0).abs() < 1e-7);
    }

    #[test]
    fn ltrb_round_trips_and_centerness_is_one_at_the_centre() {
        let b = [10.0, 20.0, 50.0, 40.0];
        let d = encode_ltrb(30.0, 30.0, &b);
        assert_eq!(d, [20.0, 10.0, 20.0, 10.0]);
        assert_eq!(decode_ltrb(30.0, 30.0, &d), b);
        assert!((centerness(&d) - 1.0).abs() < 1e-7);
        // l=10, r=30, t=5, b=15: sqrt(1/3 · 1/3) = 1/3.
        let d = encode_ltrb(20.0, 25.0, &b);
        assert!((centerness(&d) - 1.0 / 3.0).abs() < 1e-6);
    }
}
