//! The weight gradient of a 3×3 stride-1 convolution by F(4×4, 3×3), the adjoint of the forward
//! pass in [`super`]: the forward computes each output tile as `Y = Aᵀ (U ⊙ V) A` with
//! `U = G g Gᵀ` and `V = Bᵀ d B`, so the kernel's gradient is
//!
//! `dg = Gᵀ dU G`, with `dU_ξ = Σ_tiles dM_ξ · V_ξᵀ` (`K × C` for each of the 36 `ξ`) and
//! `dM = A dY Aᵀ` (the output gradient's 4×4 tile taken back to 6×6).
//!
//! Blocks of tiles are taken in order. Each block's input patches and output-gradient tiles are
//! transformed with sixteen channels of one tile per register (so that `V_ξᵀ` comes out as
//! `tiles × C` rows and `dM_ξ` as the `tiles × 8` panels the product kernel of the forward
//! pass broadcasts from), in parallel over tiles; then the 36 products `dU_ξ += dM_ξ · V_ξᵀ`
//! run in parallel over `ξ`: that kernel with the tiles as its inner dimension. At the end `dU`
//! is taken back to 3×3 kernels. This does a quarter of the multiplications of the im2col
//! product, which sums `9·C` columns over every pixel.
//!
//! Deterministic: each `ξ`'s sum runs over the blocks in order in a single task, so the result
//! depends neither on the number of threads nor on their timing.

use std::cell::Cell;

use crate::cpu_kernels::thread_scratch::with_thread_scratch;

use rayon::prelude::*;

use super::super::conv::{ConvGeometry, SendPtr, scratch};
use super::{Grid, LANES, XI, applies};

/// The fewest tiles worth it: with fewer, writing and transforming `dU` (`36·K·C` values)
/// costs more than the multiplications saved (then im2col is faster).
const MIN_TILES: usize = 64;

/// Whether [`conv_backward_weight_winograd`] takes this convolution: the forward conditions,
/// at least [`MIN_TILES`] tiles, and `dU`'s offsets within i32.
pub(in crate::cpu_kernels) fn applies_to_weight_gradient(g: &ConvGeometry) -> bool {
    let padded = |channels: usize| channels.next_multiple_of(LANES);
    applies(g)
        && g.batch * Grid::of(g).per_image() >= MIN_TILES
        && padded(g.out_channels)
            .checked_mul(padded(g.in_channels))
            .is_some_and(|per_xi| per_xi < i32::MAX as usize / XI)
}

/// Tiles per block: as many as keep one `ξ`'s slice of the block (`tiles × (C' + K')` values,
/// reread by the product for every 8 output channels) within a quarter of a MiB, in whole
/// registers, 16 to 512.
fn block_tiles(c_pad: usize, k_pad: usize) -> usize {
    ((256 << 10) / (4 * (c_pad + k_pad)) / LANES * LANES).clamp(LANES, 512)
}

/// `g_w` `(K, C, 3, 3)` = the gradient of the weights, summed over the batch, from the input
/// `x` `(B, C, H, W)` and the output gradient `g_out` `(B, K, H, W)`.
///
/// Panics unless [`applies_to_weight_gradient`] holds for `g` and the lengths match it.
pub(in crate::cpu_kernels) fn conv_backward_weight_winograd(
    x: &[f32],
    g_out: &[f32],
    g: &ConvGeometry,
    g_w: &mut [f32],
) {
    assert!(
        applies_to_weight_gradient(g),
        "winograd: not for this convolution"
    );
    let (c_in, k_out, hw) = (g.in_channels, g.out_channels, g.pixels());
    assert_eq!(x.len(), g.batch * c_in * hw);
    assert_eq!(g_out.len(), g.batch * k_out * hw);
    assert_eq!(g_w.len(), k_out * c_in * 9);
    let tiles = g.batch * Grid::of(g).per_image();
    // Channels padded to whole registers: dU is, for each ξ, a row-major `K' × C'` matrix.
    let (c_pad, k_pad) = (c_in.next_multiple_of(LANES), k_out.next_multiple_of(LANES));
    let per_block = block_tiles(c_pad, k_pad).min(tiles);
    with_thread_scratch(&SCRATCH, |buffers| {
        let (du, v, dm) = buffers;
        let du = scratch(du, XI * k_pad * c_pad);
        let v = scratch(v, XI * per_block * c_pad);
        let dm = scratch(dm, XI * per_block * k_pad);
        for first in (0..tiles).step_by(per_block) {
            let count = per_block.min(tiles - first);
            transform_block(x, g_out, g, first, count, v, dm);
            // The first block's products overwrite what the scratch held.
            add_products(v, dm, count, c_pad, k_pad, first > 0, du);
        }
        kernels_from_transformed(du, k_out, c_in, c_pad, k_pad, g_w);
    });
}

thread_local! {
    /// `dU`, and a block's transformed inputs and output gradients (kept between calls;
    /// grown only; every value used is written first).
    static SCRATCH: Cell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        const { Cell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Tiles `first .. first + count`: their input patches transformed into `v` (`36 × count × C'`)
/// and their output-gradient tiles into `dm` (`36 × K'/8` panels of `count × 8`), in parallel
/// over tiles.
fn transform_block(
    x: &[f32],
    g_out: &[f32],
    g: &ConvGeometry,
    first: usize,
    count: usize,
    v: &mut [f32],
    dm: &mut [f32],
) {
    let (c_in, k_out, hw) = (g.in_channels, g.out_channels, g.pixels());
    let (c_pad, k_pad) = (c_in.next_multiple_of(LANES), k_out.next_multiple_of(LANES));
    assert!(v.len() >= XI * count * c_pad && dm.len() >= XI * count * k_pad);
    let grid = Grid::of(g);
    let (v_ptr, dm_ptr) = (SendPtr(v.as_mut_ptr()), SendPtr(dm.as_mut_ptr()));
    (0..count).into_par_iter().for_each(|t| {
        let tile = first + t;
        let (n, r) = (tile / grid.per_image(), tile % grid.per_image());
        let origin = Origin {
            row: 4 * (r / grid.cols),
            col: 4 * (r % grid.cols),
            height: g.height,
            width: g.width,
        };
        #[cfg(target_arch = "x86_64")]
        {
            for c0 in (0..c_in).step_by(LANES) {
                #[allow(unsafe_code)]
                // SAFETY: AVX-512 F present (via `applies`); the planes of channels `c0 ..` of
                // image `n` are inside `x`; row `t` of each ξ is this task's alone and inside
                // `v` (asserted above).
                unsafe {
                    avx512::transform_input_channels(
                        x.as_ptr().add((n * c_in + c0) * hw),
                        hw,
                        LANES.min(c_in - c0),
                        &origin,
                        v_ptr.get().add(t * c_pad + c0),
                        count * c_pad,
                    )
                };
            }
            for k0 in (0..k_out).step_by(LANES) {
                #[allow(unsafe_code)]
                // SAFETY: as above for `g_out` and `dm`: row `t` of panels `k0/8` and
                // `k0/8 + 1` of each ξ.
                unsafe {
                    avx512::transform_output_gradient_channels(
                        g_out.as_ptr().add((n * k_out + k0) * hw),
                        hw,
                        LANES.min(k_out - k0),
                        &origin,
                        dm_ptr.get().add((k0 / 8) * count * 8 + t * 8),
                        count * 8,
                        count * k_pad,
                    )
                };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (x, g_out, hw, n, origin, c_pad, k_pad, v_ptr, dm_ptr);
            unreachable!("winograd: AVX-512 only (see `applies`)");
        }
    });
}

/// `du_ξ += dm_ξ · v_ξ` (without `accumulate`, `du_ξ = dm_ξ · v_ξ`) for the 36 `ξ` of a block of
/// `count` tiles, in parallel over `ξ`.
fn add_products(
    v: &[f32],
    dm: &[f32],
    count: usize,
    c_pad: usize,
    k_pad: usize,
    accumulate: bool,
    du: &mut [f32],
) {
    assert!(v.len() >= XI * count * c_pad && dm.len() >= XI * count * k_pad);
    assert!(du.len() == XI * k_pad * c_pad && c_pad.is_multiple_of(LANES));
    du.par_chunks_mut(k_pad * c_pad)
        .enumerate()
        .for_each(|(xi, du_xi)| {
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            // SAFETY: AVX-512 F present (via `applies`); `dm`'s ξ panels hold `K'·count`
            // values, `v`'s ξ rows `count × C'` (asserted above); `du_xi` is this task's own
            // `K' × C'` matrix; C' is whole registers.
            unsafe {
                super::avx512::products(
                    &dm[xi * count * k_pad..][..count * k_pad],
                    v.as_ptr().add(xi * count * c_pad),
                    count,
                    c_pad,
                    du_xi.as_mut_ptr(),
                    k_pad,
                    accumulate,
                )
            };
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = (v, dm, count, accumulate, du_xi);
                unreachable!("winograd: AVX-512 only (see `applies`)");
            }
        });
}

/// Where a tile's 4×4 outputs start in its image, and the image's size.
struct Origin {
    row: usize,
    col: usize,
    height: usize,
    width: usize,
}

/// `g_w[k][c] = Gᵀ dU[k][c] G` for every pair of channels: `du` is `36 × K' × C'`, `g_w`
/// `(K, C, 3, 3)`; in parallel over `k`.
fn kernels_from_transformed(
    du: &[f32],
    k_out: usize,
    c_in: usize,
    c_pad: usize,
    k_pad: usize,
    g_w: &mut [f32],
) {
    let per_xi = k_pad * c_pad;
    assert!(c_pad >= c_in && k_pad >= k_out);
    assert!(du.len() == XI * per_xi && g_w.len() == k_out * c_in * 9);
    g_w.par_chunks_mut(c_in * 9)
        .enumerate()
        .for_each(|(k, row)| {
            #[cfg(target_arch = "x86_64")]
            if super::winograd_available() && XI * per_xi < i32::MAX as usize {
                #[allow(unsafe_code)]
                // SAFETY: AVX-512 F present; `du` holds all 36 `K' × C'` matrices and `row` is
                // kernel row `k` (`C × 9`), this task's alone.
                unsafe {
                    avx512::kernel_gradient_row(du, per_xi, k * c_pad, c_in, row)
                };
                return;
            }
            for (c, kernel) in row.chunks_exact_mut(9).enumerate() {
                let transformed: [f32; XI] =
                    std::array::from_fn(|xi| du[xi * per_xi + k * c_pad + c]);
                kernel.copy_from_slice(&kernel_gradient(&transformed));
            }
        });
}

/// `Gᵀ d G` of one transformed gradient `d` (row-major 6×6): the 3×3 kernel's gradient.
fn kernel_gradient(d: &[f32; XI]) -> [f32; 9] {
    use super::{G, PATCH};
    let mut out = [0f32; 9];
    for (ab, value) in out.iter_mut().enumerate() {
        let (a, b) = (ab / 3, ab % 3);
        let mut sum = 0f64;
        for i in 0..PATCH {
            for l in 0..PATCH {
                sum += G[i][a] * f64::from(d[i * PATCH + l]) * G[l][b];
            }
        }
        *value = sum as f32;
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::{LANES, PATCH, XI};
    use super::Origin;

    /// `A` applied to four vectors (a row or column of an output-gradient tile): six.
    #[inline]
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    fn a(y: [__m512; 4]) -> [__m512; PATCH] {
        let two = _mm512_set1_ps(2.0);
        let four = _mm512_set1_ps(4.0);
        let eight = _mm512_set1_ps(8.0);
        // Even and odd parts of y at the points ±1 and ±2.
        let even1 = _mm512_add_ps(y[0], y[2]);
        let odd1 = _mm512_add_ps(y[1], y[3]);
        let even2 = _mm512_fmadd_ps(four, y[2], y[0]);
        let odd2 = _mm512_fmadd_ps(eight, y[3], _mm512_mul_ps(two, y[1]));
        [
            y[0],
            _mm512_add_ps(even1, odd1),
            _mm512_sub_ps(even1, odd1),
            _mm512_add_ps(even2, odd2),
            _mm512_sub_ps(even2, odd2),
            y[3],
        ]
    }

    /// `Gᵀ` applied to six vectors (a row or column of transformed gradients): three.
    #[inline]
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    fn gt(d: [__m512; PATCH]) -> [__m512; 3] {
        let c = |x: f32| _mm512_set1_ps(x);
        let s12 = _mm512_add_ps(d[1], d[2]);
        let d21 = _mm512_sub_ps(d[2], d[1]);
        let s34 = _mm512_add_ps(d[3], d[4]);
        let d34 = _mm512_sub_ps(d[3], d[4]);
        [
            _mm512_fmadd_ps(
                c(0.25),
                d[0],
                _mm512_fmadd_ps(c(-1.0 / 6.0), s12, _mm512_mul_ps(c(1.0 / 24.0), s34)),
            ),
            _mm512_fmadd_ps(c(1.0 / 6.0), d21, _mm512_mul_ps(c(1.0 / 12.0), d34)),
            _mm512_add_ps(_mm512_mul_ps(c(1.0 / 6.0), _mm512_sub_ps(s34, s12)), d[5]),
        ]
    }

    /// Lanes `0 .. live` set.
    fn live_mask(live: usize) -> u16 {
        if live >= LANES {
            u16::MAX
        } else {
            (1u16 << live) - 1
        }
    }

    /// One tile's input patch for sixteen channels (`live` of them real; the rest read as 0),
    /// transformed: `V_ξ` for the 36 `ξ`, each sixteen channels stored at `v + ξ·xi_stride`.
    /// Pixels outside the image count as 0 (the convolution's padding).
    ///
    /// # Safety
    /// AVX-512 F present; `plane` is the first pixel of the first channel in the tile's image,
    /// `live` planes of `hw` pixels readable from it, `hw·16` within i32; `v` valid for 16 writes
    /// at each of the 36 positions.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transform_input_channels(
        plane: *const f32,
        hw: usize,
        live: usize,
        origin: &Origin,
        v: *mut f32,
        xi_stride: usize,
    ) {
        let zero = _mm512_setzero_ps();
        // Patch column j is image column 4·tx − 1 + j: which of columns 0..4 and 4..6 exist.
        let inside = |j: usize| {
            u16::from(
                (origin.col + j)
                    .checked_sub(1)
                    .is_some_and(|x| x < origin.width),
            )
        };
        let lo_columns: u16 = (0..4).map(|j| inside(j) << j).sum();
        let hi_columns: u16 = (4..6).map(|j| inside(j) << (j - 4)).sum();
        let mut rows = [[zero; PATCH]; PATCH];
        for (i, row) in rows.iter_mut().enumerate() {
            // Patch row i is image row 4·ty − 1 + i.
            let Some(y) = (origin.row + i)
                .checked_sub(1)
                .filter(|&y| y < origin.height)
            else {
                continue;
            };
            // Channel `c`'s row at lanes `4·⌊c/4⌋ ..` of vector `c % 4`, then transposed.
            let first = plane
                .wrapping_add(y * origin.width + origin.col)
                .wrapping_sub(1);
            let (mut lo, mut hi) = ([zero; 4], [zero; 4]);
            for c in 0..live.min(LANES) {
                let block = 4 * (c / 4);
                let start = first.wrapping_add(c * hw).wrapping_sub(block);
                // The masks keep the row's columns inside the image, which `start` meets at
                // lanes `block ..`: pixels of channel `c`'s plane (the caller's contract).
                // SAFETY: only those pixels are read; masked lanes are not.
                unsafe {
                    lo[c % 4] = _mm512_mask_loadu_ps(lo[c % 4], lo_columns << block, start);
                    hi[c % 4] =
                        _mm512_mask_loadu_ps(hi[c % 4], hi_columns << block, start.wrapping_add(4));
                }
            }
            let [d0, d1, d2, d3] = super::super::avx512::transpose_blocks(lo);
            let [d4, d5, _, _] = super::super::avx512::transpose_blocks(hi);
            *row = super::super::avx512::bt([d0, d1, d2, d3, d4, d5]);
        }
        for l in 0..PATCH {
            let column = super::super::avx512::bt(rows.map(|row| row[l]));
            for (i, value) in column.into_iter().enumerate() {
                // SAFETY: the caller's contract (16 values at each ξ).
                unsafe { _mm512_storeu_ps(v.add((i * PATCH + l) * xi_stride), value) };
            }
        }
    }

    /// One tile's output gradient for sixteen channels (`live` of them real) taken to
    /// `dM = A dY Aᵀ`: for each `ξ`, channels 0-7 stored as 8 values at `dm + ξ·xi_stride`,
    /// channels 8-15 at `+ panel_stride` (a row of two `tiles × 8` panels). Pixels outside the
    /// image count as 0 (those outputs do not exist).
    ///
    /// # Safety
    /// AVX-512 F present; `plane` is the first pixel of the first channel in the tile's image,
    /// `live` planes of `hw` pixels readable from it, `hw·16` within i32; `dm` valid for 8
    /// writes at each `ξ·xi_stride` and `ξ·xi_stride + panel_stride`.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transform_output_gradient_channels(
        plane: *const f32,
        hw: usize,
        live: usize,
        origin: &Origin,
        dm: *mut f32,
        panel_stride: usize,
        xi_stride: usize,
    ) {
        let zero = _mm512_setzero_ps();
        let columns: u16 = (0..4)
            .map(|s| u16::from(origin.col + s < origin.width) << s)
            .sum();
        // `A` along each of the tile's 4 rows (6 values each), then down each of the 6 columns.
        let mut rows = [[zero; PATCH]; 4];
        for (r, row) in rows.iter_mut().enumerate() {
            let y = origin.row + r;
            if y >= origin.height {
                continue;
            }
            // Channel `c`'s four values at lanes `4·⌊c/4⌋ ..` of vector `c % 4`, transposed.
            let first = plane.wrapping_add(y * origin.width + origin.col);
            let mut by_channel = [zero; 4];
            for c in 0..live.min(LANES) {
                let block = 4 * (c / 4);
                let start = first.wrapping_add(c * hw).wrapping_sub(block);
                // The mask keeps the row's pixels inside the image, which `start` meets at
                // lanes `block ..`: pixels of channel `c`'s plane (the caller's contract).
                // SAFETY: only those pixels are read; masked lanes are not.
                unsafe {
                    by_channel[c % 4] =
                        _mm512_mask_loadu_ps(by_channel[c % 4], columns << block, start)
                };
            }
            *row = a(super::super::avx512::transpose_blocks(by_channel));
        }
        for l in 0..PATCH {
            let column = a(rows.map(|row| row[l]));
            for (i, value) in column.into_iter().enumerate() {
                let high = _mm512_shuffle_f32x4::<0b11_10_11_10>(value, value);
                // SAFETY: the caller's contract (8 values at each of the two places).
                unsafe {
                    let at = dm.add((i * PATCH + l) * xi_stride);
                    _mm512_mask_storeu_ps(at, 0x00ff, value);
                    _mm512_mask_storeu_ps(at.add(panel_stride), 0x00ff, high);
                }
            }
        }
    }

    /// Kernel row `k` of the weight gradient, sixteen input channels at a time:
    /// `row[c][3a + b] = (Gᵀ dU[k][c] G)[a][b]` with `dU_ξ[k][c]` at `du[ξ·per_xi + first + c]`.
    ///
    /// # Safety
    /// AVX-512 F present; `du` holds `36·per_xi` values with `first + c_in ≤ per_xi`; `row`
    /// holds `9·c_in`, and `36·per_xi` fits i32 offsets.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn kernel_gradient_row(
        du: &[f32],
        per_xi: usize,
        first: usize,
        c_in: usize,
        row: &mut [f32],
    ) {
        assert!(du.len() >= XI * per_xi && first + c_in <= per_xi && row.len() == 9 * c_in);
        let zero = _mm512_setzero_ps();
        for c0 in (0..c_in).step_by(LANES) {
            let live = LANES.min(c_in - c0);
            let mask = live_mask(live);
            let mut d = [[zero; PATCH]; PATCH];
            for (xi, value) in d.iter_mut().flatten().enumerate() {
                // SAFETY: `live` values from `first + c0` of matrix `ξ`, inside `du`.
                *value = unsafe {
                    _mm512_maskz_loadu_ps(mask, du.as_ptr().add(xi * per_xi + first + c0))
                };
            }
            // Gᵀ down each column, then Gᵀ along each of the three rows.
            let columns: [[__m512; 3]; PATCH] =
                std::array::from_fn(|l| gt([d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]]));
            // Lane `t` owns `row[9·(c0 + t) ..][..9]`: the nine values go through a small
            // buffer (scalar copies beat nine scatters).
            let mut by_tap = [[0f32; LANES]; 9];
            for a in 0..3 {
                for (b, value) in gt(columns.map(|column| column[a])).into_iter().enumerate() {
                    // SAFETY: the buffer's row holds 16 values.
                    unsafe { _mm512_storeu_ps(by_tap[3 * a + b].as_mut_ptr(), value) };
                }
            }
            for (t, kernel) in row[9 * c0..][..9 * live].chunks_exact_mut(9).enumerate() {
                for (tap, value) in kernel.iter_mut().enumerate() {
                    *value = by_tap[tap][t];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `⟨dU, G g Gᵀ⟩ = ⟨Gᵀ dU G, g⟩`: the kernel-gradient transform is the adjoint of the
    /// kernel transform, on both paths.
    #[test]
    fn the_kernel_gradient_is_the_adjoint_of_the_kernel_transform() {
        let (k_out, c_in) = (3, 21); // a partial last group of 16 channels
        let per_xi = k_out * c_in;
        let du: Vec<f32> = (0..XI * per_xi)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 13.0)
            .collect();
        let mut g_w = vec![0f32; per_xi * 9];
        kernels_from_transformed(&du, k_out, c_in, c_in, k_out, &mut g_w);
        for k in 0..k_out {
            for c in 0..c_in {
                let transformed: [f32; XI] =
                    std::array::from_fn(|xi| du[xi * per_xi + k * c_in + c]);
                let scalar = kernel_gradient(&transformed);
                let fast = &g_w[(k * c_in + c) * 9..][..9];
                for (j, (a, b)) in scalar.iter().zip(fast).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                        "k {k} c {c} tap {j}: {a} vs {b}"
                    );
                }
                // The adjoint identity against the forward kernel transform, in f64.
                let kernel: Vec<f32> = (0..9).map(|t| (t as f32 - 4.0) / 3.0).collect();
                let u = super::super::transform_kernel(&kernel);
                let lhs: f64 = u
                    .iter()
                    .zip(&transformed)
                    .map(|(u, d)| u * f64::from(*d))
                    .sum();
                let rhs: f64 = kernel
                    .iter()
                    .zip(&scalar)
                    .map(|(g, d)| f64::from(*g) * f64::from(*d))
                    .sum();
                assert!(
                    (lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()),
                    "{lhs} vs {rhs}"
                );
            }
        }
    }

    /// The weight gradient of a 3×3 "same" convolution, directly, in f64: `(K, C, 3, 3)`.
    fn reference(x: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f64> {
        let (c_in, k_out, h, w) = (g.in_channels, g.out_channels, g.height, g.width);
        let mut out = vec![0f64; k_out * c_in * 9];
        for n in 0..g.batch {
            for k in 0..k_out {
                for c in 0..c_in {
                    for tap in 0..9 {
                        let (dy_off, dx_off) = (tap / 3, tap % 3);
                        let mut sum = 0f64;
                        for y in 0..h {
                            for xx in 0..w {
                                let (sy, sx) = (y + dy_off, xx + dx_off);
                                if sy == 0 || sx == 0 || sy > h || sx > w {
                                    continue;
                                }
                                let input = x[((n * c_in + c) * h + sy - 1) * w + sx - 1];
                                let grad = dy[((n * k_out + k) * h + y) * w + xx];
                                sum += f64::from(input) * f64::from(grad);
                            }
                        }
                        out[(k * c_in + c) * 9 + tap] += sum;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn weight_gradients_match_f64_on_one_and_three_threads() {
        if !super::super::winograd_available() {
            return;
        }
        // (batch, C, K, H, W): channel counts with partial registers, a single block, and
        // several blocks with a partial last one.
        for &(batch, c_in, k_out, height, width) in &[(2, 18, 21, 30, 29), (3, 5, 3, 150, 45)] {
            let g = ConvGeometry {
                batch,
                in_channels: c_in,
                out_channels: k_out,
                height,
                width,
                kernel: 3,
            };
            let x: Vec<f32> = (0..batch * c_in * height * width)
                .map(|i| ((i * 7919 % 2003) as f32 / 1001.0) - 1.0)
                .collect();
            let dy: Vec<f32> = (0..batch * k_out * height * width)
                .map(|i| ((i * 104_729 % 1999) as f32 / 999.0) - 1.0)
                .collect();
            let expected = reference(&x, &dy, &g);
            let scale = expected.iter().fold(0f64, |m, v| m.max(v.abs()));
            let mut first_run: Option<Vec<f32>> = None;
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let got = pool.install(|| {
                    assert!(applies_to_weight_gradient(&g));
                    let run = || {
                        let mut g_w = vec![0f32; k_out * c_in * 9];
                        conv_backward_weight_winograd(&x, &dy, &g, &mut g_w);
                        g_w
                    };
                    // The second call finds the first one's sums in its scratch buffers.
                    let once = run();
                    assert!(once == run(), "{g:?}: a second call differs");
                    once
                });
                for (i, (a, e)) in got.iter().zip(&expected).enumerate() {
                    assert!(
                        (f64::from(*a) - e).abs() <= 1e-5 * scale,
                        "{g:?} on {threads} threads, value {i}: {a} vs {e}"
                    );
                }
                // The same sums in the same order, whatever the pool.
                if let Some(before) = &first_run {
                    assert!(before == &got, "{g:?}: results differ between pools");
                }
                first_run = Some(got);
            }
        }
    }
}
