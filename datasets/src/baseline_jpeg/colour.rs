//! From decoded component planes to interleaved pixels: chroma upsampling with the triangle
//! ("fancy") filter libjpeg uses, and the JFIF YCbCr → RGB conversion.

/// One component's samples at the decode scale.
pub(super) struct Plane {
    /// Rows of `stride` samples, whole blocks (the last MCU's padding included).
    pub(super) samples: Vec<u8>,
    pub(super) stride: usize,
    /// How many samples of each row and how many rows belong to the image.
    pub(super) width: usize,
    pub(super) height: usize,
    /// Output pixels per sample horizontally and vertically (1 or 2).
    pub(super) factor: (usize, usize),
}

impl Plane {
    /// Row `y` of the output grid, upsampled to `out.len()` samples. `scratch` holds at least
    /// `self.width` values.
    fn upsampled_row(&self, y: usize, out: &mut [u8], scratch: &mut [u16]) {
        let row = |r: usize| &self.samples[r * self.stride..][..self.width];
        // Vertical pass, in quarters: 4·s for full-height planes, 3·near + far for half height
        // (the nearer of the two source rows weighs three times the farther one).
        let vertical = &mut scratch[..self.width];
        if self.factor.1 == 1 {
            let near = row(y.min(self.height - 1));
            for (t, &s) in vertical.iter_mut().zip(near) {
                *t = 4 * u16::from(s);
            }
        } else {
            let near_index = (y / 2).min(self.height - 1);
            let far_index = if y % 2 == 1 {
                (near_index + 1).min(self.height - 1)
            } else {
                near_index.saturating_sub(1)
            };
            let (near, far) = (row(near_index), row(far_index));
            for ((t, &n), &f) in vertical.iter_mut().zip(near).zip(far) {
                *t = 3 * u16::from(n) + u16::from(f);
            }
        }
        if self.factor.0 == 1 {
            for (o, &t) in out.iter_mut().zip(vertical.iter()) {
                *o = ((t + 2) >> 2) as u8;
            }
        } else {
            let last = self.width - 1;
            for (x, o) in out.iter_mut().enumerate() {
                let i = (x / 2).min(last);
                let neighbour = if x % 2 == 1 {
                    (i + 1).min(last)
                } else {
                    i.saturating_sub(1)
                };
                *o = ((3 * vertical[i] + vertical[neighbour] + 8) >> 4) as u8;
            }
        }
    }
}

/// The grey image `width × height` (one byte per pixel) from a lone plane.
pub(super) fn grey(plane: &Plane, width: usize, height: usize) -> Vec<u8> {
    let mut pixels = Vec::with_capacity(width * height);
    for y in 0..height {
        pixels.extend_from_slice(&plane.samples[y * plane.stride..][..width]);
    }
    pixels
}

/// The RGB image `width × height` (three bytes per pixel) from Y, Cb and Cr planes.
pub(super) fn rgb(planes: &[Plane; 3], width: usize, height: usize) -> Vec<u8> {
    let mut pixels = vec![0u8; width * height * 3];
    let widest = planes.iter().map(|p| p.width).max().unwrap_or(0);
    let mut scratch = vec![0u16; widest];
    let mut rows = [vec![0u8; width], vec![0u8; width], vec![0u8; width]];
    for (y, out) in pixels.chunks_exact_mut(width * 3).enumerate() {
        for (plane, row) in planes.iter().zip(rows.iter_mut()) {
            plane.upsampled_row(y, row, &mut scratch);
        }
        for (x, pixel) in out.chunks_exact_mut(3).enumerate() {
            pixel.copy_from_slice(&ycbcr_to_rgb(rows[0][x], rows[1][x], rows[2][x]));
        }
    }
    pixels
}

/// JFIF's conversion (T.871 section 7) in 16-bit fixed point, rounded to nearest.
#[inline]
fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    const HALF: i32 = 1 << 15;
    let (y, cb, cr) = (i32::from(y), i32::from(cb) - 128, i32::from(cr) - 128);
    let r = y + ((91_881 * cr + HALF) >> 16);
    let g = y + ((-22_554 * cb - 46_802 * cr + HALF) >> 16);
    let b = y + ((116_130 * cb + HALF) >> 16);
    [r, g, b].map(|v| v.clamp(0, 255) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conversion_matches_the_jfif_formulas() {
        for (y, cb, cr) in [
            (0u8, 0u8, 0u8),
            (255, 255, 255),
            (128, 128, 128),
            (76, 85, 255),
            (30, 200, 60),
        ] {
            let (fy, fb, fr) = (f64::from(y), f64::from(cb) - 128.0, f64::from(cr) - 128.0);
            let want = [
                fy + 1.402 * fr,
                fy - 0.344_136 * fb - 0.714_136 * fr,
                fy + 1.772 * fb,
            ]
            .map(|v| v.clamp(0.0, 255.0));
            let got = ycbcr_to_rgb(y, cb, cr);
            for (g, w) in got.iter().zip(want) {
                assert!(
                    (f64::from(*g) - w).abs() <= 0.5 + 1e-9,
                    "{got:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn half_size_planes_interpolate_with_three_to_one_weights() {
        // A 2×2 plane upsampled to 4×4: row 0 of the output is near row 0, far row 0 (edge).
        let plane = Plane {
            samples: vec![0, 100, 200, 40],
            stride: 2,
            width: 2,
            height: 2,
            factor: (2, 2),
        };
        let mut scratch = [0u16; 2];
        let mut out = [0u8; 4];
        plane.upsampled_row(0, &mut out, &mut scratch);
        // Vertical: 4·[0, 100]; horizontal: edge, (3·0 + 100)/4, (3·100 + 0)/4, edge.
        assert_eq!(out, [0, 25, 75, 100]);
        plane.upsampled_row(1, &mut out, &mut scratch);
        // Vertical: 3·[0, 100] + [200, 40] = [200, 340] (quarters: 50, 85).
        // Horizontal: (4·200 + 8) >> 4 = 50, (3·200 + 340 + 8) >> 4 = 59, (3·340 + 200 + 8) >> 4 = 76, 85.
        assert_eq!(out, [50, 59, 76, 85]);
    }
}
