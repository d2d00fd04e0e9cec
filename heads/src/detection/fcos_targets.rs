//! FCOS target assignment: which object (if any) each feature-map location must predict, its
//! side distances and its centerness, over all levels at once.

use super::box_geometry::{BoxXyxy, box_area, centerness, encode_ltrb};

/// One level of the pyramid: its map size and stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelShape {
    /// Rows of the map.
    pub height: usize,
    /// Columns of the map.
    pub width: usize,
    /// Input pixels per map cell.
    pub stride: usize,
}

impl LevelShape {
    /// Number of locations.
    pub fn len(&self) -> usize {
        self.height * self.width
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Input-pixel coordinates `(x, y)` of location `(row, col)`: the cell's centre,
    /// `col · stride + ⌊stride/2⌋`.
    pub fn location(&self, row: usize, col: usize) -> (f32, f32) {
        let half = (self.stride / 2) as f32;
        (
            (col * self.stride) as f32 + half,
            (row * self.stride) as f32 + half,
        )
    }
}

/// A ground-truth object in network-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroundTruthBox {
    /// Class index.
    pub class: usize,
    /// `[x1, y1, x2, y2]`.
    pub bbox: BoxXyxy,
}

/// Targets of every location of every level, levels in order and each level row-major.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FcosTargets {
    /// The class to predict, `None` for background.
    pub classes: Vec<Option<usize>>,
    /// Side distances `[l, t, r, b]` to the assigned box (zeros for background).
    pub ltrb: Vec<[f32; 4]>,
    /// Centerness of the location in its box (0 for background).
    pub centerness: Vec<f32>,
}

impl FcosTargets {
    /// Number of positive locations.
    pub fn num_positive(&self) -> usize {
        self.classes.iter().filter(|c| c.is_some()).count()
    }
}

/// Assigns objects to locations the FCOS way: a location is a candidate for a box when it lies
/// inside the box (and, with `center_radius > 0`, within `center_radius · stride` of the box
/// centre, clipped to the box), and the largest of its four distances lies in its level's
/// `size_ranges` entry (`low ≤ m ≤ high`). Among several candidates the smallest box wins.
pub fn assign_fcos_targets(
    levels: &[LevelShape],
    size_ranges: &[[f32; 2]],
    center_radius: f32,
    objects: &[GroundTruthBox],
) -> FcosTargets {
    let total: usize = levels.iter().map(LevelShape::len).sum();
    let mut targets = FcosTargets {
        classes: vec![None; total],
        ltrb: vec![[0.0; 4]; total],
        centerness: vec![0.0; total],
    };
    let mut offset = 0;
    for (level, range) in levels.iter().zip(size_ranges) {
        let radius = center_radius * level.stride as f32;
        for row in 0..level.height {
            for col in 0..level.width {
                let (x, y) = level.location(row, col);
                let mut best: Option<(f32, usize, [f32; 4])> = None;
                for (k, object) in objects.iter().enumerate() {
                    let b = &object.bbox;
                    let d = encode_ltrb(x, y, b);
                    if d.iter().any(|&v| v <= 0.0) {
                        continue;
                    }
                    if radius > 0.0 {
                        let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
                        let region = [
                            (cx - radius).max(b[0]),
                            (cy - radius).max(b[1]),
                            (cx + radius).min(b[2]),
                            (cy + radius).min(b[3]),
                        ];
                        if encode_ltrb(x, y, &region).iter().any(|&v| v <= 0.0) {
                            continue;
                        }
                    }
                    let reach = d.iter().copied().fold(f32::MIN, f32::max);
                    if reach < range[0] || reach > range[1] {
                        continue;
                    }
                    let area = box_area(b);
                    if best.is_none_or(|(a, _, _)| area < a) {
                        best = Some((area, k, d));
                    }
                }
                if let Some((_, k, d)) = best {
                    let i = offset + row * level.width + col;
                    targets.classes[i] = Some(objects[k].class);
                    targets.ltrb[i] = d;
                    targets.centerness[i] = centerness(&d);
                }
            }
        }
        offset += level.len();
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(size: usize, stride: usize) -> LevelShape {
        LevelShape {
            height: size,
            width: size,
            stride,
        }
    }

    #[test]
    fn a_box_goes_to_the_level_its_size_range_names_near_its_centre() {
        // 64×64 input: P3 8×8 (stride 8), P4 4×4 (stride 16).
        let levels = [level(8, 8), level(4, 16)];
        let ranges = [[0.0, 16.0], [16.0, f32::INFINITY]];
        let small = GroundTruthBox {
            class: 2,
            bbox: [0.0, 0.0, 16.0, 16.0],
        };
        let t = assign_fcos_targets(&levels, &ranges, 1.5, &[small]);
        // P3 locations are at 4, 12, 20, …: (4,4), (12,4), (4,12), (12,12) lie inside, with
        // largest distance 12 ≤ 16.
        let positives: Vec<usize> = (0..t.classes.len())
            .filter(|&i| t.classes[i].is_some())
            .collect();
        assert_eq!(positives, vec![0, 1, 8, 9]);
        assert_eq!(t.classes[9], Some(2));
        assert_eq!(t.ltrb[9], [12.0, 12.0, 4.0, 4.0]);
        assert!((t.centerness[9] - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(t.centerness[0], t.centerness[9]);
        // A big box lands on P4 only.
        let big = GroundTruthBox {
            class: 0,
            bbox: [0.0, 0.0, 64.0, 64.0],
        };
        let t = assign_fcos_targets(&levels, &ranges, 1.5, &[big]);
        assert!(t.classes[..64].iter().all(Option::is_none));
        // Center sampling: radius 1.5 · 16 = 24 around (32, 32) gives the region (8, 8)–(56, 56);
        // of the P4 locations 8, 24, 40, 56 only 24 and 40 lie strictly inside it.
        let p4: Vec<usize> = (0..16).filter(|&i| t.classes[64 + i].is_some()).collect();
        assert_eq!(p4, vec![5, 6, 9, 10]);
        // Without center sampling every location inside the box is positive.
        let t = assign_fcos_targets(&levels, &ranges, 0.0, &[big]);
        assert_eq!(t.num_positive(), 16);
    }

    #[test]
    fn the_smallest_box_wins_where_boxes_overlap() {
        let levels = [level(4, 8)];
        let ranges = [[0.0, f32::INFINITY]];
        let outer = GroundTruthBox {
            class: 0,
            bbox: [0.0, 0.0, 32.0, 32.0],
        };
        let inner = GroundTruthBox {
            class: 1,
            bbox: [8.0, 8.0, 24.0, 24.0],
        };
        let t = assign_fcos_targets(&levels, &ranges, 0.0, &[outer, inner]);
        // Location (12, 12) is in both: the inner box wins.
        assert_eq!(t.classes[5], Some(1));
        assert_eq!(t.classes[0], Some(0));
        assert_eq!(t.num_positive(), 16);
    }
}
