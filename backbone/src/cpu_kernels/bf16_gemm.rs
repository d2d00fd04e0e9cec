//! Matrix products with bf16 operands and f32 accumulation, on CPUs that multiply bf16 natively
//! (AVX-512 BF16's `vdpbf16ps`: 32 products of bf16 pairs summed into 16 f32 lanes per
//! instruction, twice the f32 FMA's work). The operands arrive in f32 and are rounded to bf16
//! (nearest even) while they are packed; the destination is f32.
//!
//! Packing: the left operand (`m × k`, the weights) into panels of [`MR`] rows, the right one
//! (`k × n`, image columns) into panels of [`NR`] columns; in both, each 32-bit word holds the
//! bf16 values of two consecutive `k` (the lower one in the low half), as `vdpbf16ps` pairs them.
//! An odd `k` is padded with a zero.
//!
//! On CPUs with AMX ([`Bf16Engine::Tiles`]) the weights are packed into 16 × 16-word tiles
//! instead, and the image columns' pairs are padded with zeros to a multiple of 16, the depth of
//! one tile; the products run on the tiles ([`super::amx`]).

use std::sync::OnceLock;

use super::aligned::AlignedWords;
use super::amx::{TILE_PAIRS, TILE_ROWS, TILE_WORDS, amx_available};
use super::conv::Epilogue;
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

/// Which instructions multiply the bf16 operands, and so how the operands are packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bf16Engine {
    /// AVX-512 BF16's `vdpbf16ps`: weights in panels of [`MR`] rows, image columns in panels of
    /// [`NR`].
    #[default]
    Vector,
    /// AMX's `tdpbf16ps`: weights in tiles of 16 rows × 16 pairs, image columns in panels of
    /// [`NR`] with their pairs padded to a multiple of 16.
    Tiles,
}

impl Bf16Engine {
    /// The fastest this CPU has: [`Self::Tiles`] where [`amx_available`], else
    /// [`Self::Vector`].
    pub fn best() -> Self {
        if amx_available() {
            Self::Tiles
        } else {
            Self::Vector
        }
    }
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
pub(super) fn pair(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) | (bf16_bits(hi) << 16)
}

/// A left operand (`m × k`, the weights) rounded to bf16 and packed for its engine. For
/// [`Bf16Engine::Vector`], into `MR`-row panels: for panel `p` and pair `q`, the words of rows
/// `p·MR .. p·MR+MR` (rows past `m` are zero). For [`Bf16Engine::Tiles`], into tiles of 16 rows
/// × 16 pairs (row-major, 1 KiB), tile `(row block, pair block)` at `(row block · pair blocks +
/// pair block) · 256` words (rows and pairs past the matrix are zero). Packed once per
/// convolution and shared by all its tiles.
#[derive(Default)]
pub struct PackedWeights {
    data: AlignedWords,
    rows: usize,
    cols: usize,
    /// Pairs per row in the layout (for tiles, padded to a multiple of 16).
    pairs: usize,
    engine: Bf16Engine,
}

impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PackedWeights({}×{}, bf16, {:?})",
            self.rows, self.cols, self.engine
        )
    }
}

impl PackedWeights {
    /// Packs `a` for [`Bf16Engine::best`].
    pub fn pack(a: &MatRef<'_>) -> Self {
        Self::pack_for(a, Bf16Engine::best())
    }

    /// Packs `a` for `engine`.
    pub fn pack_for(a: &MatRef<'_>, engine: Bf16Engine) -> Self {
        let mut packed = Self::default();
        packed.repack_for(a, engine);
        packed
    }

    /// Packs `a` for [`Bf16Engine::best`] into this operand's buffer (kept and grown, for
    /// operands packed on every call).
    pub fn repack(&mut self, a: &MatRef<'_>) {
        self.repack_for(a, Bf16Engine::best());
    }

    /// Packs `a` for `engine` into this operand's buffer.
    pub fn repack_for(&mut self, a: &MatRef<'_>, engine: Bf16Engine) {
        assert!(
            a.in_bounds(),
            "bf16 packing: the matrix lies outside its data"
        );
        self.engine = engine;
        match engine {
            Bf16Engine::Vector => self.repack_panels(a),
            Bf16Engine::Tiles => self.repack_tiles(a),
        }
    }

    /// The [`Bf16Engine::Vector`] layout: where the CPU has the features, eight rows by sixteen
    /// columns at a time if rows are contiguous, a pair of columns' eight rows at a time if
    /// columns are (a transposed view, such as a 1×1 kernel read as the kernel of its input
    /// gradient); else value by value.
    fn repack_panels(&mut self, a: &MatRef<'_>) {
        let (m, k) = (a.rows, a.cols);
        let pairs = k.div_ceil(2);
        let panels = m.div_ceil(MR);
        // Stale words from an earlier operand stay until overwritten: the vector paths write
        // every word (zero rows and pairs included); the value-by-value path clears first.
        self.data.resize(panels * pairs * MR, 0);
        (self.rows, self.cols, self.pairs) = (m, k, pairs);
        if m == 0 || k == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if a.col_stride == 1 && native_bf16() {
            for p in 0..panels {
                for first in (0..k).step_by(16) {
                    let width = (k - first).min(16);
                    let rows: [Option<&[f32]>; MR] = std::array::from_fn(|i| {
                        let r = p * MR + i;
                        (r < m).then(|| &a.data[a.offset + r * a.row_stride + first..][..width])
                    });
                    let at = (p * pairs + first / 2) * MR;
                    #[allow(unsafe_code)]
                    // SAFETY: the features are present; the block's pairs (at most 8 from
                    // `first / 2`, those its values cover) lie inside panel `p`, MR words apart.
                    unsafe {
                        avx512::pack_pair_block(&rows, &mut self.data[at..], MR)
                    };
                }
            }
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if a.row_stride == 1 && native_bf16() {
            for (p, panel) in self.data.chunks_exact_mut(pairs * MR).enumerate() {
                let rows = MR.min(m - p * MR);
                let column = |c: usize| &a.data[a.offset + p * MR + c * a.col_stride..][..rows];
                for (q, words) in panel.chunks_exact_mut(MR).enumerate() {
                    let hi = (2 * q + 1 < k).then(|| column(2 * q + 1));
                    #[allow(unsafe_code)]
                    // SAFETY: the features are present; `words` holds MR words, the columns'
                    // slices `rows` ≤ 8 values.
                    unsafe {
                        avx512::pair_eight(column(2 * q), hi, words)
                    };
                }
            }
            return;
        }
        self.data.fill(0);
        let at = |r: usize, c: usize| a.data[a.offset + r * a.row_stride + c * a.col_stride];
        for r in 0..m {
            let (p, i) = (r / MR, r % MR);
            let panel = &mut self.data[p * pairs * MR..][..pairs * MR];
            for q in 0..pairs {
                let hi = if 2 * q + 1 < k { at(r, 2 * q + 1) } else { 0.0 };
                panel[q * MR + i] = pair(at(r, 2 * q), hi);
            }
        }
    }

    /// The [`Bf16Engine::Tiles`] layout, one tile row (32 values of `k`) at a time: converted
    /// in two vectors where rows are contiguous and the CPU has the features, value by value
    /// otherwise.
    fn repack_tiles(&mut self, a: &MatRef<'_>) {
        let (m, k) = (a.rows, a.cols);
        let kblocks = k.div_ceil(2 * TILE_PAIRS);
        let row_blocks = m.div_ceil(TILE_ROWS);
        self.data.resize(row_blocks * kblocks * TILE_WORDS, 0);
        (self.rows, self.cols, self.pairs) = (m, k, kblocks * TILE_PAIRS);
        let at = |r: usize, c: usize| a.data[a.offset + r * a.row_stride + c * a.col_stride];
        for r in 0..row_blocks * TILE_ROWS {
            for kb in 0..kblocks {
                let tile = (r / TILE_ROWS * kblocks + kb) * TILE_WORDS;
                let words = &mut self.data[tile + r % TILE_ROWS * TILE_PAIRS..][..TILE_PAIRS];
                if r >= m {
                    words.fill(0);
                    continue;
                }
                let first = kb * 2 * TILE_PAIRS;
                let width = (k - first).min(2 * TILE_PAIRS);
                #[cfg(target_arch = "x86_64")]
                if a.col_stride == 1 && native_bf16() {
                    let values = &a.data[a.offset + r * a.row_stride + first..][..width];
                    #[allow(unsafe_code)]
                    // SAFETY: the features are present; `values` holds at most 32 values and
                    // `words` 16 words.
                    unsafe {
                        avx512::pair_row(values, words)
                    };
                    continue;
                }
                for (q, word) in words.iter_mut().enumerate() {
                    let c = first + 2 * q;
                    *word = if c >= first + width {
                        0
                    } else if c + 1 < k {
                        pair(at(r, c), at(r, c + 1))
                    } else {
                        pair(at(r, c), 0.0)
                    };
                }
            }
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

    /// The panels (or tiles) from row `first` (a multiple of `MR`, or of 16 for tiles) on.
    fn panels_from(&self, first: usize) -> &[u32] {
        let height = match self.engine {
            Bf16Engine::Vector => MR,
            Bf16Engine::Tiles => TILE_ROWS,
        };
        assert!(
            first.is_multiple_of(height),
            "bf16 gemm: row blocks start on a panel"
        );
        &self.data[first / height * self.pairs * height..]
    }
}

/// A right operand (`k × n`, a tile's image columns) rounded to bf16 and packed into
/// `NR`-column panels: for panel `p` and pair `q`, the words of columns `p·NR .. p·NR+NR`
/// (columns past `n` are zero), at `(p·stride + q)·NR`, where `stride` is the number of pairs,
/// for [`Bf16Engine::Tiles`] rounded up to a multiple of 16 (the pairs past `k` are zero).
/// Filled pair by pair through a [`PairWriter`]; the buffer is kept between tiles and grows
/// only.
#[derive(Default)]
pub struct PackedColumns {
    data: AlignedWords,
    rows: usize,
    cols: usize,
    pairs: usize,
    /// Pairs per panel in the layout.
    stride: usize,
    engine: Bf16Engine,
}

impl PackedColumns {
    /// Makes room for a `k × n` operand packed for [`Bf16Engine::best`]. Its words are stale
    /// until every pair has been written.
    pub fn reset(&mut self, k: usize, n: usize) {
        self.reset_for(k, n, Bf16Engine::best());
    }

    /// Makes room for a `k × n` operand packed for `engine`; the padding pairs are zeroed here,
    /// the others are stale until written.
    pub fn reset_for(&mut self, k: usize, n: usize, engine: Bf16Engine) {
        let pairs = k.div_ceil(2);
        let stride = match engine {
            Bf16Engine::Vector => pairs,
            Bf16Engine::Tiles => pairs.next_multiple_of(TILE_PAIRS),
        };
        let len = n.div_ceil(NR) * stride * NR;
        if self.data.len() < len {
            self.data.resize(len, 0);
        }
        (self.rows, self.cols, self.pairs, self.stride, self.engine) =
            (k, n, pairs, stride, engine);
        if stride > pairs {
            for panel in self.data[..len].chunks_exact_mut(stride * NR) {
                panel[pairs * NR..].fill(0);
            }
        }
    }

    /// Pairs of rows (`⌈k/2⌉`).
    pub fn pairs(&self) -> usize {
        self.pairs
    }

    /// A writer for the pairs, which threads may share (each writing its own pairs).
    pub fn writer(&mut self) -> PairWriter<'_> {
        assert!(native_bf16(), "bf16 packing on a CPU without AVX-512 BF16");
        PairWriter {
            base: self.data.as_mut_ptr(),
            len: self.data.len(),
            cols: self.cols,
            pairs: self.pairs,
            stride: self.stride,
            _data: std::marker::PhantomData,
        }
    }

    /// Packs the `k × n` operand given by its transpose `t` (`n × k`, rows contiguous) for
    /// [`Bf16Engine::best`]: column `j` of the operand is row `j` of `t`. Eight columns by
    /// sixteen values of `k` at a time (CPUs with AVX-512 BF16 only: it panics elsewhere).
    pub fn pack_transposed(&mut self, t: &MatRef<'_>) {
        self.pack_transposed_for(t, Bf16Engine::best());
    }

    /// [`Self::pack_transposed`] for `engine`.
    pub fn pack_transposed_for(&mut self, t: &MatRef<'_>, engine: Bf16Engine) {
        assert!(native_bf16(), "bf16 packing on a CPU without AVX-512 BF16");
        assert!(
            t.col_stride == 1 && t.in_bounds(),
            "bf16 packing: a transposed operand with contiguous rows, inside its data"
        );
        let (n, k) = (t.rows, t.cols);
        self.reset_for(k, n, engine);
        if n == 0 || k == 0 {
            return;
        }
        let pairs = self.stride;
        for panel in 0..n.div_ceil(NR) {
            // Columns past `n` in the last panel are never stored (the products mask them).
            for eight in (0..NR).step_by(8).take_while(|e| panel * NR + e < n) {
                for first in (0..k).step_by(16) {
                    let width = (k - first).min(16);
                    let rows: [Option<&[f32]>; 8] = std::array::from_fn(|i| {
                        let j = panel * NR + eight + i;
                        (j < n).then(|| &t.data[t.offset + j * t.row_stride + first..][..width])
                    });
                    let at = (panel * pairs + first / 2) * NR + eight;
                    #[cfg(target_arch = "x86_64")]
                    #[allow(unsafe_code)]
                    // SAFETY: the features are present (asserted); the block's pairs lie inside
                    // this panel, NR words apart, at its columns `eight .. eight + 8`.
                    unsafe {
                        avx512::pack_pair_block(&rows, &mut self.data[at..], NR)
                    };
                    #[cfg(not(target_arch = "x86_64"))]
                    let _ = (rows, at);
                }
            }
        }
    }

    /// The words of all panels.
    fn words(&self) -> &[u32] {
        &self.data[..self.cols.div_ceil(NR) * self.stride * NR]
    }
}

/// Writes pairs of rows into a [`PackedColumns`]; shared by the threads packing one operand.
pub struct PairWriter<'a> {
    base: *mut u32,
    len: usize,
    cols: usize,
    pairs: usize,
    /// Pairs per panel in the layout.
    stride: usize,
    _data: std::marker::PhantomData<&'a mut [u32]>,
}

// SAFETY: a writer only stores through its pointer in `write`, whose contract keeps concurrent
// callers on distinct pairs, i.e. distinct words.
#[allow(unsafe_code)]
unsafe impl Sync for PairWriter<'_> {}

impl PairWriter<'_> {
    /// Columns (`n`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The `NR` words of pair `q` in column panel `p`, to be written by the caller.
    ///
    /// # Safety
    /// Callers running at the same time use distinct `q`; the words are not read through the
    /// writer.
    #[allow(unsafe_code)]
    pub unsafe fn panel(&self, q: usize, p: usize) -> *mut u32 {
        assert!(q < self.pairs && p < self.cols.div_ceil(NR));
        let at = (p * self.stride + q) * NR;
        assert!(at + NR <= self.len);
        // SAFETY: in bounds (asserted).
        unsafe { self.base.add(at) }
    }

    /// Packs rows `2q` (`lo`) and `2q + 1` (`hi`; `None`: the zero row after an odd `k`), each
    /// `n` values, as pair `q`.
    ///
    /// # Safety
    /// Callers running at the same time write distinct `q`.
    #[allow(unsafe_code)]
    pub unsafe fn write(&self, q: usize, lo: &[f32], hi: Option<&[f32]>) {
        let n = self.cols;
        assert!(q < self.pairs && lo.len() >= n && hi.is_none_or(|h| h.len() >= n));
        for p in 0..n.div_ceil(NR) {
            let first = p * NR;
            let width = NR.min(n - first);
            let at = (p * self.stride + q) * NR;
            assert!(at + NR <= self.len);
            // SAFETY: in bounds (asserted); these words belong to pair `q`, which no one else
            // writes now (the caller's contract).
            let dst = unsafe { std::slice::from_raw_parts_mut(self.base.add(at), NR) };
            let lo = &lo[first..first + width];
            let hi = hi.map(|h| &h[first..first + width]);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has the features (asserted when the writer was made); `dst`
            // holds NR words, `lo` and `hi` `width` ≤ NR values.
            unsafe {
                avx512::pair_panel(lo, hi, dst)
            };
            #[cfg(not(target_arch = "x86_64"))]
            for (i, d) in dst.iter_mut().enumerate() {
                *d = match lo.get(i) {
                    Some(&l) => pair(l, hi.map_or(0.0, |h| h[i])),
                    None => 0,
                };
            }
        }
    }
}

/// What the product's destination receives: `act(sum + bias[row])`.
#[derive(Debug, Clone, Copy)]
pub struct PostOp<'a> {
    /// One value per row of the whole left operand, or `None`.
    pub bias: Option<&'a [f32]>,
    /// The activation.
    pub epilogue: Epilogue,
}

/// `dst = act(lhs · rhs + bias)` with both operands in bf16 and products summed in f32, for
/// rows `first .. first + dst.rows` of the packed `lhs` (`first` a multiple of the panel
/// height): `rhs` is `k × n` packed, `dst` `dst.rows × n`. Single-threaded.
///
/// # Safety
/// The destination region must not be accessed by anyone else during the call; the CPU must
/// have [`native_bf16`] (checked: it panics otherwise).
#[allow(unsafe_code)]
pub unsafe fn gemm_bf16(
    dst: MatMut,
    lhs: &PackedWeights,
    first: usize,
    rhs: &PackedColumns,
    post: PostOp<'_>,
) {
    assert!(native_bf16(), "bf16 gemm on a CPU without AVX-512 BF16");
    assert!(first + dst.rows <= lhs.rows, "bf16 gemm: lhs rows");
    assert_eq!(rhs.cols, dst.cols, "bf16 gemm: rhs cols");
    assert_eq!(lhs.cols, rhs.rows, "bf16 gemm: inner dimension");
    if let Some(b) = post.bias {
        assert_eq!(b.len(), lhs.rows, "bf16 gemm: one bias per row");
    }
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    // Every destination row must lie inside the buffer (MatMut::row checks the same).
    assert!(
        dst.offset + (dst.rows - 1) * dst.row_stride + dst.cols <= dst.len,
        "bf16 gemm: destination out of bounds"
    );
    assert_eq!(
        (lhs.engine, lhs.pairs),
        (rhs.engine, rhs.stride),
        "bf16 gemm: operands packed for different engines"
    );
    let a = lhs.panels_from(first);
    let bias = post.bias.map(|b| &b[first..first + dst.rows]);
    match lhs.engine {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features asserted; the panels hold `pairs` words per row/column; `dst` is in
        // bounds (asserted) and exclusive (the caller's contract).
        Bf16Engine::Vector => unsafe {
            avx512::gemm_packed(a, rhs.words(), lhs.pairs, dst, bias, post.epilogue)
        },
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        Bf16Engine::Tiles => {
            assert!(amx_available(), "bf16 gemm: AMX tiles on a CPU without AMX");
            // SAFETY: AMX is usable (asserted); the kernel checks the operands' sizes; `dst`
            // is in bounds (asserted) and exclusive (the caller's contract).
            unsafe {
                super::amx::kernels::gemm_tiles(
                    a,
                    lhs.pairs / TILE_PAIRS,
                    rhs.words(),
                    dst,
                    bias,
                    post.epilogue,
                )
            }
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("bf16 products on a CPU without them (checked above)"),
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    use super::{MR, NR};
    use crate::cpu_kernels::conv::Epilogue;
    use crate::cpu_kernels::sgemm::MatMut;

    /// `dst[j] = pair(lo[j], hi[j])` for the 32 columns of a panel, `pair(0, 0) = 0` past
    /// `lo`'s length; `hi = None` is a zero row.
    ///
    /// # Safety
    /// AVX-512 F, BW and BF16 present; `dst` holds 32 words; `lo` (and `hi`, as long) at most 32
    /// values.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pair_panel(lo: &[f32], hi: Option<&[f32]>, dst: &mut [u32]) {
        assert!(lo.len() <= 32 && hi.is_none_or(|h| h.len() == lo.len()) && dst.len() >= 32);
        let width = lo.len();
        for half in 0..2 {
            let lanes = width.saturating_sub(half * 16).min(16);
            let mask = ((1u32 << lanes) - 1) as __mmask16;
            // Masked lanes are not accessed, so the base may lie past a slice (`wrapping_add`).
            // SAFETY: the masks load no lane past the slices' ends; `dst` has 16 words at half·16.
            unsafe {
                let load =
                    |v: &[f32]| _mm512_maskz_loadu_ps(mask, v.as_ptr().wrapping_add(half * 16));
                let l = load(lo);
                let h = hi.map_or(_mm512_setzero_ps(), load);
                _mm512_storeu_si512(dst.as_mut_ptr().add(half * 16).cast(), pair_vectors(l, h));
            }
        }
    }

    /// Packs a block of eight rows (`None`: a zero row) of one length `len` ≤ 16 as `⌈len/2⌉`
    /// pairs: `dst[q·stride + i] = pair(row_i[2q], row_i[2q + 1])`, zero past `len`. Each row's
    /// values become its own words in place, then an 8 × 8 transpose of 32-bit words turns "a
    /// row's pairs" into "a pair's rows".
    ///
    /// # Safety
    /// AVX-512 F, BW and BF16 present.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2")]
    pub(super) unsafe fn pack_pair_block(
        rows: &[Option<&[f32]>; 8],
        dst: &mut [u32],
        stride: usize,
    ) {
        let len = rows.iter().flatten().map(|r| r.len()).next().unwrap_or(0);
        assert!(len <= 16 && rows.iter().flatten().all(|r| r.len() == len));
        let pairs = len.div_ceil(2);
        if pairs == 0 {
            return;
        }
        assert!(
            dst.len() >= (pairs - 1) * stride + 8,
            "bf16 packing: a block outside its panel"
        );
        let mask = ((1u32 << len) - 1) as __mmask16;
        let words: [__m256i; 8] = rows.map(|row| match row {
            // SAFETY: the mask reads the row's `len` values; a bit-for-bit reinterpretation of
            // 16 bf16 lanes as 8 words.
            Some(row) => unsafe {
                std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(
                    mask,
                    row.as_ptr(),
                )))
            },
            None => _mm256_setzero_si256(),
        });
        let [w0, w1, w2, w3, w4, w5, w6, w7] = words;
        let (t0, t1) = (_mm256_unpacklo_epi32(w0, w1), _mm256_unpackhi_epi32(w0, w1));
        let (t2, t3) = (_mm256_unpacklo_epi32(w2, w3), _mm256_unpackhi_epi32(w2, w3));
        let (t4, t5) = (_mm256_unpacklo_epi32(w4, w5), _mm256_unpackhi_epi32(w4, w5));
        let (t6, t7) = (_mm256_unpacklo_epi32(w6, w7), _mm256_unpackhi_epi32(w6, w7));
        // `u[q]`: pair q of rows 0..4 in its low 128 bits, pair q + 4 in its high ones; `v[q]`
        // the same of rows 4..8.
        let u = [
            _mm256_unpacklo_epi64(t0, t2),
            _mm256_unpackhi_epi64(t0, t2),
            _mm256_unpacklo_epi64(t1, t3),
            _mm256_unpackhi_epi64(t1, t3),
        ];
        let v = [
            _mm256_unpacklo_epi64(t4, t6),
            _mm256_unpackhi_epi64(t4, t6),
            _mm256_unpacklo_epi64(t5, t7),
            _mm256_unpackhi_epi64(t5, t7),
        ];
        for q in 0..pairs {
            let out = if q < 4 {
                _mm256_permute2x128_si256::<0x20>(u[q], v[q])
            } else {
                _mm256_permute2x128_si256::<0x31>(u[q - 4], v[q - 4])
            };
            // SAFETY: eight words at `q·stride` (asserted above).
            unsafe { _mm256_storeu_si256(dst.as_mut_ptr().add(q * stride).cast(), out) };
        }
    }

    /// `words[i] = pair(values[2i], values[2i + 1])` for the 16 words of a tile row, zero
    /// past `values`' length.
    ///
    /// # Safety
    /// AVX-512 F, BW and BF16 present.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pair_row(values: &[f32], words: &mut [u32]) {
        assert!(values.len() <= 32 && words.len() >= 16);
        let lanes = |count: usize| ((1u64 << count.min(16)) - 1) as __mmask16;
        let (lo_mask, hi_mask) = (lanes(values.len()), lanes(values.len().saturating_sub(16)));
        // Masked lanes are not accessed, so the second half's base may lie past the slice. In
        // `cvtne2ps_pbh(hi, lo)` the lanes of `lo` come first: word `i` holds values `2i`, `2i+1`.
        // SAFETY: the masks read only the slice's values; 16 words are written (asserted).
        unsafe {
            let lo = _mm512_maskz_loadu_ps(lo_mask, values.as_ptr());
            let hi = _mm512_maskz_loadu_ps(hi_mask, values.as_ptr().wrapping_add(16));
            let both = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(words.as_mut_ptr().cast(), both);
        }
    }

    /// `dst[i] = pair(lo[i], hi[i])` for eight words, zero past `lo`'s length (`hi = None`:
    /// zeros).
    ///
    /// # Safety
    /// AVX-512 F, BW and BF16 present.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pair_eight(lo: &[f32], hi: Option<&[f32]>, dst: &mut [u32]) {
        assert!(lo.len() <= 8 && hi.is_none_or(|h| h.len() == lo.len()) && dst.len() >= 8);
        let mask = ((1u32 << lo.len()) - 1) as __mmask16;
        // SAFETY: the masks read each slice's values; eight words are written (asserted).
        unsafe {
            let load = |v: &[f32]| _mm512_maskz_loadu_ps(mask, v.as_ptr());
            let l = load(lo);
            let h = hi.map_or(_mm512_setzero_ps(), load);
            _mm512_mask_storeu_epi32(dst.as_mut_ptr().cast(), 0x00ff, pair_vectors(l, h));
        }
    }

    /// Sixteen columns' pairs: word `i` holds `lo[i]` rounded to bf16 (nearest even, NaN kept)
    /// in its low half and `hi[i]` in its high half.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(in crate::cpu_kernels) fn pair_vectors(lo: __m512, hi: __m512) -> __m512i {
        // `_mm512_cvtne2ps_pbh(h, l)` puts `l`'s 16 lanes first, then `h`'s; the permutation
        // interleaves them.
        const INTERLEAVE: [i16; 32] = {
            let mut lanes = [0i16; 32];
            let mut i = 0;
            while i < 32 {
                lanes[i] = if i % 2 == 0 {
                    (i / 2) as i16
                } else {
                    16 + (i / 2) as i16
                };
                i += 1;
            }
            lanes
        };
        // SAFETY: 64 bytes of a constant; a bit-for-bit reinterpretation of 32 bf16 lanes.
        unsafe {
            let index = _mm512_loadu_si512(INTERLEAVE.as_ptr().cast());
            let both = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_permutexvar_epi16(index, both)
        }
    }

    /// All panels: `a` holds `⌈m/MR⌉` panels of `pairs·MR` words, `b` `⌈n/NR⌉` panels of
    /// `pairs·NR`; `bias` (if any) one value per row of `dst`.
    ///
    /// # Safety
    /// AVX-512 F and BF16 present; `dst` in bounds and exclusive.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn gemm_packed(
        a: &[u32],
        b: &[u32],
        pairs: usize,
        dst: MatMut,
        bias: Option<&[f32]>,
        epilogue: Epilogue,
    ) {
        let (m, n) = (dst.rows, dst.cols);
        let zeros = [0f32; MR];
        for mp in 0..m.div_ceil(MR) {
            let a_panel = &a[mp * pairs * MR..][..pairs * MR];
            let rows = MR.min(m - mp * MR);
            let shifts = bias.map_or(&zeros[..rows], |b| &b[mp * MR..][..rows]);
            for np in 0..n.div_ceil(NR) {
                let b_panel = &b[np * pairs * NR..][..pairs * NR];
                let cols = NR.min(n - np * NR);
                let out = dst.offset + mp * MR * dst.row_stride + np * NR;
                // SAFETY: as the caller's; the tile is `rows × cols` inside `dst`.
                unsafe {
                    let store = Store {
                        out: dst.base.add(out),
                        stride: dst.row_stride,
                        rows,
                        cols,
                    };
                    // A last panel of at most 16 columns needs half the products.
                    if cols > 16 {
                        tile::<true>(a_panel, b_panel, pairs, store, shifts, epilogue)
                    } else {
                        tile::<false>(a_panel, b_panel, pairs, store, shifts, epilogue)
                    }
                };
            }
        }
    }

    /// Where a block's results go: `rows × cols` values from `out`, rows `stride` apart.
    struct Store {
        out: *mut f32,
        stride: usize,
        rows: usize,
        cols: usize,
    }

    /// One `MR × NR` block: sixteen accumulators, two column vectors and one broadcast weight
    /// pair per step; stores `act(sum + shift[row])` for `rows × cols` of it. Without `WIDE`
    /// only the first 16 columns are computed (`cols` ≤ 16).
    ///
    /// # Safety
    /// AVX-512 F and BF16 present; `store.out` valid for `rows` rows of `cols` values, `stride`
    /// apart; `shift` holds `rows` values.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile<const WIDE: bool>(
        a: &[u32],
        b: &[u32],
        pairs: usize,
        store: Store,
        shift: &[f32],
        epilogue: Epilogue,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let steps = b[..pairs * NR]
            .chunks_exact(NR)
            .zip(a[..pairs * MR].chunks_exact(MR));
        for (bq, aq) in steps {
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
                if WIDE {
                    row[1] = _mm512_dpbf16_ps(row[1], wv, b1);
                }
            }
        }
        let mask = |first: usize| -> __mmask16 {
            let width = store.cols.saturating_sub(first).min(16);
            if width == 16 {
                0xffff
            } else {
                ((1u32 << width) - 1) as __mmask16
            }
        };
        let (m0, m1) = (mask(0), mask(16));
        debug_assert!(WIDE || m1 == 0, "a narrow block holds 16 columns at most");
        // The activation as `max(z, z·slope)` (leaky), `max(z, 0)` (relu) or `z`; `max` takes
        // its second operand where the first is NaN: relu(NaN) = 0, as `f32::max` gives.
        let (relu, leaky, slope) = match epilogue {
            Epilogue::Identity => (false, false, 0.0),
            Epilogue::Relu => (true, false, 0.0),
            Epilogue::LeakyRelu(s) => (false, true, s),
        };
        let (zero, slope) = (_mm512_setzero_ps(), _mm512_set1_ps(slope));
        // Over the whole array (not `0..rows`) so that the accumulators stay in registers.
        for (r, row) in acc.iter().enumerate() {
            if r >= store.rows {
                break;
            }
            let s = _mm512_set1_ps(shift[r]);
            let mut v0 = _mm512_add_ps(row[0], s);
            let mut v1 = _mm512_add_ps(row[1], s);
            if relu {
                v0 = _mm512_max_ps(v0, zero);
                v1 = _mm512_max_ps(v1, zero);
            } else if leaky {
                v0 = _mm512_max_ps(v0, _mm512_mul_ps(v0, slope));
                v1 = _mm512_max_ps(v1, _mm512_mul_ps(v1, slope));
            }
            // SAFETY: row `r` of the block holds `cols` values; the masks cover no more.
            unsafe {
                let p = store.out.add(r * store.stride);
                _mm512_mask_storeu_ps(p, m0, v0);
                if m1 != 0 {
                    _mm512_mask_storeu_ps(p.add(16), m1, v1);
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

    /// The engines this CPU runs.
    fn engines() -> Vec<Bf16Engine> {
        let mut engines = vec![Bf16Engine::Vector];
        if amx_available() {
            engines.push(Bf16Engine::Tiles);
        }
        engines
    }

    /// `b` (`k × n`, row-major) packed pair by pair for `engine`, as the convolution packs its
    /// tiles.
    fn packed_columns(b: &[f32], k: usize, n: usize, engine: Bf16Engine) -> PackedColumns {
        let mut columns = PackedColumns::default();
        // Stale words from a larger operand must not leak into the smaller one.
        columns.reset_for(k + 3, n + 40, engine);
        let writer = columns.writer();
        for q in 0..(k + 3).div_ceil(2) {
            let junk = vec![f32::NAN; n + 40];
            #[allow(unsafe_code)]
            // SAFETY: one thread.
            unsafe {
                writer.write(q, &junk, Some(&junk))
            };
        }
        columns.reset_for(k, n, engine);
        let writer = columns.writer();
        for q in 0..k.div_ceil(2) {
            let hi = (2 * q + 1 < k).then(|| &b[(2 * q + 1) * n..][..n]);
            #[allow(unsafe_code)]
            // SAFETY: one thread.
            unsafe {
                writer.write(q, &b[2 * q * n..][..n], hi)
            };
        }
        columns
    }

    /// An `m × k` matrix stored column by column.
    struct ColumnMajor {
        data: Vec<f32>,
        rows: usize,
        cols: usize,
    }

    impl ColumnMajor {
        /// The matrix as a view with contiguous columns.
        fn view(&self) -> MatRef<'_> {
            MatRef {
                data: &self.data,
                offset: 0,
                rows: self.rows,
                cols: self.cols,
                row_stride: 1,
                col_stride: self.rows,
            }
        }
    }

    /// `value(r, c)` for the `m × k` matrix, stored column by column (a transposed view).
    fn column_major(m: usize, k: usize, value: impl Fn(usize, usize) -> f32) -> ColumnMajor {
        let mut data = vec![0f32; m * k];
        for r in 0..m {
            for c in 0..k {
                data[c * m + r] = value(r, c);
            }
        }
        ColumnMajor {
            data,
            rows: m,
            cols: k,
        }
    }

    /// A deterministic sequence in [-1, 1).
    fn values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    #[allow(clippy::print_stderr)] // says why it checked nothing
    fn packing_by_rows_or_by_columns_follows_the_layout() {
        if !native_bf16() {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        }
        // Partial panels, odd k, k past one 16-value block, a row stride wider than k.
        let mut reused = PackedWeights::default();
        for &(m, k, stride) in &[
            (1, 1, 1),
            (9, 5, 7),
            (16, 33, 40),
            (13, 70, 70),
            (3, 17, 17),
        ] {
            let data = values(m * stride + 3, (m * k) as u64);
            let value = |r: usize, c: usize| data[3 + r * stride + c];
            // The layout by its definition: panel p, pair q, row i.
            let pairs = k.div_ceil(2);
            let mut want = vec![0u32; m.div_ceil(MR) * pairs * MR];
            for r in 0..m {
                for q in 0..pairs {
                    let hi = if 2 * q + 1 < k {
                        value(r, 2 * q + 1)
                    } else {
                        0.0
                    };
                    want[(r / MR * pairs + q) * MR + r % MR] = pair(value(r, 2 * q), hi);
                }
            }
            let rows = MatRef {
                data: &data,
                offset: 3,
                rows: m,
                cols: k,
                row_stride: stride,
                col_stride: 1,
            };
            // Packed into a buffer a larger operand used before: no stale words.
            reused.repack_for(&rows, Bf16Engine::Vector);
            assert_eq!(&reused.data[..], &want[..], "{m}×{k} by rows");
            assert_eq!((reused.rows, reused.cols, reused.pairs), (m, k, pairs));
            // The same matrix stored column by column (a transposed view).
            let by_column = column_major(m, k, value);
            assert_eq!(
                &PackedWeights::pack_for(&by_column.view(), Bf16Engine::Vector).data[..],
                &want[..],
                "{m}×{k} by columns"
            );
        }
    }

    #[test]
    fn tile_packing_by_rows_or_by_columns_follows_the_layout() {
        // Partial row blocks, odd k, k past one tile's 32 values, a row stride wider than k.
        let mut reused = PackedWeights::default();
        for &(m, k, stride) in &[
            (1, 1, 1),
            (17, 5, 7),
            (16, 33, 40),
            (35, 70, 70),
            (3, 97, 97),
        ] {
            let data = values(m * stride + 3, (m * k) as u64 + 5);
            let value = |r: usize, c: usize| data[3 + r * stride + c];
            // The layout by its definition: tile (r / 16, q / 16), row r % 16, word q % 16.
            let kblocks = k.div_ceil(32);
            let mut want = vec![0u32; m.div_ceil(16) * kblocks * TILE_WORDS];
            for r in 0..m {
                for q in 0..k.div_ceil(2) {
                    let hi = if 2 * q + 1 < k {
                        value(r, 2 * q + 1)
                    } else {
                        0.0
                    };
                    let tile = (r / 16 * kblocks + q / 16) * TILE_WORDS;
                    want[tile + r % 16 * 16 + q % 16] = pair(value(r, 2 * q), hi);
                }
            }
            let rows = MatRef::with_rows(&data, 3, m, k, stride);
            // Into a buffer a larger operand left full of non-zero words.
            reused.repack_for(
                &MatRef::with_rows(&vec![1.0; 64 * 200], 0, 64, 200, 200),
                Bf16Engine::Tiles,
            );
            reused.repack_for(&rows, Bf16Engine::Tiles);
            assert_eq!(&reused.data[..], &want[..], "{m}×{k} by rows");
            assert_eq!(
                (reused.rows, reused.cols, reused.pairs),
                (m, k, kblocks * 16)
            );
            let by_column = column_major(m, k, value);
            assert_eq!(
                &PackedWeights::pack_for(&by_column.view(), Bf16Engine::Tiles).data[..],
                &want[..],
                "{m}×{k} by columns"
            );
        }
    }

    #[test]
    fn tile_columns_pad_their_pairs_with_zeros() {
        let mut columns = PackedColumns::default();
        columns.data.resize(4096, u32::MAX);
        columns.reset_for(37, 40, Bf16Engine::Tiles);
        // 19 pairs padded to 32 in each of two panels; pairs 19..32 are zero.
        assert_eq!((columns.pairs, columns.stride), (19, 32));
        for panel in columns.words().chunks_exact(32 * NR) {
            assert!(panel[19 * NR..].iter().all(|&w| w == 0));
            assert!(panel[..19 * NR].iter().all(|&w| w == u32::MAX));
        }
    }

    #[test]
    #[allow(clippy::print_stderr)] // says why it checked nothing
    fn transposed_packing_equals_pair_by_pair_packing() {
        if !native_bf16() {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        }
        for &(k, n) in &[(1, 1), (5, 9), (33, 32), (70, 41), (16, 100)] {
            // `t` is `n × k` with a row stride of k + 2.
            let stride = k + 2;
            let t = values(n * stride, (k * n) as u64 + 1);
            let mut b = vec![0f32; k * n];
            for j in 0..n {
                for kk in 0..k {
                    b[kk * n + j] = t[j * stride + kk];
                }
            }
            for engine in engines() {
                let want = packed_columns(&b, k, n, engine);
                let mut got = PackedColumns::default();
                got.pack_transposed_for(
                    &MatRef {
                        data: &t,
                        offset: 0,
                        rows: n,
                        cols: k,
                        row_stride: stride,
                        col_stride: 1,
                    },
                    engine,
                );
                assert_eq!((got.rows, got.cols, got.pairs), (k, n, k.div_ceil(2)));
                assert_eq!(got.stride, want.stride);
                // Every word of a column inside `n` (the last panel's others are never read).
                for (i, (g, w)) in got.words().iter().zip(want.words()).enumerate() {
                    let column = (i / (got.stride * NR)) * NR + i % NR;
                    if column < n {
                        assert_eq!(g, w, "{k}×{n} {engine:?}: word {i} (column {column})");
                    }
                }
            }
        }
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
        let cases = [
            (1, 1, 1),
            (8, 2, 32),
            (9, 5, 33),
            (64, 576, 128),
            (13, 27, 70),
            // Odd row blocks of 16 (the last one alone), pairs past one tile, a panel's tail.
            (40, 70, 70),
            (48, 1100, 17),
        ];
        for (engine, &(m, k, n)) in engines()
            .into_iter()
            .flat_map(|e| cases.iter().map(move |c| (e, c)))
        {
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
            let packed = PackedWeights::pack_for(&lhs, engine);
            let columns = packed_columns(&b, k, n, engine);
            // Rows from `first` on (a whole panel), with a bias and leaky ReLU when there are
            // several panels; all rows plainly otherwise.
            let height = match engine {
                Bf16Engine::Vector => MR,
                Bf16Engine::Tiles => TILE_ROWS,
            };
            let first = if m > height { height } else { 0 };
            let bias: Vec<f32> = (0..m).map(|_| next()).collect();
            let post = PostOp {
                bias: (first > 0).then_some(&bias[..]),
                epilogue: if first > 0 {
                    Epilogue::LeakyRelu(0.1)
                } else {
                    Epilogue::Identity
                },
            };
            let dst = MatMut {
                rows: m - first,
                ..dst
            };
            #[allow(unsafe_code)]
            // SAFETY: `out` is this test's own buffer.
            unsafe {
                gemm_bf16(dst, &packed, first, &columns, post)
            };
            let want = reference(&a, &b, m, k, n);
            for i in 0..m - first {
                let row = first + i;
                for j in 0..n {
                    let got = f64::from(out[2 + i * stride + j]);
                    let mut w = want[row * n + j];
                    if first > 0 {
                        w += f64::from(bias[row]);
                        w = w.max(0.1 * w);
                    }
                    // f32 accumulation of k exact bf16 products.
                    assert!(
                        (got - w).abs() <= 1e-6 * (k as f64) + 1e-6 * w.abs(),
                        "{engine:?} {m}x{k}x{n} at ({row}, {j}): {got} vs {w}"
                    );
                }
                // Nothing outside the rows was written.
                assert!(
                    out[2 + i * stride + n].is_nan(),
                    "{m}x{k}x{n}: row {row} overran"
                );
            }
            assert!(
                out[2 + (m - first) * stride].is_nan(),
                "{m}x{k}x{n}: rows overran"
            );
            assert!(out[0].is_nan() && out[1].is_nan());
        }
    }
}
