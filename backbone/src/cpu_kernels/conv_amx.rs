//! The inference convolutions on AMX tiles (bf16 products, f32 sums) as an implicit matrix
//! product: no im2col matrix. The input is packed once per call into bf16 pairs of channels,
//! each pair's image padded with zero rows and columns (the kernel's reach) and laid out as one
//! row-major plane; a 3×3 tap is then the same plane read from another offset. Output pixels
//! are columns of that padded grid, so each product covers `W + 2` columns per image row, the
//! two past the row's end being discarded on the way out (4-22 % more products on TResNet's 56-7
//! pixel maps, against the 9× packing of an im2col matrix).
//!
//! Weights: [`ConvTiles`], per block of 16 output channels, per tap, per 32 input channels, one
//! 16 × 16-word tile. Products: 32 output channels × 32 columns at a time
//! ([`super::amx::kernels::products`]), then the bias, the activation and (for a residual
//! block's last convolution) the shortcut's add and ReLU on their way into the output planes.

use std::cell::Cell;

use rayon::prelude::*;

use super::aligned::AlignedWords;
use super::amx::{TILE_PAIRS, TILE_ROWS, TILE_WORDS};
use super::bf16_gemm::{PostOp, pair};
use super::conv::{ConvGeometry, Residual, SendPtr};
use super::thread_scratch::with_thread_scratch;

thread_local! {
    /// The padded bf16 input of the convolution this thread is running (kept between layers;
    /// grows only), on huge pages: a tile reads 16 pair planes, up to 14 KB apart.
    static PADDED_INPUT: Cell<AlignedWords> = Cell::new(AlignedWords::on_huge_pages());
}

/// Columns per panel (two tiles of 16).
const PANEL: usize = 32;
/// Panels of one image that one task multiplies by each of its blocks of output channels.
const PANELS_PER_TASK: usize = 8;

/// A kernel `(O, I, k, k)` rounded to bf16 and packed as tiles: tile `(row block, tap, pair
/// block)` at `((row block · k² + tap) · pair blocks + pair block) · 256` words, row `r` of it
/// holding output channel `16·row block + r`, word `q` the pair of input channels
/// `2(16·pair block + q)` and `+1` at that tap (zero past the kernel).
pub struct ConvTiles {
    data: AlignedWords,
    out_channels: usize,
    in_channels: usize,
    kernel: usize,
    /// Blocks of 16 pairs of input channels.
    kblocks: usize,
}

impl std::fmt::Debug for ConvTiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ConvTiles({}×{}×{k}×{k}, bf16)",
            self.out_channels,
            self.in_channels,
            k = self.kernel
        )
    }
}

impl ConvTiles {
    /// Packs `w`, `(O, I, k, k)` row-major.
    pub fn pack(w: &[f32], out_channels: usize, in_channels: usize, kernel: usize) -> Self {
        let taps = kernel * kernel;
        assert_eq!(
            w.len(),
            out_channels * in_channels * taps,
            "conv tiles: a kernel of another shape"
        );
        Self::pack_by(out_channels, in_channels, kernel, |o, c, t| {
            w[(o * in_channels + c) * taps + t]
        })
    }

    /// Packs the kernel of the input gradient of a convolution with `w` `(O, I, k, k)`: `w`
    /// turned by 180° with its channel axes swapped, `(I, O, k, k)`, read from `w` in place.
    pub fn input_gradient_of(
        w: &[f32],
        out_channels: usize,
        in_channels: usize,
        kernel: usize,
    ) -> Self {
        let taps = kernel * kernel;
        assert_eq!(
            w.len(),
            out_channels * in_channels * taps,
            "conv tiles: a kernel of another shape"
        );
        Self::pack_by(in_channels, out_channels, kernel, |i, o, t| {
            w[(o * in_channels + i) * taps + taps - 1 - t]
        })
    }

    /// Packs the `(O, I, k, k)` kernel whose value at output channel `o`, input channel `c` and
    /// tap `t` is `value(o, c, t)`, its blocks of 16 output channels spread over the pool.
    fn pack_by(
        out_channels: usize,
        in_channels: usize,
        kernel: usize,
        value: impl Fn(usize, usize, usize) -> f32 + Sync,
    ) -> Self {
        let taps = kernel * kernel;
        let kblocks = in_channels.div_ceil(2 * TILE_PAIRS);
        let row_blocks = out_channels.div_ceil(TILE_ROWS);
        let mut data = AlignedWords::default();
        data.resize(row_blocks * taps * kblocks * TILE_WORDS, 0);
        let at = |o: usize, c: usize, t: usize| {
            if o < out_channels && c < in_channels {
                value(o, c, t)
            } else {
                0.0
            }
        };
        let block_words = taps * kblocks * TILE_WORDS;
        if block_words > 0 {
            data.par_chunks_mut(block_words)
                .enumerate()
                .for_each(|(rb, block)| {
                    for t in 0..taps {
                        for cb in 0..kblocks {
                            let tile = &mut block[(t * kblocks + cb) * TILE_WORDS..][..TILE_WORDS];
                            for (r, row) in tile.chunks_exact_mut(TILE_PAIRS).enumerate() {
                                let o = rb * TILE_ROWS + r;
                                for (q, word) in row.iter_mut().enumerate() {
                                    let c = 2 * (cb * TILE_PAIRS + q);
                                    *word = pair(at(o, c, t), at(o, c + 1, t));
                                }
                            }
                        }
                    }
                });
        }
        Self {
            data,
            out_channels,
            in_channels,
            kernel,
            kblocks,
        }
    }

    /// Tiles per block of 16 output channels (`k² · pair blocks`), one per product step.
    fn steps(&self) -> usize {
        self.kernel * self.kernel * self.kblocks
    }

    /// The tiles of row block `rb`.
    fn row_block(&self, rb: usize) -> &[u32] {
        &self.data[rb * self.steps() * TILE_WORDS..][..self.steps() * TILE_WORDS]
    }
}

/// Where the padded input lives: per image, per pair of input channels (their count rounded up
/// to whole tiles), one plane of `plane` words: `pad` zero rows, the `H` image rows each between
/// `pad` zero words on either side (`row` words from one row to the next), zeros after, enough
/// for the last panel's reads at the farthest tap.
///
/// A tap reads its tile rows from an offset of `dy·row + dx` words, mostly not a multiple of 16,
/// so those rows straddle two cache lines. Rows padded to 16 words with three copies of each
/// plane, each moved one word further, would align every tap; measured on whole TResNet-M
/// passes on a Xeon with AMX that was 4-10 % slower (the copies' packing and the padded columns
/// cost more than the split loads).
#[derive(Debug, Clone, Copy)]
struct PaddedGrid {
    pad: usize,
    row: usize,
    plane: usize,
    pairs: usize,
    /// Panels of 32 output columns per image (`H · row` columns).
    panels: usize,
}

impl PaddedGrid {
    fn of(g: &ConvGeometry, kblocks: usize) -> Self {
        let pad = g.kernel / 2;
        let row = g.width + 2 * pad;
        let panels = (g.height * row).div_ceil(PANEL);
        // The farthest tap reads `2·pad` rows and columns on; the last panel reads 32 columns.
        let plane = (panels * PANEL + 2 * pad * row + 2 * pad).next_multiple_of(16);
        Self {
            pad,
            row,
            plane,
            pairs: kblocks * TILE_PAIRS,
            panels,
        }
    }

    /// Words per image: its pair planes.
    fn image_words(&self) -> usize {
        self.pairs * self.plane
    }

    /// Byte offsets of the product steps from a panel's first word, in the weights' order (tap,
    /// then pair block): the tap's shift in the padded grid, plus 16 pair planes per block.
    fn step_offsets(&self, kernel: usize, kblocks: usize) -> Vec<usize> {
        let mut offsets = Vec::with_capacity(kernel * kernel * kblocks);
        for t in 0..kernel * kernel {
            let (ty, tx) = (t / kernel, t % kernel);
            for cb in 0..kblocks {
                offsets.push((cb * TILE_PAIRS * self.plane + ty * self.row + tx) * 4);
            }
        }
        offsets
    }

    /// The runs of a panel's columns that are output pixels: `(first column within the panel,
    /// first pixel of the output plane, length)`, adjacent runs merged.
    fn runs(&self, panel: usize, g: &ConvGeometry, runs: &mut Vec<(usize, usize, usize)>) {
        runs.clear();
        let first = panel * PANEL;
        let end = (first + PANEL).min(g.height * self.row);
        let mut y = first / self.row;
        while y < g.height && y * self.row < end {
            let start = first.max(y * self.row);
            let stop = end.min(y * self.row + g.width);
            if start < stop {
                let (column, pixel, len) = (
                    start - first,
                    y * g.width + start - y * self.row,
                    stop - start,
                );
                match runs.last_mut() {
                    Some(last) if last.0 + last.2 == column && last.1 + last.2 == pixel => {
                        last.2 += len;
                    }
                    _ => runs.push((column, pixel, len)),
                }
            }
            y += 1;
        }
    }
}

/// `out = act(conv(x, w) + bias)` on AMX tiles, or with a residual `then(act(…) + r)`: `x`
/// `(B, I, H, W)`, `out` (and `r`) `(B, O, H, W)`.
///
/// # Safety
/// [`super::amx_available`] is true; `out` valid for `B·O·H·W` writes (possibly uninitialised)
/// and accessed by no one else during the call; the bias (if any) holds `O` values.
#[allow(unsafe_code)]
pub(super) unsafe fn conv_forward_tiles(
    x: &[f32],
    w: &ConvTiles,
    post: PostOp<'_>,
    residual: Option<Residual<'_>>,
    g: &ConvGeometry,
    out: *mut f32,
) {
    assert!(
        w.out_channels == g.out_channels
            && w.in_channels == g.in_channels
            && w.kernel == g.kernel
            && x.len() == g.batch * g.in_channels * g.pixels(),
        "conv tiles: {w:?} for {g:?}"
    );
    assert!(post.bias.is_none_or(|b| b.len() == g.out_channels));
    assert!(residual.is_none_or(|r| r.values.len() == g.batch * g.out_channels * g.pixels()));
    if g.batch * g.out_channels * g.pixels() == 0 {
        return;
    }
    let grid = PaddedGrid::of(g, w.kblocks);
    let offsets = grid.step_offsets(g.kernel, w.kblocks);
    let row_pairs = g.out_channels.div_ceil(2 * TILE_ROWS);
    let chunks = grid.panels.div_ceil(PANELS_PER_TASK);
    let threads = rayon::current_num_threads();
    let out = SendPtr(out);
    let words = grid.image_words();
    if g.batch >= threads {
        // One task per image, which packs the image itself and multiplies all of it: its columns
        // are then in this core's caches, not half of them in the other core's (measured on a
        // Xeon with AMX: products 5-30 % slower on columns another core just wrote).
        (0..g.batch).into_par_iter().for_each(|image| {
            with_thread_scratch(&PADDED_INPUT, |input| {
                if input.len() < words {
                    input.resize(words, 0);
                }
                pack_image(x, g, &grid, image, &mut input[..words], false);
                for chunk in 0..chunks {
                    let panels =
                        chunk * PANELS_PER_TASK..((chunk + 1) * PANELS_PER_TASK).min(grid.panels);
                    // SAFETY: AMX is usable; this task alone writes this image of `out`, which
                    // is the caller's alone.
                    unsafe {
                        multiply_task(
                            &input[..words],
                            w,
                            &grid,
                            &offsets,
                            post,
                            residual,
                            g,
                            out,
                            image,
                            panels,
                            0..row_pairs,
                        )
                    };
                }
            });
        });
        return;
    }
    with_thread_scratch(&PADDED_INPUT, |input| {
        let len = g.batch * words;
        if input.len() < len {
            input.resize(len, 0);
        }
        for (image, planes) in input[..len].chunks_exact_mut(words).enumerate() {
            pack_image(x, g, &grid, image, planes, true);
        }
        // Enough tasks for four per thread where the channels allow.
        let wanted = 4 * threads;
        let groups = wanted.div_ceil(g.batch * chunks).clamp(1, row_pairs);
        let per_group = row_pairs.div_ceil(groups);
        let groups = row_pairs.div_ceil(per_group);
        let input = &*input;
        (0..g.batch * chunks * groups)
            .into_par_iter()
            .for_each(|task| {
                let (image, rest) = (task / (chunks * groups), task % (chunks * groups));
                let (chunk, group) = (rest / groups, rest % groups);
                let panels =
                    chunk * PANELS_PER_TASK..((chunk + 1) * PANELS_PER_TASK).min(grid.panels);
                let pairs = group * per_group..((group + 1) * per_group).min(row_pairs);
                let planes = &input[image * words..][..words];
                // SAFETY: AMX is usable; tasks write disjoint (image, channels, pixels) blocks of
                // `out`, which is the caller's alone.
                unsafe {
                    multiply_task(
                        planes, w, &grid, &offsets, post, residual, g, out, image, panels, pairs,
                    )
                };
            });
    });
}

/// One task's products: row pairs `pairs` (32 output channels each) × `panels` of `image`,
/// whose padded planes are `planes`.
///
/// # Safety
/// As [`conv_forward_tiles`]; no other task writes these outputs.
#[allow(unsafe_code, clippy::too_many_arguments)]
unsafe fn multiply_task(
    planes: &[u32],
    w: &ConvTiles,
    grid: &PaddedGrid,
    offsets: &[usize],
    post: PostOp<'_>,
    residual: Option<Residual<'_>>,
    g: &ConvGeometry,
    out: SendPtr,
    image: usize,
    panels: std::ops::Range<usize>,
    pairs: std::ops::Range<usize>,
) {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        use super::amx::kernels::{Block, Tiles, finish_run, products};
        let (o, hw) = (g.out_channels, g.pixels());
        let row_blocks = o.div_ceil(TILE_ROWS);
        // Every read of the last panel at the farthest tap stays inside the image's planes.
        assert!(planes.len() == grid.image_words());
        assert!(grid.plane >= grid.panels * PANEL + 2 * grid.pad * (grid.row + 1));
        assert!(offsets.len() == w.steps());
        let mut block = Block::default();
        let mut runs = Vec::new();
        // SAFETY: AMX is usable (the caller's contract).
        let tiles = unsafe { Tiles::configure() };
        for rp in pairs {
            let rb = 2 * rp;
            let a0 = w.row_block(rb).as_ptr();
            let a1 = (rb + 1 < row_blocks).then(|| w.row_block(rb + 1).as_ptr());
            let rows = (o - rb * TILE_ROWS).min(2 * TILE_ROWS);
            for panel in panels.clone() {
                let b = planes[panel * PANEL..].as_ptr();
                // The weight tiles hold `steps` tiles per row block; each step reads 16 pair
                // planes of this image from the panel at its tap's shift.
                // SAFETY: every read lies inside the image's planes (asserted above).
                unsafe { products(&tiles, a0, a1, b, offsets, grid.plane * 4, &mut block) };
                grid.runs(panel, g, &mut runs);
                for r in 0..rows {
                    let channel = rb * TILE_ROWS + r;
                    let shift = post.bias.map_or(0.0, |b| b[channel]);
                    let plane = (image * o + channel) * hw;
                    for &(column, pixel, len) in &runs {
                        let add = residual.map(|r| (&r.values[plane + pixel..][..len], r.then));
                        // SAFETY: the run's pixels lie in this channel's output plane, which
                        // this task alone writes; the block's row holds 32 values.
                        unsafe {
                            finish_run(
                                &block.0[r * PANEL + column..],
                                out.get().add(plane + pixel),
                                len,
                                shift,
                                post.epilogue,
                                add,
                            )
                        };
                    }
                }
            }
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = (
            planes, w, grid, offsets, post, residual, g, out, image, panels, pairs,
        );
        unreachable!("AMX products on a CPU without AMX");
    }
}

/// Packs image `image` of `x` into `planes` as [`PaddedGrid`] lays it out, with `parallel` its
/// planes spread over the pool.
fn pack_image(
    x: &[f32],
    g: &ConvGeometry,
    grid: &PaddedGrid,
    image: usize,
    planes: &mut [u32],
    parallel: bool,
) {
    assert_eq!(planes.len(), grid.image_words());
    let hw = g.pixels();
    let pack = |(q, plane): (usize, &mut [u32])| {
        let channel =
            |c: usize| (c < g.in_channels).then(|| &x[(image * g.in_channels + c) * hw..][..hw]);
        match channel(2 * q) {
            Some(lo) => pack_plane(lo, channel(2 * q + 1), g, grid, plane),
            None => plane.fill(0),
        }
    };
    if parallel {
        planes.par_chunks_mut(grid.plane).enumerate().for_each(pack);
    } else {
        planes.chunks_mut(grid.plane).enumerate().for_each(pack);
    }
}

/// One pair plane: `lo` and `hi` (`None`: zeros) `H × W` each.
fn pack_plane(
    lo: &[f32],
    hi: Option<&[f32]>,
    g: &ConvGeometry,
    grid: &PaddedGrid,
    plane: &mut [u32],
) {
    let (w, pad, row) = (g.width, grid.pad, grid.row);
    // Zeros before the first image row, between rows and after the last.
    let first = pad * row + pad;
    plane[..first].fill(0);
    for y in 0..g.height {
        let start = first + y * row;
        let dst = &mut plane[start..start + w];
        let lo = &lo[y * w..][..w];
        let hi = hi.map(|h| &h[y * w..][..w]);
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        // SAFETY: AMX (checked by the caller's caller) implies AVX-512 BF16; the slices are
        // `w` long each.
        unsafe {
            avx512::pair_row_of_pixels(lo, hi, dst)
        };
        #[cfg(not(target_arch = "x86_64"))]
        for (j, d) in dst.iter_mut().enumerate() {
            *d = pair(lo[j], hi.map_or(0.0, |h| h[j]));
        }
        let gap_end = if y + 1 < g.height {
            start + row
        } else {
            plane.len()
        };
        plane[start + w..gap_end].fill(0);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use crate::cpu_kernels::bf16_gemm::avx512::pair_vectors;

    /// `dst[j] = pair(lo[j], hi[j])` (`hi = None`: zeros), all three as long.
    ///
    /// # Safety
    /// AVX-512 F, BW and BF16 present.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pair_row_of_pixels(lo: &[f32], hi: Option<&[f32]>, dst: &mut [u32]) {
        let n = dst.len();
        assert!(lo.len() == n && hi.is_none_or(|h| h.len() == n));
        for first in (0..n).step_by(16) {
            let width = (n - first).min(16);
            let mask = ((1u32 << width) - 1) as __mmask16;
            // SAFETY: the mask covers `width` values from `first` of each slice.
            unsafe {
                let l = _mm512_maskz_loadu_ps(mask, lo.as_ptr().add(first));
                let h = hi.map_or(_mm512_setzero_ps(), |h| {
                    _mm512_maskz_loadu_ps(mask, h.as_ptr().add(first))
                });
                _mm512_mask_storeu_epi32(
                    dst.as_mut_ptr().add(first).cast(),
                    mask,
                    pair_vectors(l, h),
                );
            }
        }
    }
}
