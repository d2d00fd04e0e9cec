//! The inverse DCT of an 8×8 block evaluated on an N×N grid (N = 1, 2, 4): the 1/8, 1/4 and
//! 1/2 scale decodes. The N lowest frequencies of each axis go through an N-point inverse DCT,
//! which is the 8-point one resampled at N points (T.81 A.3.3 with the factor √(N/8) per axis
//! that keeps the pixel scale).

/// `BASIS_n[x][u] = ½·c(u)·cos((2x + 1)·u·π / 2n)` with `c(0) = 1/√2`, `c(u) = 1` otherwise:
/// sample `x` of an n-point output gets `Σ_u BASIS_n[x][u]·F(u)` from the dequantised
/// coefficients `F` of one axis.
const BASIS_4: [[f32; 4]; 4] = [
    [0.353_553_38, 0.461_939_77, 0.353_553_38, 0.191_341_72],
    [0.353_553_38, 0.191_341_72, -0.353_553_38, -0.461_939_77],
    [0.353_553_38, -0.191_341_72, -0.353_553_38, 0.461_939_77],
    [0.353_553_38, -0.461_939_77, 0.353_553_38, -0.191_341_72],
];
const BASIS_2: [[f32; 2]; 2] = [[0.353_553_38, 0.353_553_38], [0.353_553_38, -0.353_553_38]];

/// One block's quantised coefficients as `decode_block` keeps them: `[v·n + u]` holds vertical
/// frequency `v`, horizontal frequency `u` (n×n of them); index 16 collects the coefficients
/// the reduced transform drops, and the rest is padding that makes `& 31` a valid index.
pub(super) type Coefficients = [i32; 32];

/// Writes the n×n samples (n = 1, 2, 4) of one block to `out` (row stride `stride`, level
/// shifted by 128, rounded and clamped to 0..=255): `block` dequantised with `steps` (the
/// quantiser step of each kept coefficient, same layout) and inverse transformed.
#[inline]
pub(super) fn block_to_samples(
    block: &Coefficients,
    steps: &[f32; 16],
    n: usize,
    out: &mut [u8],
    stride: usize,
) {
    let kept = n * n;
    if n == 1 || block[1..kept].iter().all(|&c| c == 0) {
        // Both axes' DC basis is ½·(1/√2): the flat block is F(0,0)/8.
        let value = to_sample(block[0] as f32 * steps[0] * 0.125);
        for row in out.chunks_mut(stride).take(n) {
            row[..n].fill(value);
        }
        return;
    }
    let mut dequantised = [0f32; 16];
    for ((f, &c), &step) in dequantised.iter_mut().zip(&block[..kept]).zip(steps) {
        *f = c as f32 * step;
    }
    match n {
        2 => grid(&dequantised, &BASIS_2, out, stride),
        _ => grid(&dequantised, &BASIS_4, out, stride),
    }
}

/// The separable n×n inverse transform: rows of coefficients first, then columns.
#[inline]
fn grid<const N: usize>(block: &[f32; 16], basis: &[[f32; N]; N], out: &mut [u8], stride: usize) {
    let mut rows = [[0f32; N]; N];
    for (v, row) in rows.iter_mut().enumerate() {
        let coefficients = &block[v * N..v * N + N];
        for (x, sample) in row.iter_mut().enumerate() {
            *sample = coefficients.iter().zip(&basis[x]).map(|(f, b)| f * b).sum();
        }
    }
    for (y, line) in out.chunks_mut(stride).take(N).enumerate() {
        for (x, sample) in line[..N].iter_mut().enumerate() {
            let value: f32 = (0..N).map(|v| basis[y][v] * rows[v][x]).sum();
            *sample = to_sample(value);
        }
    }
}

/// A level-shifted sample rounded half up and clamped to a byte.
#[inline]
fn to_sample(value: f32) -> u8 {
    (value + 128.5).clamp(0.0, 255.0) as u8
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // the indices are the formulas' x, u, v, y
mod tests {
    use super::*;

    fn basis(n: usize, x: usize, u: usize) -> f64 {
        let c = if u == 0 {
            std::f64::consts::FRAC_1_SQRT_2
        } else {
            1.0
        };
        0.5 * c * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / (2 * n) as f64).cos()
    }

    #[test]
    fn the_basis_tables_are_the_scaled_cosines() {
        for x in 0..4 {
            for u in 0..4 {
                assert!((f64::from(BASIS_4[x][u]) - basis(4, x, u)).abs() < 1e-7);
            }
        }
        for x in 0..2 {
            for u in 0..2 {
                assert!((f64::from(BASIS_2[x][u]) - basis(2, x, u)).abs() < 1e-7);
            }
        }
    }

    /// Each 4-point sample is the full 8-point inverse DCT of the block's low frequencies
    /// evaluated midway between the two pixels it stands for (2x + ½): the 1/2-scale decode.
    #[test]
    fn four_point_samples_are_the_full_transform_at_pixel_pair_centres() {
        let mut coefficients = [[0f64; 4]; 4];
        coefficients[0][0] = 240.0;
        coefficients[0][1] = -60.0;
        coefficients[1][0] = 36.0;
        coefficients[2][3] = 18.0;
        coefficients[3][2] = -22.0;
        // basis(8, ·) at a fractional position: ½·c(u)·cos((2p + 1)·u·π / 16).
        let at = |p: f64, u: usize| {
            let c = if u == 0 {
                std::f64::consts::FRAC_1_SQRT_2
            } else {
                1.0
            };
            0.5 * c * ((2.0 * p + 1.0) * u as f64 * std::f64::consts::PI / 16.0).cos()
        };
        let mut block: Coefficients = [0; 32];
        let mut steps = [0f32; 16];
        for v in 0..4 {
            for u in 0..4 {
                // Quantised value × step 2 = the coefficient.
                block[v * 4 + u] = (coefficients[v][u] / 2.0) as i32;
                steps[v * 4 + u] = 2.0;
            }
        }
        let mut out = [0u8; 16];
        block_to_samples(&block, &steps, 4, &mut out, 4);
        for y in 0..4 {
            for x in 0..4 {
                let (py, px) = (2.0 * y as f64 + 0.5, 2.0 * x as f64 + 0.5);
                let mut value = 128.0;
                for v in 0..4 {
                    for u in 0..4 {
                        value += at(py, v) * at(px, u) * coefficients[v][u];
                    }
                }
                let got = f64::from(out[y * 4 + x]);
                assert!(
                    (got - value).abs() <= 0.5 + 1e-3,
                    "({y},{x}): {got} vs {value}"
                );
            }
        }
        let mut flat = [0u8; 4];
        let dc_only: Coefficients = std::array::from_fn(|i| {
            if i == 0 {
                120
            } else if i == 16 {
                9
            } else {
                0
            }
        });
        block_to_samples(&dc_only, &steps, 2, &mut flat, 2);
        assert_eq!(
            flat, [158; 4],
            "DC 240 / 8 + 128; the dropped coefficients ignored"
        );
    }
}
