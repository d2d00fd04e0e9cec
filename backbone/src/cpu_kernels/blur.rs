//! The anti-aliasing blur as a direct kernel: `[1,2,1]ᵀ[1,2,1]/16`, reflect padding 1, stride 2,
//! per channel plane; and its gradient.

use rayon::prelude::*;

/// Taps of the separable filter.
const TAPS: [f32; 3] = [0.25, 0.5, 0.25];

/// Reflect index for padding 1: −1 → 1, n → n − 2.
#[inline]
fn reflect(i: isize, n: usize) -> usize {
    if i < 0 {
        (-i) as usize
    } else if i as usize >= n {
        2 * n - 2 - i as usize
    } else {
        i as usize
    }
}

/// Output side for an input side: `⌈n / 2⌉`.
pub fn blurred_side(n: usize) -> usize {
    n.div_ceil(2)
}

/// `out (P, ⌈H/2⌉, ⌈W/2⌉)` from `x (P, H, W)`, where P = batch · channels planes; H, W ≥ 2.
pub fn blur_forward(x: &[f32], planes: usize, h: usize, w: usize, out: &mut [f32]) {
    let (ho, wo) = (blurred_side(h), blurred_side(w));
    assert!(h >= 2 && w >= 2);
    assert_eq!(x.len(), planes * h * w);
    assert_eq!(out.len(), planes * ho * wo);
    out.par_chunks_mut(ho * wo)
        .zip(x.par_chunks(h * w))
        .for_each(|(dst, src)| {
            // Horizontal pass at the output columns for every input row, then vertical.
            let mut rows = vec![0.0f32; h * wo];
            for y in 0..h {
                let line = &src[y * w..(y + 1) * w];
                let target = &mut rows[y * wo..(y + 1) * wo];
                for (xo, t) in target.iter_mut().enumerate() {
                    let c = 2 * xo as isize;
                    *t = TAPS[0] * line[reflect(c - 1, w)]
                        + TAPS[1] * line[c as usize]
                        + TAPS[2] * line[reflect(c + 1, w)];
                }
            }
            for yo in 0..ho {
                let c = 2 * yo as isize;
                let (a, b, d) = (reflect(c - 1, h), c as usize, reflect(c + 1, h));
                let out_row = &mut dst[yo * wo..(yo + 1) * wo];
                for (xo, o) in out_row.iter_mut().enumerate() {
                    *o = TAPS[0] * rows[a * wo + xo]
                        + TAPS[1] * rows[b * wo + xo]
                        + TAPS[2] * rows[d * wo + xo];
                }
            }
        });
}

/// The gradient of [`blur_forward`]: scatters `g_out (P, ⌈H/2⌉, ⌈W/2⌉)` back to `(P, H, W)`.
pub fn blur_backward(g_out: &[f32], planes: usize, h: usize, w: usize, g_in: &mut [f32]) {
    let (ho, wo) = (blurred_side(h), blurred_side(w));
    assert_eq!(g_out.len(), planes * ho * wo);
    assert_eq!(g_in.len(), planes * h * w);
    g_in.par_chunks_mut(h * w)
        .zip(g_out.par_chunks(ho * wo))
        .for_each(|(dst, src)| {
            dst.fill(0.0);
            // Transpose of the vertical pass, then of the horizontal one.
            let mut rows = vec![0.0f32; h * wo];
            for yo in 0..ho {
                let c = 2 * yo as isize;
                let targets = [reflect(c - 1, h), c as usize, reflect(c + 1, h)];
                for (tap, &y) in TAPS.iter().zip(&targets) {
                    for xo in 0..wo {
                        rows[y * wo + xo] += tap * src[yo * wo + xo];
                    }
                }
            }
            for y in 0..h {
                let line = &mut dst[y * w..(y + 1) * w];
                for xo in 0..wo {
                    let v = rows[y * wo + xo];
                    let c = 2 * xo as isize;
                    line[reflect(c - 1, w)] += TAPS[0] * v;
                    line[c as usize] += TAPS[1] * v;
                    line[reflect(c + 1, w)] += TAPS[2] * v;
                }
            }
        });
}
