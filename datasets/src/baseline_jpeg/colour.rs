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
            upsample_horizontally(vertical, out);
        }
    }
}

/// Doubles a row given in quarters (`t` = 4× the sample scale) into `out` with the triangle
/// filter: output `2i` is `(3·t[i] + t[i − 1]) / 16`, output `2i + 1` is `(3·t[i] + t[i + 1]) / 16`,
/// rounded, with the row's end samples standing in for their missing neighbours.
fn upsample_horizontally(t: &[u16], out: &mut [u8]) {
    let last = t.len() - 1;
    let at = |i: usize| t[i.min(last)];
    let sample = |centre: u16, neighbour: u16| ((3 * centre + neighbour + 8) >> 4) as u8;
    let pairs = out.len().div_ceil(2);
    // Interior pairs 1..last have both neighbours: straight-line code the compiler vectorises.
    let interior = last.min(pairs).max(1);
    let after_first = out.len().min(2);
    for (pair, window) in out[after_first..]
        .chunks_exact_mut(2)
        .zip(t.windows(3))
        .take(interior - 1)
    {
        pair[0] = sample(window[1], window[0]);
        pair[1] = sample(window[1], window[2]);
    }
    for i in std::iter::once(0).chain(interior..pairs) {
        out[2 * i] = sample(at(i), at(i.saturating_sub(1)));
        if let Some(odd) = out.get_mut(2 * i + 1) {
            *odd = sample(at(i), at(i + 1));
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
        let [luma, blue, red] = &rows;
        for (((pixel, &y), &cb), &cr) in out.chunks_exact_mut(3).zip(luma).zip(blue).zip(red) {
            pixel.copy_from_slice(&ycbcr_to_rgb(y, cb, cr));
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

    /// The straight interior loop and the clamped edges together equal the filter written out
    /// sample by sample, for every row length and output length (odd ones included).
    #[test]
    fn horizontal_doubling_equals_the_filter_at_every_length() {
        for width in 1..12usize {
            let t: Vec<u16> = (0..width).map(|i| ((i * 397 + 11) % 1021) as u16).collect();
            for out_len in (2 * width).saturating_sub(1).max(1)..=2 * width {
                let mut out = vec![0u8; out_len];
                upsample_horizontally(&t, &mut out);
                let at = |i: isize| t[i.clamp(0, width as isize - 1) as usize];
                let want: Vec<u8> = (0..out_len as isize)
                    .map(|x| {
                        let i = x / 2;
                        let neighbour = if x % 2 == 0 { at(i - 1) } else { at(i + 1) };
                        ((3 * at(i) + neighbour + 8) >> 4) as u8
                    })
                    .collect();
                assert_eq!(out, want, "width {width}, output {out_len}");
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
