//! The inference convolutions of [`super::conv`] with bf16 products: each tile's image columns
//! are packed straight from the input planes into the bf16 pairs the product reads (no f32
//! im2col matrix in between), once per tile however many threads multiply it, and the bias and
//! activation are applied as the product stores its results.

use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

use super::bf16_gemm::{PackedColumns, PackedWeights, PostOp, gemm_bf16};
use super::conv::{
    ConvGeometry, Epilogue, PRODUCT, SendPtr, Tile, for_each_tile, im2col_row, plan,
    scatter_images, scratch,
};
use super::sgemm::{MatMut, MatRef, in_row_blocks};
use super::thread_scratch::with_thread_scratch;

thread_local! {
    /// The tile being multiplied, packed (kept between tiles and layers; grows only).
    static PACKED_TILE: Cell<PackedColumns> = Cell::new(PackedColumns::default());
    /// A weight gradient's tile operands, packed, and their product.
    static GRADIENT_TILE: Cell<(PackedWeights, PackedColumns, Vec<f32>)> =
        Cell::new(Default::default());
}

/// `acc += gradient · columnsᵀ` with bf16 operands and f32 sums: one tile's share of a weight
/// gradient, `gradient` the output gradient `O × n` and `columns` the image columns `P × n`
/// (rows contiguous in both), `acc` `O × P` row-major. Both are rounded to bf16 as they are
/// packed, pairs of pixels per word. Single-threaded.
pub(super) fn accumulate_weight_gradient(
    acc: &mut [f32],
    gradient: &MatRef<'_>,
    columns: &MatRef<'_>,
) {
    let (o, p) = (gradient.rows, columns.rows);
    assert!(gradient.cols == columns.cols && acc.len() == o * p);
    with_thread_scratch(&GRADIENT_TILE, |(lhs, rhs, product)| {
        lhs.repack(gradient);
        rhs.pack_transposed(columns);
        let product = scratch(product, o * p);
        let identity = PostOp {
            bias: None,
            epilogue: Epilogue::Identity,
        };
        #[allow(unsafe_code)]
        // SAFETY: the product is this thread's scratch block.
        unsafe {
            gemm_bf16(MatMut::row_major(product, o, p), lhs, 0, rhs, identity)
        };
        for (a, v) in acc.iter_mut().zip(product.iter()) {
            *a += v;
        }
    });
}

/// `out = act(conv(x, w) + bias)` with bf16 products: `x` `(B, I, H, W)`, `w` the `(O, I·k²)`
/// kernel packed, `out` `(B, O, H, W)`.
///
/// # Safety
/// As `conv_forward_raw`: `out` valid for `B·O·H·W` writes (possibly uninitialised) and
/// accessed by no one else during the call; `w` is `O × I·k²` and the bias (if any) holds `O`
/// values (the caller checked both).
#[allow(unsafe_code)]
pub(super) unsafe fn conv_forward_bf16(
    x: &[f32],
    w: &PackedWeights,
    post: PostOp<'_>,
    g: &ConvGeometry,
    out: *mut f32,
) {
    let (hw, o) = (g.pixels(), g.out_channels);
    let (tiles, inner) = plan(g);
    let out = SendPtr(out);
    for_each_tile(&tiles, inner, |tile| {
        with_thread_scratch(&PACKED_TILE, |columns| {
            pack_tile(x, g, tile, columns, inner);
            let columns = &*columns;
            let n = tile.columns(g);
            if tile.images == 1 {
                // Straight into the image's output rows.
                let dst = MatMut {
                    base: out.get(),
                    len: g.batch * o * hw,
                    offset: tile.first_image * o * hw + tile.first_row * g.width,
                    rows: o,
                    cols: n,
                    row_stride: hw,
                };
                // SAFETY: tiles cover disjoint pixels of `out`, which is the caller's alone.
                unsafe { multiply(dst, w, columns, post, inner) };
            } else {
                // Several whole images: one product into a scratch block, then scattered.
                with_thread_scratch(&PRODUCT, |product| {
                    let product = scratch(product, o * n);
                    let block = MatMut::row_major(product, o, n);
                    // SAFETY: the scratch block belongs to this thread's tile.
                    unsafe { multiply(block, w, columns, post, inner) };
                    // SAFETY: this tile owns these images of `out`; bias and activation are
                    // already applied.
                    unsafe { scatter_images(product, g, tile, out, |_, _| {}) };
                });
            }
        });
    });
}

/// `dst = act(w · columns + bias)`, its rows split across `threads`.
///
/// # Safety
/// `dst` is in bounds and accessed by no one else during the call.
#[allow(unsafe_code)]
unsafe fn multiply(
    dst: MatMut,
    w: &PackedWeights,
    columns: &PackedColumns,
    post: PostOp<'_>,
    threads: usize,
) {
    let split = in_row_blocks(dst, threads, |block, first| {
        // SAFETY: the blocks are disjoint rows of the caller's exclusive region.
        unsafe { gemm_bf16(block, w, first, columns, post) };
    });
    if !split {
        // SAFETY: the caller's exclusive region, whole.
        unsafe { gemm_bf16(dst, w, 0, columns, post) };
    }
}

/// Packs the tile's im2col matrix (`I·k² × n`) into `columns`, pair of rows by pair of rows,
/// each row built in a small buffer (or, for a 1×1 kernel on one image, read in place); with
/// `threads > 1` the pairs are spread over the pool.
fn pack_tile(
    x: &[f32],
    g: &ConvGeometry,
    tile: &Tile,
    columns: &mut PackedColumns,
    threads: usize,
) {
    let (k, n) = (g.patch(), tile.columns(g));
    columns.reset(k, n);
    let pairs = columns.pairs();
    let writer = columns.writer();
    let direct = tile.images == 1 && cfg!(target_arch = "x86_64");
    let edges = if direct {
        ImageEdges::of(g, tile)
    } else {
        ImageEdges::default()
    };
    let pack = |range: Range<usize>| {
        if direct {
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            // SAFETY: the writer exists, so the CPU has the features; one task per pair range.
            unsafe {
                avx512::pack_from_planes(x, g, tile, &edges, &writer, range)
            };
            return;
        }
        let (mut lo, mut hi) = (vec![0f32; n], vec![0f32; n]);
        for q in range {
            let first = tile_row(x, g, tile, 2 * q, &mut lo);
            let second = (2 * q + 1 < k).then(|| tile_row(x, g, tile, 2 * q + 1, &mut hi));
            #[allow(unsafe_code)]
            // SAFETY: each range of pairs is packed by one task.
            unsafe {
                writer.write(q, first, second)
            };
        }
    };
    if threads > 1 && pairs >= 2 * threads {
        let per_task = pairs.div_ceil(threads);
        (0..threads)
            .into_par_iter()
            .for_each(|t| pack(t * per_task..((t + 1) * per_task).min(pairs)));
    } else {
        pack(0..pairs);
    }
}

/// For a tile of one image, per 16 of its columns: the lanes whose pixel is in the image's
/// first column (`left`) or last column (`right`), where a tap reaching left or right falls
/// outside the image.
#[derive(Default)]
struct ImageEdges {
    left: Vec<u16>,
    right: Vec<u16>,
}

impl ImageEdges {
    fn of(g: &ConvGeometry, tile: &Tile) -> Self {
        // Whole 32-column panels, so that the last panel's second half is covered too.
        let chunks = tile.columns(g).div_ceil(32) * 2;
        let (mut left, mut right) = (vec![0u16; chunks], vec![0u16; chunks]);
        let p0 = tile.first_row * g.width;
        for j in 0..tile.columns(g) {
            let x = (p0 + j) % g.width;
            if x == 0 {
                left[j / 16] |= 1 << (j % 16);
            }
            if x == g.width - 1 {
                right[j / 16] |= 1 << (j % 16);
            }
        }
        Self { left, right }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{ConvGeometry, ImageEdges, Tile};
    use crate::cpu_kernels::bf16_gemm::PairWriter;
    use crate::cpu_kernels::bf16_gemm::avx512::pair_vectors;

    /// One im2col row of a one-image tile, as masked loads from its input plane: column `j`
    /// is `plane[p0 + j + shift]` where lane `j` is valid, zero elsewhere.
    struct ShiftedRow {
        /// The row's input plane (`H·W` values).
        plane: *const f32,
        /// `dy·W + dx` of the row's tap.
        shift: isize,
        /// Columns whose source row lies inside the image: `valid.start .. valid.end`.
        valid: Range<usize>,
        /// −1, 0 or +1: the tap's column offset (which image edge it must not cross).
        dx: isize,
    }

    impl ShiftedRow {
        /// Row `r` (input channel `r / k²`, tap `r % k²`) of the tile, or `None` past `k`.
        fn new(x: &[f32], g: &ConvGeometry, tile: &Tile, r: usize) -> Option<Self> {
            if r >= g.patch() {
                return None;
            }
            let (hw, w) = (g.pixels(), g.width as isize);
            let (c, dy, dx) = g.im2col_source(r);
            let plane = &x[(tile.first_image * g.in_channels + c) * hw..][..hw];
            let p0 = (tile.first_row * g.width) as isize;
            let n = tile.columns(g) as isize;
            // Columns j with 0 ≤ p0 + j + dy·W < H·W: the source row exists.
            let start = (-dy * w - p0).clamp(0, n) as usize;
            let end = (hw as isize - dy * w - p0).clamp(0, n) as usize;
            Some(Self {
                plane: plane.as_ptr().wrapping_offset(p0),
                shift: dy * w + dx,
                valid: start..end.max(start),
                dx,
            })
        }

        /// The 16 columns from `16·chunk`.
        ///
        /// # Safety
        /// AVX-512 F present; `chunk` within the edges' chunks.
        #[allow(unsafe_code)]
        #[target_feature(enable = "avx512f")]
        unsafe fn load(&self, chunk: usize, edges: &ImageEdges) -> __m512 {
            let j0 = chunk * 16;
            let lanes = |end: usize| -> u32 {
                let count = end.saturating_sub(j0).min(16);
                ((1u64 << count) - 1) as u32
            };
            let mut mask = lanes(self.valid.end) & !lanes(self.valid.start);
            match self.dx {
                -1 => mask &= !u32::from(edges.left[chunk]),
                1 => mask &= !u32::from(edges.right[chunk]),
                _ => {}
            }
            if mask == 0 {
                return _mm512_setzero_ps();
            }
            // Masked lanes are not accessed: only their (wrapping) address is formed.
            // SAFETY: a set lane's source row (`valid`) and column (edge masks) are in the plane.
            unsafe {
                _mm512_maskz_loadu_ps(
                    mask as __mmask16,
                    self.plane.wrapping_offset(j0 as isize + self.shift),
                )
            }
        }
    }

    /// Packs pairs `range` of a one-image tile straight from the input planes.
    ///
    /// # Safety
    /// AVX-512 F, BW and BF16 present; tasks running at the same time pack distinct pairs;
    /// `edges` are the tile's.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_from_planes(
        x: &[f32],
        g: &ConvGeometry,
        tile: &Tile,
        edges: &ImageEdges,
        writer: &PairWriter<'_>,
        range: Range<usize>,
    ) {
        assert_eq!(tile.images, 1);
        assert_eq!(edges.left.len(), writer.cols().div_ceil(32) * 2);
        for q in range {
            let lo = ShiftedRow::new(x, g, tile, 2 * q).expect("pairs cover the rows");
            let hi = ShiftedRow::new(x, g, tile, 2 * q + 1);
            for (chunk, _) in edges.left.iter().enumerate() {
                // SAFETY: the chunk is the edges'; the panel's words belong to pair `q`
                // (this task's); 16 words from `(chunk % 2)·16` of the panel's 32.
                unsafe {
                    let l = lo.load(chunk, edges);
                    let h = hi
                        .as_ref()
                        .map_or(_mm512_setzero_ps(), |h| h.load(chunk, edges));
                    let words = writer.panel(q, chunk / 2).add((chunk % 2) * 16);
                    _mm512_storeu_si512(words.cast(), pair_vectors(l, h));
                }
            }
        }
    }
}

/// Row `r` of the tile's im2col matrix: in place for a 1×1 kernel on one image, else built in
/// `buf` (`n` values).
fn tile_row<'a>(
    x: &'a [f32],
    g: &ConvGeometry,
    tile: &Tile,
    r: usize,
    buf: &'a mut [f32],
) -> &'a [f32] {
    if g.kernel == 1 && tile.images == 1 {
        let hw = g.pixels();
        let plane = &x[(tile.first_image * g.in_channels + r) * hw..][..hw];
        return &plane[tile.first_row * g.width..][..tile.columns(g)];
    }
    im2col_row(x, g, tile, r, buf);
    buf
}
