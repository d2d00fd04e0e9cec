//! 3×3 stride-1 convolutions (padding 1) on NCHW f32 by Winograd's minimal filtering
//! F(4×4, 3×3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each
//! 4×4 block of outputs ("tile") comes from its 6×6 input patch with 36 products per pair of
//! input and output channels instead of 144.
//!
//! For a block of tiles: (1) each patch `d` of each input channel is transformed, `V = Bᵀ d B`,
//! giving 36 matrices `V_ξ` of `C × T` (input channels × tiles); (2) 36 matrix products
//! `M_ξ = U_ξ · V_ξ` with the kernel transformed once per layer, `U = G g Gᵀ` (`K × C` each);
//! (3) the output transform `Y = Aᵀ M A`, then the bias and the activation, written straight into
//! the output planes. Sixteen tiles travel together in the lanes of an AVX-512 register: each
//! tile's patch rows are read (and its output rows written) by masked loads (stores) of four
//! contiguous values, which 4 × 4 transposes turn into (out of) the tiles-in-lanes layout; the
//! masks keep every access inside the image, so no padded copy of the input exists. (Gathers and
//! scatters did the same at more than twice the cost.) AVX-512 only; other CPUs keep the im2col
//! path.
//!
//! Accuracy: the transforms' coefficients (up to 8 in `Aᵀ`, 1/24 in `G`) cost a few bits; on
//! TResNet's layers the outputs stay within about 1e-6 of the exact sums relative to their scale
//! (the unit tests bound it against f64).

use std::cell::Cell;

use crate::cpu_kernels::thread_scratch::with_thread_scratch;
use std::sync::OnceLock;

use rayon::prelude::*;

mod weight_gradient;

pub(super) use weight_gradient::{applies_to_weight_gradient, conv_backward_weight_winograd};

use super::bf16_gemm::PostOp;
use super::cache_size::l2_cache_bytes;
use super::conv::{ConvGeometry, SendPtr, scratch};

/// Output rows and columns per tile.
const TILE: usize = 4;
/// Input rows and columns per tile (`TILE + 2`).
const PATCH: usize = 6;
/// Transformed positions `ξ` (`PATCH²`), one matrix product each.
const XI: usize = PATCH * PATCH;
/// Tiles per register (f32 lanes of AVX-512).
const LANES: usize = 16;
/// Output channels per microkernel call.
const MR: usize = 8;
/// The fewest tiles worth the transforms (one register's worth): smaller maps (7×7 at batch 1)
/// would multiply mostly padding.
const MIN_TILES: usize = LANES;

/// `G`, the kernel transform (6×3).
const G: [[f64; 3]; PATCH] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// A 3×3 kernel `(K, C, 3, 3)` transformed for F(4×4, 3×3): for each `ξ`, `⌈K/8⌉` panels of
/// `C × 8` values (`U_ξ[k][c]` at `[panel k/8][c][k%8]`; rows past `K` zero). Four times the
/// kernel's size.
pub struct WinogradWeights {
    data: Vec<f32>,
    out_channels: usize,
    in_channels: usize,
}

impl std::fmt::Debug for WinogradWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WinogradWeights({}×{}×3×3)",
            self.out_channels, self.in_channels
        )
    }
}

/// Where a Winograd kernel's 3×3 filters come from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Filters<'a> {
    /// `w` `(K, C, 3, 3)`: filter `(k, c)` as it stands.
    Direct(&'a [f32]),
    /// A forward kernel `w` `(C, K, 3, 3)` whose input gradient this convolution computes:
    /// filter `(k, c)` is `w[c][k]` turned by 180° (no transposed copy of `w` is made).
    InputGradientOf(&'a [f32]),
}

impl Filters<'_> {
    /// Filter `(k, c)` of a `K × C` kernel, row-major taps.
    fn get(&self, k: usize, c: usize, k_out: usize, c_in: usize) -> [f32; 9] {
        match self {
            Filters::Direct(w) => w[(k * c_in + c) * 9..][..9].try_into().expect("nine taps"),
            Filters::InputGradientOf(w) => {
                let f = &w[(c * k_out + k) * 9..][..9];
                std::array::from_fn(|tap| f[8 - tap])
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Filters::Direct(w) | Filters::InputGradientOf(w) => w.len(),
        }
    }
}

impl WinogradWeights {
    /// Transforms `w` `(K, C, 3, 3)`, contiguous: on AVX-512 sixteen kernels at a time in f32,
    /// panels in parallel (training transforms its kernels on every step); elsewhere one at a
    /// time in f64.
    pub fn new(w: &[f32], out_channels: usize, in_channels: usize) -> Self {
        Self::transform(Filters::Direct(w), out_channels, in_channels)
    }

    /// The transformed kernel of the input gradient of the convolution whose kernel is `w`
    /// `(C, K, 3, 3)` (this one's `C` its output channels, `K` its input ones): each filter
    /// turned by 180°, the channel axes swapped, read straight from `w`.
    pub(super) fn for_input_gradient(w: &[f32], out_channels: usize, in_channels: usize) -> Self {
        Self::transform(Filters::InputGradientOf(w), out_channels, in_channels)
    }

    fn transform(w: Filters<'_>, out_channels: usize, in_channels: usize) -> Self {
        assert_eq!(
            w.len(),
            out_channels * in_channels * 9,
            "winograd: a {out_channels}×{in_channels}×3×3 kernel"
        );
        let per_xi = out_channels.div_ceil(MR) * in_channels * MR;
        #[cfg(target_arch = "x86_64")]
        if winograd_available() && w.len() < i32::MAX as usize / 2 {
            // Not filled first: the panels write every value (zeros for rows past `K`).
            let mut data = Vec::with_capacity(XI * per_xi);
            let dst = SendPtr(data.as_mut_ptr());
            (0..out_channels.div_ceil(MR))
                .into_par_iter()
                .for_each(|panel| {
                    #[allow(unsafe_code)]
                    // SAFETY: AVX-512 F is present; each panel writes its own `C × 8` block of
                    // every `ξ` (inside the allocation of `36·per_xi` values); offsets fit i32.
                    unsafe {
                        avx512::transform_panel(w, out_channels, in_channels, panel, dst, per_xi)
                    }
                });
            #[allow(unsafe_code)]
            // SAFETY: the panels, `⌈K/8⌉` blocks of `C × 8` per `ξ`, wrote all `36·per_xi`
            // values (`transform_panel` stores every lane of its blocks, zeros included).
            unsafe {
                data.set_len(XI * per_xi)
            };
            return Self {
                data,
                out_channels,
                in_channels,
            };
        }
        let mut data = vec![0f32; XI * per_xi];
        for k in 0..out_channels {
            for c in 0..in_channels {
                let at = (k / MR) * in_channels * MR + c * MR + k % MR;
                let filter = w.get(k, c, out_channels, in_channels);
                for (xi, u) in transform_kernel(&filter).into_iter().enumerate() {
                    data[xi * per_xi + at] = u as f32;
                }
            }
        }
        Self {
            data,
            out_channels,
            in_channels,
        }
    }

    /// Values per `ξ`.
    fn per_xi(&self) -> usize {
        self.out_channels.div_ceil(MR) * self.in_channels * MR
    }
}

/// `G g Gᵀ` of one 3×3 kernel (row-major 6×6).
fn transform_kernel(g: &[f32]) -> [f64; XI] {
    let mut gg = [[0f64; 3]; PATCH];
    for (i, row) in gg.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|a| G[i][a] * f64::from(g[a * 3 + j])).sum();
        }
    }
    let mut u = [0f64; XI];
    for i in 0..PATCH {
        for l in 0..PATCH {
            u[i * PATCH + l] = (0..3).map(|b| gg[i][b] * G[l][b]).sum();
        }
    }
    u
}

/// A layer's Winograd kernel, transformed on first use (so layers whose maps never qualify do
/// not hold the larger copy).
#[derive(Debug, Default)]
pub struct WinogradKernel {
    weights: OnceLock<WinogradWeights>,
}

impl WinogradKernel {
    /// The transformed kernel of `w` `(K, C, 3, 3)`; `w` must be the same kernel on every call.
    pub(super) fn weights(&self, w: &[f32], g: &ConvGeometry) -> &WinogradWeights {
        let u = self
            .weights
            .get_or_init(|| WinogradWeights::new(w, g.out_channels, g.in_channels));
        assert!(
            u.out_channels == g.out_channels && u.in_channels == g.in_channels,
            "winograd: a kernel prepared for another layer"
        );
        u
    }
}

/// Whether this CPU runs the Winograd path (AVX-512 F, checked once).
pub fn winograd_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The tile grid of a convolution: `⌈H/4⌉ × ⌈W/4⌉` tiles per image.
#[derive(Debug, Clone, Copy)]
struct Grid {
    rows: usize,
    cols: usize,
}

impl Grid {
    fn of(g: &ConvGeometry) -> Self {
        Self {
            rows: g.height.div_ceil(TILE),
            cols: g.width.div_ceil(TILE),
        }
    }

    fn per_image(&self) -> usize {
        self.rows * self.cols
    }
}

/// Whether [`conv_forward_winograd`] takes this convolution: a 3×3 kernel on an AVX-512 CPU,
/// at least [`MIN_TILES`] tiles, and element offsets that fit the lane groups' 32-bit offsets.
pub(super) fn applies(g: &ConvGeometry) -> bool {
    let fits = |channels: usize| {
        g.batch
            .checked_mul(channels)
            .and_then(|v| v.checked_mul(g.pixels()))
            .is_some_and(|v| v < i32::MAX as usize / 2)
    };
    g.kernel == 3
        && g.height > 0
        && g.width > 0
        && winograd_available()
        && g.batch * Grid::of(g).per_image() >= MIN_TILES
        && fits(g.in_channels)
        && fits(g.out_channels)
}

/// Sixteen consecutive tiles (the last group of a block may hold fewer): where their patches
/// start and which of their rows and columns lie inside the image.
#[derive(Debug, Clone, Copy, Default)]
struct LaneGroup {
    /// Offset of each tile's output origin (row `4·ty`, column `4·tx`) from its image's first
    /// pixel, plus the image's offset in channel units: `n·channels·H·W + 4·ty·W + 4·tx`, for
    /// input (`channels = C`) and output (`channels = K`).
    input_origin: [i32; LANES],
    output_origin: [i32; LANES],
    /// Bit `t` of `rows_in[i]`: tile `t` exists and its patch row `i` (image row `4·ty − 1 + i`)
    /// lies inside the image; the same for columns.
    rows_in: [u16; PATCH],
    cols_in: [u16; PATCH],
    /// Where lane `t`'s masked loads and stores start, so that the vector's lanes
    /// `4·⌊t/4⌋ ..` meet the tile's first patch column (input: `input_origin − 1`, row 1 of
    /// the patch) or first output column: the origin minus `4·⌊t/4⌋`. Only the lanes of
    /// [`Self::load_lo`] / [`Self::store`] are accessed.
    input_load: [i32; LANES],
    output_store: [i32; LANES],
    /// Lane masks of tile `t`'s patch row `i`: columns 0..4 at lanes `4·⌊t/4⌋ ..` (`load_lo`),
    /// columns 4 and 5 there (`load_hi`); empty where the row or the tile is absent.
    load_lo: [[u16; LANES]; PATCH],
    load_hi: [[u16; LANES]; PATCH],
    /// Lane masks of tile `t`'s output row `r`: its columns inside the image, at lanes
    /// `4·⌊t/4⌋ ..`.
    store: [[u16; LANES]; TILE],
}

impl LaneGroup {
    /// Tiles `first .. first + count` of the batch (`count ≤ 16`).
    fn new(g: &ConvGeometry, grid: Grid, first: usize, count: usize) -> Self {
        let mut group = Self::default();
        let hw = g.pixels();
        for lane in 0..count {
            let t = first + lane;
            let (n, r) = (t / grid.per_image(), t % grid.per_image());
            let (y, x) = (TILE * (r / grid.cols), TILE * (r % grid.cols));
            let within = (y * g.width + x) as i32;
            group.input_origin[lane] = (n * g.in_channels * hw) as i32 + within;
            group.output_origin[lane] = (n * g.out_channels * hw) as i32 + within;
            for i in 0..PATCH {
                // Patch row/column i reads image row/column 4·t − 1 + i.
                if (1..=g.height).contains(&(y + i)) {
                    group.rows_in[i] |= 1 << lane;
                }
                if (1..=g.width).contains(&(x + i)) {
                    group.cols_in[i] |= 1 << lane;
                }
            }
        }
        for lane in 0..LANES {
            let block = 4 * (lane / 4);
            group.input_load[lane] = group.input_origin[lane] - 1 - block as i32;
            group.output_store[lane] = group.output_origin[lane] - block as i32;
            let has = |bits: u16| (bits >> lane) & 1;
            let columns = |range: std::ops::Range<usize>| -> u16 {
                let first = range.start;
                range
                    .map(|j| has(group.cols_in[j]) << (j - first))
                    .sum::<u16>()
                    << block
            };
            let (lo, hi, out) = (columns(0..4), columns(4..6), columns(1..5));
            for i in 0..PATCH {
                if has(group.rows_in[i]) == 1 {
                    group.load_lo[i][lane] = lo;
                    group.load_hi[i][lane] = hi;
                }
            }
            for r in 0..TILE {
                if has(group.rows_in[r + 1]) == 1 {
                    group.store[r][lane] = out;
                }
            }
        }
        group
    }
}

thread_local! {
    /// A block's transformed input (`36 × C × columns`) and products (`36 × K' × columns`).
    static TRANSFORMED: Cell<(Vec<f32>, Vec<f32>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// Tiles per block: as many as keep the block's `V` and `M` within the L2 cache, in whole
/// 32-tile panels, at least one panel.
fn block_tiles(g: &ConvGeometry) -> usize {
    let per_tile = XI * 4 * (g.in_channels + g.out_channels.next_multiple_of(MR));
    (l2_cache_bytes() / per_tile / 32 * 32).clamp(32, 256)
}

/// `out = act(conv(x, w) + bias)` by F(4×4, 3×3): `x` `(B, C, H, W)`, `u` the transformed
/// `(K, C, 3, 3)` kernel, `out` `(B, K, H, W)`.
///
/// # Safety
/// [`applies`] holds for `g`; `out` is valid for `B·K·H·W` writes (possibly uninitialised) and
/// accessed by no one else during the call; the bias (if any) holds `K` values.
#[allow(unsafe_code)]
pub(super) unsafe fn conv_forward_winograd(
    x: &[f32],
    u: &WinogradWeights,
    post: PostOp<'_>,
    g: &ConvGeometry,
    out: *mut f32,
) {
    assert!(applies(g), "winograd: not for this convolution");
    assert_eq!(x.len(), g.batch * g.in_channels * g.pixels());
    assert!(u.out_channels == g.out_channels && u.in_channels == g.in_channels);
    assert!(post.bias.is_none_or(|b| b.len() == g.out_channels));
    let grid = Grid::of(g);
    let tiles = g.batch * grid.per_image();
    let per_block = block_tiles(g);
    let blocks = tiles.div_ceil(per_block);
    let threads = rayon::current_num_threads();
    let out = SendPtr(out);
    let block = |b: usize, inner: usize| {
        let first = b * per_block;
        let count = per_block.min(tiles - first);
        let groups: Vec<LaneGroup> = (0..count.div_ceil(LANES))
            .map(|j| {
                let at = first + j * LANES;
                LaneGroup::new(g, grid, at, LANES.min(first + count - at))
            })
            .collect();
        with_thread_scratch(&TRANSFORMED, |buffers| {
            let (v, m) = buffers;
            let columns = groups.len() * LANES;
            let v = scratch(v, XI * g.in_channels * columns);
            let m = scratch(m, XI * g.out_channels.next_multiple_of(MR) * columns);
            // SAFETY: the buffers hold the sizes these passes use; `out` is the caller's.
            unsafe { run_block(x, u, post, g, &groups, v, m, out, inner) };
        });
    };
    if blocks >= 2 * threads || threads == 1 {
        (0..blocks).into_par_iter().for_each(|b| block(b, 1));
    } else {
        (0..blocks).for_each(|b| block(b, threads));
    }
}

/// The three passes over one block of tiles (`groups`), each spread over `inner` threads when
/// `inner > 1`: input transform by channel, products by `ξ`, output transform by channel.
///
/// # Safety
/// `v` holds `36·C·columns` values and `m` `36·⌈K/8⌉·8·columns` (`columns = 16·groups`); the
/// groups' output pixels are this call's alone; AVX-512 F present (via [`applies`]).
#[allow(unsafe_code, clippy::too_many_arguments)]
unsafe fn run_block(
    x: &[f32],
    u: &WinogradWeights,
    post: PostOp<'_>,
    g: &ConvGeometry,
    groups: &[LaneGroup],
    v: &mut [f32],
    m: &mut [f32],
    out: SendPtr,
    inner: usize,
) {
    let (c_in, k_out, hw) = (g.in_channels, g.out_channels, g.pixels());
    let columns = groups.len() * LANES;
    let k_rows = k_out.next_multiple_of(MR);
    assert!(v.len() >= XI * c_in * columns && m.len() >= XI * k_rows * columns);
    let (v_ptr, m_ptr) = (SendPtr(v.as_mut_ptr()), SendPtr(m.as_mut_ptr()));
    let each = |n: usize, f: &(dyn Fn(usize) + Sync)| {
        if inner > 1 {
            (0..n).into_par_iter().for_each(f);
        } else {
            (0..n).for_each(f);
        }
    };
    // Each task writes its own rows (channel `c`, position `ξ`, channel `k`) of `v`, `m` or
    // `out`, inside the sizes asserted above.
    #[cfg(target_arch = "x86_64")]
    {
        each(c_in, &|c| {
            for (j, group) in groups.iter().enumerate() {
                // SAFETY: AVX-512 F present; channel `c`'s rows of `v` are this task's alone.
                unsafe {
                    avx512::transform_input(
                        x.as_ptr().add(c * hw),
                        group,
                        g.width,
                        v_ptr.get().add(c * columns + j * LANES),
                        c_in * columns,
                    )
                };
            }
        });
        each(XI, &|xi| {
            // SAFETY: AVX-512 F present; `ξ`'s matrix of `m` is this task's alone.
            unsafe {
                avx512::products(
                    &u.data[xi * u.per_xi()..][..u.per_xi()],
                    v_ptr.get().add(xi * c_in * columns),
                    c_in,
                    columns,
                    m_ptr.get().add(xi * k_rows * columns),
                    k_rows,
                    false,
                )
            }
        });
        each(k_out, &|k| {
            let shift = post.bias.map_or(0.0, |b| b[k]);
            for (j, group) in groups.iter().enumerate() {
                // SAFETY: AVX-512 F present; channel `k`'s pixels of these tiles are this task's.
                unsafe {
                    avx512::transform_output(
                        m_ptr.get().add(k * columns + j * LANES),
                        k_rows * columns,
                        group,
                        g.width,
                        shift,
                        post.epilogue,
                        out.get().add(k * hw),
                    )
                };
            }
        });
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, u, post, hw, v_ptr, m_ptr, out, each);
        unreachable!("winograd: AVX-512 only (see `applies`)");
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Filters, LANES, LaneGroup, MR, PATCH, TILE, XI};
    use crate::cpu_kernels::conv::{Epilogue, SendPtr};

    /// `Bᵀ` applied to six vectors (one column or row of a patch).
    #[inline]
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    pub(super) fn bt(d: [__m512; PATCH]) -> [__m512; PATCH] {
        let four = _mm512_set1_ps(4.0);
        let five = _mm512_set1_ps(-5.0);
        let two = _mm512_set1_ps(2.0);
        // t1 = d4 − 4·d2, t2 = d3 − 4·d1, t3 = d4 − d2, t4 = 2·(d3 − d1)
        let t1 = _mm512_fnmadd_ps(four, d[2], d[4]);
        let t2 = _mm512_fnmadd_ps(four, d[1], d[3]);
        let t3 = _mm512_sub_ps(d[4], d[2]);
        let t4 = _mm512_mul_ps(two, _mm512_sub_ps(d[3], d[1]));
        [
            _mm512_fmadd_ps(four, d[0], _mm512_fmadd_ps(five, d[2], d[4])),
            _mm512_add_ps(t1, t2),
            _mm512_sub_ps(t1, t2),
            _mm512_add_ps(t3, t4),
            _mm512_sub_ps(t3, t4),
            _mm512_fmadd_ps(four, d[1], _mm512_fmadd_ps(five, d[3], d[5])),
        ]
    }

    /// `Aᵀ` applied to six vectors: four.
    #[inline]
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    fn at(m: [__m512; PATCH]) -> [__m512; 4] {
        let s12 = _mm512_add_ps(m[1], m[2]);
        let d12 = _mm512_sub_ps(m[1], m[2]);
        let s34 = _mm512_add_ps(m[3], m[4]);
        let d34 = _mm512_sub_ps(m[3], m[4]);
        [
            _mm512_add_ps(_mm512_add_ps(m[0], s12), s34),
            _mm512_fmadd_ps(_mm512_set1_ps(2.0), d34, d12),
            _mm512_fmadd_ps(_mm512_set1_ps(4.0), s34, s12),
            _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0), d34, d12), m[5]),
        ]
    }

    /// `G` applied to three vectors (one column or row of 3×3 kernels): six.
    #[inline]
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    fn g(v: [__m512; 3]) -> [__m512; PATCH] {
        let c = |x: f32| _mm512_set1_ps(x);
        // (v0 + v2) and v1 appear with the same weights in rows 1-4.
        let outer = _mm512_add_ps(v[0], v[2]);
        let wide = _mm512_fmadd_ps(c(1.0 / 24.0), v[0], _mm512_mul_ps(c(1.0 / 6.0), v[2]));
        let mid = _mm512_mul_ps(c(1.0 / 12.0), v[1]);
        let sixth = _mm512_mul_ps(c(-1.0 / 6.0), outer);
        let sixth_mid = _mm512_mul_ps(c(1.0 / 6.0), v[1]);
        [
            _mm512_mul_ps(c(0.25), v[0]),
            _mm512_sub_ps(sixth, sixth_mid),
            _mm512_add_ps(sixth, sixth_mid),
            _mm512_add_ps(wide, mid),
            _mm512_sub_ps(wide, mid),
            v[2],
        ]
    }

    /// Transforms the kernels of output-channel panel `panel` (channels `8·panel ..`): sixteen
    /// at a time, lanes `(c − c0)·8 + (k − 8·panel)` for input channels `c0, c0 + 1`, so that each
    /// `ξ`'s result is one contiguous store of the panel's layout.
    ///
    /// # Safety
    /// AVX-512 F present; `w` holds `K × C` filters, with `K·C·9` within i32; `dst` holds
    /// `36·per_xi` values of which this call alone writes panel `panel`'s.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transform_panel(
        w: Filters<'_>,
        k_out: usize,
        c_in: usize,
        panel: usize,
        dst: SendPtr,
        per_xi: usize,
    ) {
        assert_eq!(w.len(), k_out * c_in * 9);
        for c0 in (0..c_in).step_by(2) {
            // The nine taps of each lane's kernel, transposed through a small buffer (scalar
            // copies beat nine gathers): `taps[tap][lane]`, 0 for lanes past the last channels.
            let kernels: [Option<[f32; 9]>; LANES] = std::array::from_fn(|lane| {
                let (k, c) = (panel * MR + lane % MR, c0 + lane / MR);
                (k < k_out && c < c_in).then(|| w.get(k, c, k_out, c_in))
            });
            let mut by_tap = [[0f32; LANES]; 9];
            for (tap, row) in by_tap.iter_mut().enumerate() {
                for (value, kernel) in row.iter_mut().zip(&kernels) {
                    if let Some(kernel) = kernel {
                        *value = kernel[tap];
                    }
                }
            }
            // SAFETY: each row of the buffer holds 16 values.
            let taps: [__m512; 9] = by_tap.map(|row| unsafe { _mm512_loadu_ps(row.as_ptr()) });
            // G g (6 × 3), one column b at a time; then each row times Gᵀ.
            let columns: [[__m512; PATCH]; 3] =
                [0, 1, 2].map(|b| g([taps[b], taps[3 + b], taps[6 + b]]));
            // Two input channels fill 16 lanes; a last odd channel only the first 8.
            let store: u16 = if c0 + 1 < c_in { 0xffff } else { 0x00ff };
            for i in 0..PATCH {
                let row = g(columns.map(|column| column[i]));
                for (l, value) in row.into_iter().enumerate() {
                    let at = (i * PATCH + l) * per_xi + panel * c_in * MR + c0 * MR;
                    // SAFETY: inside this panel's block of `ξ = 6i + l` (the caller's
                    // contract); the mask stops at the last input channel.
                    unsafe { _mm512_mask_storeu_ps(dst.get().add(at), store, value) };
                }
            }
        }
    }

    /// Transforms one input channel's patches of a group: `V_ξ[lane]` for the 36 `ξ` at
    /// `v + ξ·xi_stride`.
    ///
    /// # Safety
    /// AVX-512 F present; `plane` is the channel's first pixel in image 0 of the input (the
    /// group's origins add the image offsets) with every in-image pixel of the group's tiles
    /// readable; `v` valid for 16 writes at each of the 36 positions.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transform_input(
        plane: *const f32,
        group: &LaneGroup,
        width: usize,
        v: *mut f32,
        xi_stride: usize,
    ) {
        let zero = _mm512_setzero_ps();
        let mut rows = [[zero; PATCH]; PATCH];
        for (i, row) in rows.iter_mut().enumerate() {
            if group.rows_in[i] == 0 {
                continue;
            }
            // Columns 0..4 (`lo`) and 4..6 (`hi`) of patch row `i`: vector `t % 4` holds tile
            // `t`'s values in lanes `4·⌊t/4⌋ ..`.
            let shift = (i as isize - 1) * width as isize;
            let (mut lo, mut hi) = ([zero; 4], [zero; 4]);
            for t in 0..LANES {
                let start = plane.wrapping_offset(group.input_load[t] as isize + shift);
                // The masks keep exactly the lanes whose pixel lies inside the image (the
                // caller's contract covers those), which `start` meets at lanes `4·⌊t/4⌋ ..`.
                // SAFETY: only those in-image pixels are read; masked lanes are not.
                unsafe {
                    lo[t % 4] = _mm512_mask_loadu_ps(lo[t % 4], group.load_lo[i][t], start);
                    hi[t % 4] =
                        _mm512_mask_loadu_ps(hi[t % 4], group.load_hi[i][t], start.wrapping_add(4));
                }
            }
            let [d0, d1, d2, d3] = transpose_blocks(lo);
            let [d4, d5, _, _] = transpose_blocks(hi);
            *row = bt([d0, d1, d2, d3, d4, d5]);
        }
        for l in 0..PATCH {
            let column = bt(rows.map(|row| row[l]));
            for (i, value) in column.into_iter().enumerate() {
                // SAFETY: the caller's contract (16 values at each ξ).
                unsafe { _mm512_storeu_ps(v.add((i * PATCH + l) * xi_stride), value) };
            }
        }
    }

    /// `M_ξ = U_ξ · V_ξ` (or, with `accumulate`, `M_ξ += U_ξ · V_ξ`): `u` `⌈K/8⌉` panels of
    /// `C × 8`, `v` `C × columns` (row-major), `m` `k_rows × columns`.
    ///
    /// # Safety
    /// AVX-512 F present; `v` readable for `C·columns` values, `m` writable for
    /// `k_rows·columns`; `columns` a multiple of 16, `u` holding `k_rows·C` values.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn products(
        u: &[f32],
        v: *const f32,
        c_in: usize,
        columns: usize,
        m: *mut f32,
        k_rows: usize,
        accumulate: bool,
    ) {
        assert!(u.len() >= k_rows * c_in && columns.is_multiple_of(LANES));
        for first in (0..columns).step_by(2 * LANES) {
            let wide = columns - first > LANES;
            for panel in 0..k_rows / MR {
                let weights = &u[panel * c_in * MR..][..c_in * MR];
                // SAFETY: the caller's sizes; the block is rows `panel·8..+8`, columns
                // `first..first + 16 or 32`.
                unsafe {
                    let dst = m.add(panel * MR * columns + first);
                    let v = v.add(first);
                    match (wide, accumulate) {
                        (true, false) => block::<true, false>(weights, v, columns, dst, columns),
                        (false, false) => block::<false, false>(weights, v, columns, dst, columns),
                        (true, true) => block::<true, true>(weights, v, columns, dst, columns),
                        (false, true) => block::<false, true>(weights, v, columns, dst, columns),
                    }
                }
            }
        }
    }

    /// One 8 × 32 (or, without `WIDE`, 8 × 16) block of a product, summed over all `C`; with
    /// `ACCUMULATE` added to what `m` holds.
    ///
    /// # Safety
    /// AVX-512 F present; `v` readable for `C` rows of 16 or 32 values `v_stride` apart; `m`
    /// writable (and with `ACCUMULATE` readable) for 8 rows of as many, `m_stride` apart.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const WIDE: bool, const ACCUMULATE: bool>(
        weights: &[f32],
        v: *const f32,
        v_stride: usize,
        m: *mut f32,
        m_stride: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        if ACCUMULATE {
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: row `r` of the block (the caller's contract).
                unsafe {
                    let src = m.add(r * m_stride);
                    row[0] = _mm512_loadu_ps(src);
                    if WIDE {
                        row[1] = _mm512_loadu_ps(src.add(LANES));
                    }
                }
            }
        }
        for (c, w) in weights.chunks_exact(MR).enumerate() {
            // SAFETY: row `c` of `v` (the caller's contract).
            let (v0, v1) = unsafe {
                let row = v.add(c * v_stride);
                (
                    _mm512_loadu_ps(row),
                    if WIDE {
                        _mm512_loadu_ps(row.add(LANES))
                    } else {
                        _mm512_setzero_ps()
                    },
                )
            };
            for (row, &wr) in acc.iter_mut().zip(w) {
                let wv = _mm512_set1_ps(wr);
                row[0] = _mm512_fmadd_ps(wv, v0, row[0]);
                if WIDE {
                    row[1] = _mm512_fmadd_ps(wv, v1, row[1]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            // SAFETY: row `r` of the block (the caller's contract).
            unsafe {
                let dst = m.add(r * m_stride);
                _mm512_storeu_ps(dst, row[0]);
                if WIDE {
                    _mm512_storeu_ps(dst.add(LANES), row[1]);
                }
            }
        }
    }

    /// Transforms one output channel's products of a group back to pixels, adds `shift`,
    /// applies the activation and writes the in-image pixels of the group's tiles.
    ///
    /// # Safety
    /// AVX-512 F present; `m` readable for 16 values at each `ξ·xi_stride`; `plane` is the
    /// channel's first pixel in image 0 of the output, every in-image pixel of the group's tiles
    /// writable and this call's alone.
    #[allow(unsafe_code, clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transform_output(
        m: *const f32,
        xi_stride: usize,
        group: &LaneGroup,
        width: usize,
        shift: f32,
        epilogue: Epilogue,
        plane: *mut f32,
    ) {
        let zero = _mm512_setzero_ps();
        // `Aᵀ` down each column `l` of the 6×6 products, then along each of the 4 rows.
        let mut columns = [[zero; 4]; PATCH];
        for (l, sums) in columns.iter_mut().enumerate() {
            let mut column = [zero; PATCH];
            for (i, value) in column.iter_mut().enumerate() {
                // SAFETY: the caller's contract.
                *value = unsafe { _mm512_loadu_ps(m.add((i * PATCH + l) * xi_stride)) };
            }
            *sums = at(column);
        }
        let shift = _mm512_set1_ps(shift);
        for r in 0..TILE {
            if group.rows_in[r + 1] == 0 {
                continue;
            }
            let row = at(columns.map(|sums| sums[r])).map(|y| {
                let z = _mm512_add_ps(y, shift);
                match epilogue {
                    Epilogue::Identity => z,
                    Epilogue::Relu => _mm512_max_ps(z, zero),
                    Epilogue::LeakyRelu(slope) => {
                        _mm512_max_ps(z, _mm512_mul_ps(z, _mm512_set1_ps(slope)))
                    }
                }
            });
            // Vector `t % 4` holds tile `t`'s four outputs of row `r` in lanes `4·⌊t/4⌋ ..`.
            let by_tile = transpose_blocks(row);
            let row_start = (r * width) as isize;
            for t in 0..LANES {
                let start = plane.wrapping_offset(group.output_store[t] as isize + row_start);
                // The mask keeps exactly the lanes whose pixel lies inside the image (the
                // caller's contract covers those), which `start` meets at lanes `4·⌊t/4⌋ ..`.
                // SAFETY: only those in-image pixels are written; masked lanes are not.
                unsafe { _mm512_mask_storeu_ps(start, group.store[r][t], by_tile[t % 4]) };
            }
        }
    }

    /// Transposes the 4 × 4 blocks the four vectors form in each 128-bit lane: lane `4b + j` of
    /// result `m` is lane `4b + m` of input `j`. Moves between "lane = tile" vectors and
    /// "four values of one tile per 128-bit lane" ones (its own inverse).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn transpose_blocks(v: [__m512; 4]) -> [__m512; 4] {
        let t0 = _mm512_unpacklo_ps(v[0], v[1]);
        let t1 = _mm512_unpackhi_ps(v[0], v[1]);
        let t2 = _mm512_unpacklo_ps(v[2], v[3]);
        let t3 = _mm512_unpackhi_ps(v[2], v[3]);
        [
            _mm512_shuffle_ps::<0x44>(t0, t2),
            _mm512_shuffle_ps::<0xEE>(t0, t2),
            _mm512_shuffle_ps::<0x44>(t1, t3),
            _mm512_shuffle_ps::<0xEE>(t1, t3),
        ]
    }

    const _: () = assert!(XI == PATCH * PATCH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_transform_of_a_delta_is_g_columns() {
        // g = δ at (0, 0): G g Gᵀ = G[:,0] G[:,0]ᵀ.
        let mut g = [0f32; 9];
        g[0] = 1.0;
        let u = transform_kernel(&g);
        for i in 0..PATCH {
            for l in 0..PATCH {
                assert_eq!(u[i * PATCH + l], G[i][0] * G[l][0]);
            }
        }
    }

    #[test]
    fn the_vector_kernel_transform_matches_f64() {
        // K = 13 (a partial last panel), C = 5 (an odd last channel pair).
        let (k_out, c_in) = (13, 5);
        let w: Vec<f32> = (0..k_out * c_in * 9)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let u = WinogradWeights::new(&w, k_out, c_in);
        let per_xi = u.per_xi();
        for k in 0..k_out.next_multiple_of(MR) {
            for c in 0..c_in {
                let at = (k / MR) * c_in * MR + c * MR + k % MR;
                let expected = if k < k_out {
                    transform_kernel(&w[(k * c_in + c) * 9..][..9])
                } else {
                    [0.0; XI]
                };
                for (xi, e) in expected.into_iter().enumerate() {
                    let got = f64::from(u.data[xi * per_xi + at]);
                    assert!(
                        (got - e).abs() <= 1e-6 * (1.0 + e.abs()),
                        "k {k} c {c} ξ {xi}: {got} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_input_gradient_kernel_reads_the_forward_kernel_turned_and_swapped() {
        // The forward kernel is C × K (13 × 5); its input gradient's is K × C, each filter
        // turned by 180°: made explicitly, then transformed as any kernel.
        let (k_out, c_in) = (5, 13);
        let forward: Vec<f32> = (0..c_in * k_out * 9)
            .map(|i| ((i * 29 % 97) as f32 - 48.0) / 13.0)
            .collect();
        let mut turned = vec![0f32; forward.len()];
        for k in 0..k_out {
            for c in 0..c_in {
                for tap in 0..9 {
                    turned[(k * c_in + c) * 9 + tap] = forward[(c * k_out + k) * 9 + 8 - tap];
                }
            }
        }
        let want = WinogradWeights::new(&turned, k_out, c_in);
        let got = WinogradWeights::for_input_gradient(&forward, k_out, c_in);
        assert_eq!(got.data, want.data);
    }

    #[test]
    fn lane_groups_mark_the_image_border() {
        let g = ConvGeometry {
            batch: 2,
            in_channels: 3,
            out_channels: 5,
            height: 6,
            width: 5,
            kernel: 3,
        };
        let grid = Grid::of(&g);
        assert_eq!((grid.rows, grid.cols), (2, 2));
        let group = LaneGroup::new(&g, grid, 2, 5);
        // Lanes: tiles 2, 3 (image 0, second tile row), 4, 5, 6 (image 1).
        assert_eq!(group.input_origin[0], 4 * 5);
        assert_eq!(group.input_origin[2], 3 * 30);
        assert_eq!(group.output_origin[2], 5 * 30);
        assert_eq!(group.input_origin[4], 3 * 30 + 4 * 5);
        // Patch row 0 of tile row 0 lies above the image (lanes 2 and 3: image 1's first tile
        // row); lane 4 (its second tile row) reads image row 3.
        assert_eq!(group.rows_in[0] & 0b11100, 0b10000);
        // Tile row 1 (rows 4..8 of a 6-row image): patch rows 0..=2 inside, 3..=5 not.
        assert_eq!(group.rows_in[2] & 0b10011, 0b10011);
        assert_eq!(group.rows_in[3] & 0b10011, 0);
        // Tile column 1 covers columns 4..8 of 5: patch columns 0 and 1 inside only.
        assert_eq!(group.cols_in[1] & 0b01010, 0b01010);
        assert_eq!(group.cols_in[2] & 0b01010, 0);
        // No lanes past the count.
        assert!(group.rows_in.iter().all(|&r| r >> 5 == 0));
    }
}
