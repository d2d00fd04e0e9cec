//! Matrix products with bf16 operands and f32 accumulation, on CPUs that multiply bf16 natively
//! (AVX-512 BF16's `vdpbf16ps`: 32 products of bf16 pairs summed into 16 f32 lanes per
//! instruction, twice the f32 FMA's work). The operands arrive in f32 and are rounded to bf16
//! (nearest even) while they are packed; the destination is f32.
//!
//! Packing: the left operand (`m × k`, the weights) into panels of [`MR`] rows, the right one
//! (`k × n`, image columns) into panels of [`NR`] columns; in both, each 32-bit word holds the
//! bf16 values of two consecutive `k` (the lower one in the low half), as `vdpbf16ps` pairs them.
//! An odd `k` is padded with a zero.

use std::sync::OnceLock;

use super::sgemm::{MatMut, MatRef};

/// Rows of the left operand per microkernel.
const MR: usize = 8;
/// Columns of the right operand per microkernel (two vectors of 16 f32).
const NR: usize = 32;

/// Whether this CPU multiplies bf16 natively (AVX-512 F, BW and BF16), checked once.
pub fn native_bf16() -> bool {
    static NATIVE: OnceLock<bool> = OnceLock::new();
    *NATIVE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The bf16 nearest (ties to even) to `x`, as its bit pattern; NaN stays a (quiet) NaN.
#[inline]
pub fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if x.is_nan() {
        return (b >> 16) | 0x40;
    }
    // No overflow: only NaN bit patterns come within 0x8000 of u32::MAX.
    (b + 0x7fff + ((b >> 16) & 1)) >> 16
}

/// The f32 a bf16 bit pattern stands for.
#[cfg(test)]
fn bf16_value(bits: u32) -> f32 {
    f32::from_bits(bits << 16)
}

/// Two values of consecutive `k` in one word: `lo` in the low half.
#[inline]
fn pair(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) | (bf16_bits(hi) << 16)
}

/// A left operand (`m × k`, the weights) rounded to bf16 and packed into `MR`-row panels: for
/// panel `p` and pair `q`, the words of rows `p·MR .. p·MR+MR` (rows past `m` are zero). Packed
/// once per convolution and shared by all its tiles.
pub struct PackedWeights {
    data: Vec<u32>,
    rows: usize,
    cols: usize,
    pairs: usize,
}

impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeights({}×{}, bf16)", self.rows, self.cols)
    }
}

impl PackedWeights {
    /// Packs `a`.
    pub fn pack(a: &MatRef<'_>) -> Self {
        let (m, k) = (a.rows, a.cols);
        let pairs = k.div_ceil(2);
        let panels = m.div_ceil(MR);
        let mut data = vec![0u32; panels * pairs * MR];
        let at = |r: usize, c: usize| a.data[a.offset + r * a.row_stride + c * a.col_stride];
        for r in 0..m {
            let (p, i) = (r / MR, r % MR);
            let panel = &mut data[p * pairs * MR..][..pairs * MR];
            for q in 0..pairs {
                let hi = if 2 * q + 1 < k { at(r, 2 * q + 1) } else { 0.0 };
                panel[q * MR + i] = pair(at(r, 2 * q), hi);
            }
        }
        Self {
            data,
            rows: m,
            cols: k,
            pairs,
        }
    }

    /// Rows (`m`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (`k`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Packs a row-major `rows × cols` matrix.
    pub fn pack_rows(data: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(
            data.len(),
            rows * cols,
            "bf16 packing: {rows}×{cols} from {}",
            data.len()
        );
        Self::pack(&MatRef {
            data,
            offset: 0,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        })
    }

    /// The panels from row `first` (a multiple of `MR`) on.
    fn panels_from(&self, first: usize) -> &[u32] {
        assert!(
            first.is_multiple_of(MR),
            "bf16 gemm: row blocks start on a panel"
        );
        &self.data[first / MR * self.pairs * MR..]
    }
}

/// Packs `b` (`k × n`, unit column stride) into `NR`-column panels: for panel `p` and pair `q`,
/// the words of columns `p·NR .. p·NR+NR` (columns past `n` are zero).
fn pack_rhs(b: &MatRef<'_>, out: &mut Vec<u32>) {
    assert_eq!(
        b.col_stride, 1,
        "bf16 gemm: the right operand's rows must be contiguous"
    );
    let (k, n) = (b.rows, b.cols);
    let pairs = k.div_ceil(2);
    let panels = n.div_ceil(NR);
    out.clear();
    out.resize(panels * pairs * NR, 0);
    // The partner of an odd k's last row (allocated only then).
    let zeros = if k % 2 == 1 {
        vec![0f32; n]
    } else {
        Vec::new()
    };
    for q in 0..pairs {
        let row0 = &b.data[b.offset + 2 * q * b.row_stride..][..n];
        let row1 = if 2 * q + 1 < k {
            &b.data[b.offset + (2 * q + 1) * b.row_stride..][..n]
        } else {
            &zeros[..]
        };
        for p in 0..panels {
            let first = p * NR;
            let width = NR.min(n - first);
            let dst = &mut out[(p * pairs + q) * NR..][..width];
            let (lo, hi) = (&row0[first..first + width], &row1[first..first + width]);
            #[cfg(target_arch = "x86_64")]
            if width == NR {
                #[allow(unsafe_code)]
                // SAFETY: the CPU has the features (gemm_bf16 asserts it before packing);
                // `lo`, `hi` and `dst` hold NR values each.
                unsafe {
                    avx512::pair_32(lo, hi, dst)
                };
                continue;
            }
            for ((d, &l), &h) in dst.iter_mut().zip(lo).zip(hi) {
                *d = pair(l, h);
            }
        }
    }
}

thread_local! {
    static PACKED_RHS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `dst = lhs · rhs` with both operands rounded to bf16 and products summed in f32, for rows
/// `first .. first + dst.rows` of the packed `lhs` (`first` a multiple of the panel height):
/// `rhs` is `k × n` (contiguous rows), `dst` `dst.rows × n`. Single-threaded.
///
/// # Safety
/// The destination region must not be accessed by anyone else during the call; the CPU must
/// have [`native_bf16`] (checked: it panics otherwise).
#[allow(unsafe_code)]
pub unsafe fn gemm_bf16(dst: MatMut, lhs: &PackedWeights, first: usize, rhs: MatRef<'_>) {
    assert!(native_bf16(), "bf16 gemm on a CPU without AVX-512 BF16");
    assert!(first + dst.rows <= lhs.rows, "bf16 gemm: lhs rows");
    assert_eq!(rhs.cols, dst.cols, "bf16 gemm: rhs cols");
    assert_eq!(lhs.cols, rhs.rows, "bf16 gemm: inner dimension");
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    // Every destination row must lie inside the buffer (MatMut::row checks the same).
    assert!(
        dst.offset + (dst.rows - 1) * dst.row_stride + dst.cols <= dst.len,
        "bf16 gemm: destination out of bounds"
    );
    let a = lhs.panels_from(first);
    PACKED_RHS.with(|b| {
        let mut b = b.borrow_mut();
        pack_rhs(&rhs, &mut b);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has the features (asserted); the packed panels hold `pairs` words per
        // row/column of every panel; the destination is in bounds (asserted) and exclusive
        // (the caller's contract).
        unsafe {
            avx512::gemm_packed(a, &b, lhs.pairs, dst)
        };
    });
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{MR, NR};
    use crate::cpu_kernels::sgemm::MatMut;

    /// `dst[j] = pair(lo[j], hi[j])` for 32 columns: both rows rounded to bf16 by the hardware
    /// (nearest even, NaN kept), then interleaved so each word holds one column's pair.
    ///
    /// # Safety
    /// AVX-512 F, BW and BF16 present; all three slices hold 32 values.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pair_32(lo: &[f32], hi: &[f32], dst: &mut [u32]) {
        assert!(lo.len() >= 32 && hi.len() >= 32 && dst.len() >= 32);
        // Word i of the result takes bf16 lane i of `lo` (low half) and of `hi` (high half);
        // `_mm512_cvtne2ps_pbh(h, l)` puts `l`'s 16 lanes first, then `h`'s.
        let idx = |base: i16| -> __m512i {
            let mut lanes = [0i16; 32];
            for (i, lane) in lanes.iter_mut().enumerate() {
                let i = i as i16;
                *lane = if i % 2 == 0 {
                    base + i / 2
                } else {
                    base + 16 + i / 2
                };
            }
            // SAFETY: 64 bytes.
            unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
        };
        let index = idx(0);
        for half in 0..2 {
            // SAFETY: 16 values from `half·16` in each slice.
            unsafe {
                let l = _mm512_loadu_ps(lo.as_ptr().add(half * 16));
                let h = _mm512_loadu_ps(hi.as_ptr().add(half * 16));
                // Lanes 0..16: l's 16 values; 16..32: h's.
                let both = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(h, l));
                let words = _mm512_permutexvar_epi16(index, both);
                _mm512_storeu_si512(dst.as_mut_ptr().add(half * 16).cast(), words);
            }
        }
    }

    /// All panels: `a` holds `⌈m/MR⌉` panels of `pairs·MR` words, `b` `⌈n/NR⌉` panels of
    /// `pairs·NR`.
    ///
    /// # Safety
    /// AVX-512 F and BF16 present; `dst` in bounds and exclusive.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn gemm_packed(a: &[u32], b: &[u32], pairs: usize, dst: MatMut) {
        let (m, n) = (dst.rows, dst.cols);
        for mp in 0..m.div_ceil(MR) {
            let a_panel = &a[mp * pairs * MR..][..pairs * MR];
            let rows = MR.min(m - mp * MR);
            for np in 0..n.div_ceil(NR) {
                let b_panel = &b[np * pairs * NR..][..pairs * NR];
                let cols = NR.min(n - np * NR);
                let out = dst.offset + mp * MR * dst.row_stride + np * NR;
                // SAFETY: as the caller's; the tile is `rows × cols` inside `dst`.
                unsafe {
                    tile(
                        a_panel,
                        b_panel,
                        pairs,
                        dst.base.add(out),
                        dst.row_stride,
                        rows,
                        cols,
                    )
                };
            }
        }
    }

    /// One `MR × NR` block: sixteen accumulators, two column vectors and one broadcast weight
    /// pair per step; stores `rows × cols` of it.
    ///
    /// # Safety
    /// AVX-512 F and BF16 present; `out` valid for `rows` rows of `cols` values, `stride` apart.
    #[allow(unsafe_code, clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile(
        a: &[u32],
        b: &[u32],
        pairs: usize,
        out: *mut f32,
        stride: usize,
        rows: usize,
        cols: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for q in 0..pairs {
            let bq = &b[q * NR..][..NR];
            let aq = &a[q * MR..][..MR];
            // SAFETY: `bq` holds 32 words: two unaligned 64-byte loads.
            let (b0, b1): (__m512bh, __m512bh) = unsafe {
                (
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        bq.as_ptr().cast(),
                    )),
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        bq.as_ptr().add(16).cast(),
                    )),
                )
            };
            for (row, &w) in acc.iter_mut().zip(aq) {
                // SAFETY: a bit-for-bit reinterpretation of 16 copies of the weight pair.
                let wv = unsafe {
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(w as i32))
                };
                row[0] = _mm512_dpbf16_ps(row[0], wv, b0);
                row[1] = _mm512_dpbf16_ps(row[1], wv, b1);
            }
        }
        let mask = |first: usize| -> __mmask16 {
            let width = cols.saturating_sub(first).min(16);
            if width == 16 {
                0xffff
            } else {
                ((1u32 << width) - 1) as __mmask16
            }
        };
        let (m0, m1) = (mask(0), mask(16));
        for (r, row) in acc.iter().enumerate().take(rows) {
            // SAFETY: row `r` of the block holds `cols` values; the masks cover no more.
            unsafe {
                let p = out.add(r * stride);
                _mm512_mask_storeu_ps(p, m0, row[0]);
                if m1 != 0 {
                    _mm512_mask_storeu_ps(p.add(16), m1, row[1]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(bf16_value(bf16_bits(1.0)), 1.0);
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties go to the even one (1).
        assert_eq!(bf16_value(bf16_bits(1.0 + 1.0 / 256.0)), 1.0);
        assert_eq!(bf16_value(bf16_bits(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(bf16_value(bf16_bits(f32::INFINITY)), f32::INFINITY);
        assert_eq!(bf16_value(bf16_bits(-0.0)).to_bits(), (-0.0f32).to_bits());
    }

    /// The product of the bf16-rounded operands in f64, row-major `m × n`.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let r = |x: f32| f64::from(bf16_value(bf16_bits(x)));
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|t| r(a[i * k + t]) * r(b[t * n + j])).sum();
            }
        }
        out
    }

    #[test]
    #[allow(clippy::print_stderr)] // says why it checked nothing
    fn products_match_the_rounded_operands_at_every_edge() {
        if !native_bf16() {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        }
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for &(m, k, n) in &[
            (1, 1, 1),
            (8, 2, 32),
            (9, 5, 33),
            (64, 576, 128),
            (13, 27, 70),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
            // The destination sits inside a larger buffer with a wider row stride.
            let stride = n + 3;
            let mut out = vec![f32::NAN; m * stride + 5];
            let dst = MatMut {
                base: out.as_mut_ptr(),
                len: out.len(),
                offset: 2,
                rows: m,
                cols: n,
                row_stride: stride,
            };
            let lhs = MatRef {
                data: &a,
                offset: 0,
                rows: m,
                cols: k,
                row_stride: k,
                col_stride: 1,
            };
            let rhs = MatRef {
                data: &b,
                offset: 0,
                rows: k,
                cols: n,
                row_stride: n,
                col_stride: 1,
            };
            let packed = PackedWeights::pack(&lhs);
            #[allow(unsafe_code)]
            // SAFETY: `out` is this test's own buffer.
            unsafe {
                gemm_bf16(dst, &packed, 0, rhs)
            };
            let want = reference(&a, &b, m, k, n);
            for i in 0..m {
                for j in 0..n {
                    let got = f64::from(out[2 + i * stride + j]);
                    let w = want[i * n + j];
                    // f32 accumulation of k exact bf16 products.
                    assert!(
                        (got - w).abs() <= 1e-6 * (k as f64) + 1e-6 * w.abs(),
                        "{m}x{k}x{n} at ({i}, {j}): {got} vs {w}"
                    );
                }
                // Nothing outside the rows was written.
                assert!(
                    out[2 + i * stride + n].is_nan(),
                    "{m}x{k}x{n}: row {i} overran"
                );
            }
            assert!(out[0].is_nan() && out[1].is_nan());
        }
    }
}
