//! Stride-1 convolutions with 1×1 (no padding) or 3×3 (padding 1) kernels on NCHW f32 — every
//! convolution TResNet has — as cache-blocked im2col + gemm, parallel over images and pixel
//! tiles, with bias and activation fused into the output pass; and their gradients.

use std::cell::Cell;

use rayon::prelude::*;

use super::bf16_gemm::{PackedWeights, PostOp};
use super::cache_size::l2_cache_bytes;
use super::conv_amx::{self, ConvTiles};
use super::conv_bf16;
use super::sgemm::{MatMut, MatRef, Products, sgemm};
use super::simd::{map_in_place, map1, zeroed};
use super::thread_scratch::with_thread_scratch;
use super::winograd::{self, WinogradKernel, WinogradWeights};

/// Output pixels per tile: rounded to whole rows of one image, or to whole images when an image
/// is smaller (then several images share one matrix product, which small maps need to keep the
/// product efficient). One pixel per 4 KiB of L2, between 64 and 256: a 3×3 tile's column block
/// over 64 input channels (576 rows) then fills about half of L2 and stays there between im2col
/// and the product. Measured on whole TResNet passes: 256 beat 512 by 2–4 % on a Xeon with 2 MiB
/// of L2 (M, batch 1 and 8, training too); 128 beat 256 by 5–12 % on an EPYC with 512 KiB
/// (L @448 batch 1, M batch 8 even or better).
fn tile_pixels() -> usize {
    (l2_cache_bytes() / 4096).clamp(64, 256)
}

/// The geometry of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Images.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Height (input = output).
    pub height: usize,
    /// Width (input = output).
    pub width: usize,
    /// 1 or 3.
    pub kernel: usize,
}

impl ConvGeometry {
    pub(super) fn pixels(&self) -> usize {
        self.height * self.width
    }

    /// Rows of the im2col matrix: `in_channels · kernel²`.
    pub(super) fn patch(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }

    /// What row `r` of the im2col matrix reads: input channel `r / kernel²` and the tap's
    /// offsets `(dy, dx)` of the source pixel, each −1, 0 or +1 (always 0 for 1×1).
    pub(super) fn im2col_source(&self, r: usize) -> (usize, isize, isize) {
        let kk = self.kernel * self.kernel;
        let (c, tap) = (r / kk, r % kk);
        if self.kernel == 1 {
            (c, 0, 0)
        } else {
            (c, tap as isize / 3 - 1, tap as isize % 3 - 1)
        }
    }

    /// The tiles covering the batch, in order. Images at least a tile large are cut into bands
    /// of rows of (nearly) one height; while there are few bands, as many per image as make
    /// their total a multiple of `threads`, so that the pool's threads get equal shares (four
    /// bands of 9, 9, 9 and 1 rows would leave one thread 18 rows, the other 10).
    fn tiles(&self, threads: usize) -> Vec<Tile> {
        let hw = self.pixels();
        let tile_pixels = tile_pixels();
        if hw >= tile_pixels {
            let mut bands = self
                .height
                .div_ceil((tile_pixels / self.width.max(1)).max(1));
            let threads = threads.max(1);
            if self.batch * bands < 8 * threads {
                while !(self.batch * bands).is_multiple_of(threads) && bands < self.height {
                    bands += 1;
                }
            }
            let rows_per_tile = self.height.div_ceil(bands);
            (0..self.batch)
                .flat_map(|b| {
                    (0..self.height).step_by(rows_per_tile).map(move |y| Tile {
                        first_image: b,
                        images: 1,
                        first_row: y,
                        rows: rows_per_tile.min(self.height - y),
                    })
                })
                .collect()
        } else {
            let per_tile = (tile_pixels / hw.max(1)).max(1);
            (0..self.batch)
                .step_by(per_tile)
                .map(|b| Tile {
                    first_image: b,
                    images: per_tile.min(self.batch - b),
                    first_row: 0,
                    rows: self.height,
                })
                .collect()
        }
    }
}

/// A block of output pixels: rows `first_row..first_row+rows` of images
/// `first_image..first_image+images` (several images only with whole images).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tile {
    pub(super) first_image: usize,
    pub(super) images: usize,
    pub(super) first_row: usize,
    pub(super) rows: usize,
}

impl Tile {
    /// Pixels of one image in the tile.
    pub(super) fn image_pixels(&self, g: &ConvGeometry) -> usize {
        self.rows * g.width
    }

    /// Columns of the tile's matrices.
    pub(super) fn columns(&self, g: &ConvGeometry) -> usize {
        self.images * self.image_pixels(g)
    }
}

/// The element-wise function fused after the bias.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Epilogue {
    /// Nothing.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `max(x, slope·x)`.
    LeakyRelu(f32),
}

impl Epilogue {
    /// `out[i] = act(inp[i]·scale + shift)` (equal lengths), the activation chosen once per
    /// slice so that the loop vectorises.
    pub fn affine_into(self, inp: &[f32], scale: f32, shift: f32, out: &mut [f32]) {
        match self {
            Epilogue::Identity => map1(inp, out, move |v| v * scale + shift),
            Epilogue::Relu => map1(inp, out, move |v| (v * scale + shift).max(0.0)),
            Epilogue::LeakyRelu(s) => map1(inp, out, move |v| {
                let z = v * scale + shift;
                z.max(z * s)
            }),
        }
    }

    /// `row[i] = act(row[i] + shift)` in place.
    pub fn shift_in_place(self, row: &mut [f32], shift: f32) {
        match self {
            Epilogue::Identity => map_in_place(row, move |v| v + shift),
            Epilogue::Relu => map_in_place(row, move |v| (v + shift).max(0.0)),
            Epilogue::LeakyRelu(s) => map_in_place(row, move |v| {
                let z = v + shift;
                z.max(z * s)
            }),
        }
    }
}

thread_local! {
    static COLUMNS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    pub(super) static PRODUCT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// The first `len` values of a per-thread scratch buffer, grown (never shrunk) as needed, so
/// that alternating layer sizes do not refill it with zeros every time. Callers overwrite what
/// they use.
pub(super) fn scratch(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// Fills `col` (`patch × n`, row-major, `n` = the tile's columns) with the tile's input patches:
/// 3×3 neighbourhoods (zero outside the image) or, for 1×1, the pixels themselves. With
/// `parallel`, the input channels are spread over the pool (for tiles that run one at a time).
fn im2col(x: &[f32], g: &ConvGeometry, tile: &Tile, col: &mut [f32], parallel: bool) {
    let block = g.kernel * g.kernel * tile.columns(g);
    if parallel {
        col.par_chunks_mut(block)
            .enumerate()
            .for_each(|(c, rows)| im2col_channel(x, g, tile, c, rows));
    } else {
        for (c, rows) in col.chunks_mut(block).enumerate() {
            im2col_channel(x, g, tile, c, rows);
        }
    }
}

/// The `kernel²` rows of `col` that input channel `c` contributes.
fn im2col_channel(x: &[f32], g: &ConvGeometry, tile: &Tile, c: usize, rows: &mut [f32]) {
    let n = tile.columns(g);
    for (tap, row) in rows.chunks_exact_mut(n).enumerate() {
        im2col_row(x, g, tile, c * g.kernel * g.kernel + tap, row);
    }
}

/// Row `r` of the tile's im2col matrix (input channel `r / kernel²`, tap `r % kernel²`) into
/// `row` (the tile's `n` columns): the channel's pixels shifted by the tap, zero outside the
/// image.
pub(super) fn im2col_row(x: &[f32], g: &ConvGeometry, tile: &Tile, r: usize, row: &mut [f32]) {
    let (h, w, hw) = (g.height, g.width, g.pixels());
    let (c, dy, dx) = g.im2col_source(r);
    let per_image = tile.image_pixels(g);
    for j in 0..tile.images {
        let image = &x[(tile.first_image + j) * g.in_channels * hw..][..g.in_channels * hw];
        let plane = &image[c * hw..(c + 1) * hw];
        let dst = &mut row[j * per_image..][..per_image];
        if dy == 0 && dx == 0 {
            dst.copy_from_slice(&plane[tile.first_row * w..][..per_image]);
            continue;
        }
        for (i, out_row) in dst.chunks_exact_mut(w).enumerate() {
            let sy = (tile.first_row + i) as isize + dy;
            if sy < 0 || sy >= h as isize {
                out_row.fill(0.0);
                continue;
            }
            let src = &plane[sy as usize * w..(sy as usize + 1) * w];
            match dx {
                -1 => {
                    out_row[0] = 0.0;
                    out_row[1..].copy_from_slice(&src[..w - 1]);
                }
                0 => out_row.copy_from_slice(src),
                _ => {
                    out_row[..w - 1].copy_from_slice(&src[1..]);
                    out_row[w - 1] = 0.0;
                }
            }
        }
    }
}

/// Work items (the tiles), and how many threads each product may use itself (all of them when
/// there are too few tiles to keep the pool busy).
pub(super) fn plan(g: &ConvGeometry) -> (Vec<Tile>, usize) {
    let threads = rayon::current_num_threads();
    let tiles = g.tiles(threads);
    let inner = if tiles.len() >= 2 * threads {
        1
    } else {
        threads
    };
    (tiles, inner)
}

/// Runs `f` on every tile, in parallel over tiles unless each tile parallelises itself.
pub(super) fn for_each_tile(tiles: &[Tile], inner: usize, f: impl Fn(&Tile) + Sync) {
    if inner > 1 {
        tiles.iter().for_each(&f);
    } else {
        tiles.par_iter().for_each(&f);
    }
}

/// A layer's kernel prepared for a faster product than im2col with f32 operands.
#[derive(Debug)]
pub enum PreparedKernel {
    /// Rounded to bf16 and packed: bf16 products (CPUs with AVX-512 BF16).
    Bf16(PackedWeights),
    /// A 3×3 kernel for Winograd F(4×4, 3×3) in f32 (AVX-512 CPUs); maps too small for it take
    /// the im2col path.
    Winograd(WinogradKernel),
    /// A 3×3 kernel of a network multiplying in bf16: Winograd in f32 where it applies (there it
    /// beats bf16 im2col products, and is more accurate), bf16 products on smaller maps.
    WinogradOrBf16(WinogradKernel, PackedWeights),
    /// Rounded to bf16 and packed as AMX tiles: the implicit products of [`conv_amx`] (CPUs
    /// with AMX).
    Tiles(ConvTiles),
}

/// Whether the 3×3 convolutions of a network multiplying in bf16 take Winograd in f32 where it
/// applies: on AVX-512 CPUs without AMX, where it beats the bf16 products (and is more
/// accurate). With AMX the tile products run several times faster than either.
pub fn bf16_3x3_by_winograd() -> bool {
    winograd::winograd_available() && !super::amx_available()
}

impl PreparedKernel {
    /// For a fixed kernel `w` `(O, I, k, k)` of a network multiplying in bf16 (CPUs with
    /// AVX-512 BF16): AMX tiles where the CPU has them; else, for 3×3, Winograd in f32 where
    /// it applies and bf16 products elsewhere ([`bf16_3x3_by_winograd`]); else bf16 products.
    pub fn bf16_for_inference(w: &[f32], o: usize, i: usize, kernel: usize) -> Self {
        if super::amx_available() {
            return Self::Tiles(ConvTiles::pack(w, o, i, kernel));
        }
        let packed = PackedWeights::pack_rows(w, o, i * kernel * kernel);
        if kernel == 3 && bf16_3x3_by_winograd() {
            Self::WinogradOrBf16(WinogradKernel::default(), packed)
        } else {
            Self::Bf16(packed)
        }
    }

    /// For a kernel that changes between calls (training): Winograd products where they apply,
    /// the kernel transformed again by each call that takes them (a small cost next to the
    /// products on the maps Winograd takes), im2col elsewhere.
    pub fn per_call_winograd() -> Self {
        Self::Winograd(WinogradKernel::default())
    }

    /// For a kernel `w` `(O, I·k²)` that changes between calls, multiplying as `products` asks:
    /// with [`Products::Bf16`] (CPUs with AVX-512 BF16 only), AMX tiles where the CPU has them;
    /// else Winograd in f32 where it applies (faster there, and more accurate) and `w` rounded to
    /// bf16 and packed for every other convolution; with [`Products::F32`],
    /// [`Self::per_call_winograd`].
    pub fn per_call(w: &[f32], g: &ConvGeometry, products: Products) -> Self {
        match products {
            Products::Bf16 if super::amx_available() => {
                Self::Tiles(ConvTiles::pack(w, g.out_channels, g.in_channels, g.kernel))
            }
            Products::Bf16 if !(winograd::applies(g) && bf16_3x3_by_winograd()) => {
                Self::Bf16(PackedWeights::pack_rows(w, g.out_channels, g.patch()))
            }
            _ => Self::per_call_winograd(),
        }
    }
}

/// What a residual connection adds after a convolution's activation: `then(act(conv + bias) +
/// values)`, `values` shaped as the output `(B, O, H, W)`.
#[derive(Debug, Clone, Copy)]
pub struct Residual<'a> {
    /// The shortcut, one value per output value.
    pub values: &'a [f32],
    /// The activation of the sum.
    pub then: Epilogue,
}

/// [`conv_forward_new`] followed by a residual connection's add and activation,
/// `then(act(conv + bias) + residual)`: in the products' own epilogue on AMX tiles, as one pass
/// over the fresh output elsewhere.
pub fn conv_forward_residual_new(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    g: &ConvGeometry,
    prepared: Option<&PreparedKernel>,
    residual: Residual<'_>,
) -> Vec<f32> {
    let len = g.batch * g.out_channels * g.pixels();
    assert_eq!(
        residual.values.len(),
        len,
        "conv: a residual of another shape"
    );
    if let Some(PreparedKernel::Tiles(tiles)) = prepared {
        assert!(
            super::amx_available(),
            "conv: AMX tiles on a CPU without AMX"
        );
        assert_eq!(x.len(), g.batch * g.in_channels * g.pixels());
        assert!(
            bias.is_none_or(|b| b.len() == g.out_channels),
            "conv: one bias per output channel"
        );
        let mut out = Vec::with_capacity(len);
        let post = PostOp { bias, epilogue };
        #[allow(unsafe_code)]
        // SAFETY: the allocation holds `len` values and belongs to this call; the tiles' tasks
        // write every value once (they cover every image, channel and pixel); AMX is usable.
        unsafe {
            conv_amx::conv_forward_tiles(x, tiles, post, Some(residual), g, out.as_mut_ptr());
            out.set_len(len);
        }
        return out;
    }
    let mut out = conv_forward_new(x, w, bias, epilogue, g, prepared);
    let then = residual.then;
    out.par_chunks_mut(1 << 14)
        .zip(residual.values.par_chunks(1 << 14))
        .for_each(|(o, r)| {
            for (o, &r) in o.iter_mut().zip(r) {
                *o += r;
            }
            then.shift_in_place(o, 0.0);
        });
    out
}

/// [`conv_forward`] into a new vector, without filling it first: every output value is written
/// exactly once by the products and the epilogue. With `prepared` (made from the same weights)
/// the products are bf16 ones or Winograd's.
pub fn conv_forward_new(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    g: &ConvGeometry,
    prepared: Option<&PreparedKernel>,
) -> Vec<f32> {
    let len = g.batch * g.out_channels * g.pixels();
    let mut out = Vec::with_capacity(len);
    #[allow(unsafe_code)]
    // SAFETY: the allocation holds `len` values and belongs to this call; `conv_forward_raw`
    // writes all of them (its tiles cover every image, row and output channel) before anything
    // reads them, so the length can be set afterwards.
    unsafe {
        conv_forward_raw(x, w, bias, epilogue, g, prepared, out.as_mut_ptr());
        out.set_len(len);
    }
    out
}

/// The convolution writing through a raw destination of `B·O·H·W` values.
///
/// # Safety
/// `out` must be valid for writes of `g.batch · g.out_channels · H · W` values and not accessed by
/// anyone else during the call; it may be uninitialised (the gemm products do not read their
/// destination, and every value is written before it is read).
#[allow(unsafe_code)]
unsafe fn conv_forward_raw(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    g: &ConvGeometry,
    prepared: Option<&PreparedKernel>,
    out: *mut f32,
) {
    let (hw, patch, o) = (g.pixels(), g.patch(), g.out_channels);
    assert_eq!(x.len(), g.batch * g.in_channels * hw);
    assert_eq!(w.len(), o * patch);
    if let Some(bias) = bias {
        assert_eq!(bias.len(), o, "conv: one bias per output channel");
    }
    let post = PostOp { bias, epilogue };
    match prepared {
        Some(PreparedKernel::Winograd(kernel) | PreparedKernel::WinogradOrBf16(kernel, _))
            if winograd::applies(g) =>
        {
            let u = kernel.weights(w, g);
            // SAFETY: the caller's contract; `applies` holds and the bias length is checked.
            unsafe { winograd::conv_forward_winograd(x, u, post, g, out) };
            return;
        }
        Some(PreparedKernel::Tiles(tiles)) => {
            assert!(
                super::amx_available(),
                "conv: AMX tiles on a CPU without AMX"
            );
            // SAFETY: the caller's contract; AMX is usable (asserted); the bias length is
            // checked above.
            unsafe { conv_amx::conv_forward_tiles(x, tiles, post, None, g, out) };
            return;
        }
        Some(PreparedKernel::Bf16(packed) | PreparedKernel::WinogradOrBf16(_, packed)) => {
            assert!(
                packed.rows() == o && packed.cols() == patch,
                "conv: packed weights of another shape"
            );
            // SAFETY: the caller's contract.
            unsafe { conv_bf16::conv_forward_bf16(x, packed, post, g, out) };
            return;
        }
        _ => {}
    }
    let (tiles, inner) = plan(g);
    let dst_len = g.batch * o * hw;
    let dst_base = SendPtr(out);
    let lhs = MatRef {
        data: w,
        offset: 0,
        rows: o,
        cols: patch,
        row_stride: patch,
        col_stride: 1,
    };
    for_each_tile(&tiles, inner, |tile| {
        let n = tile.columns(g);
        let p0 = tile.first_row * g.width;
        let finish = |row: &mut [f32], oc: usize| {
            if bias.is_some() || epilogue != Epilogue::Identity {
                epilogue.shift_in_place(row, bias.map_or(0.0, |b| b[oc]));
            }
        };
        if tile.images == 1 {
            // Write straight into the image's output rows.
            let dst = MatMut {
                base: dst_base.get(),
                len: dst_len,
                offset: tile.first_image * o * hw + p0,
                rows: o,
                cols: n,
                row_stride: hw,
            };
            let image = &x[tile.first_image * g.in_channels * hw..][..g.in_channels * hw];
            if g.kernel == 1 {
                let rhs = MatRef {
                    data: image,
                    offset: p0,
                    rows: g.in_channels,
                    cols: n,
                    row_stride: hw,
                    col_stride: 1,
                };
                #[allow(unsafe_code)]
                // SAFETY: tiles cover disjoint pixels of `out`.
                unsafe {
                    sgemm(dst, lhs, rhs, false, inner)
                };
            } else {
                with_thread_scratch(&COLUMNS, |col| {
                    let col = scratch(col, patch * n);
                    im2col(x, g, tile, col, inner > 1);
                    let rhs = MatRef {
                        data: col,
                        offset: 0,
                        rows: patch,
                        cols: n,
                        row_stride: n,
                        col_stride: 1,
                    };
                    #[allow(unsafe_code)]
                    // SAFETY: as above.
                    unsafe {
                        sgemm(dst, lhs, rhs, false, inner)
                    };
                });
            }
            for oc in 0..o {
                // SAFETY: this tile owns these pixels of every output row.
                #[allow(unsafe_code)]
                let row = unsafe { dst.row(oc) };
                finish(row, oc);
            }
        } else {
            // Several whole images: one product into a scratch block, then scattered.
            with_thread_scratch(&COLUMNS, |col| {
                with_thread_scratch(&PRODUCT, |product| {
                    let col = scratch(col, patch * n);
                    let product = scratch(product, o * n);
                    im2col(x, g, tile, col, inner > 1);
                    let rhs = MatRef {
                        data: col,
                        offset: 0,
                        rows: patch,
                        cols: n,
                        row_stride: n,
                        col_stride: 1,
                    };
                    let block = MatMut::row_major(product, o, n);
                    #[allow(unsafe_code)]
                    // SAFETY: the scratch block belongs to this thread.
                    unsafe {
                        sgemm(block, lhs, rhs, false, inner)
                    };
                    #[allow(unsafe_code)]
                    // SAFETY: this tile owns these images of `out`.
                    unsafe {
                        scatter_images(product, g, tile, dst_base, |row, oc| finish(row, oc))
                    };
                });
            });
        }
    });
}

/// Copies a multi-image tile's product (`O × n`, the images side by side) into the images'
/// output planes, then runs `finish(row, output_channel)` on each copied row.
///
/// # Safety
/// `out` is the convolution's destination (`B·O·H·W` values) and this tile's images of it
/// are accessed by no one else during the call.
#[allow(unsafe_code)]
pub(super) unsafe fn scatter_images(
    product: &[f32],
    g: &ConvGeometry,
    tile: &Tile,
    out: SendPtr,
    finish: impl Fn(&mut [f32], usize),
) {
    let (o, hw, n) = (g.out_channels, g.pixels(), tile.columns(g));
    assert_eq!(
        tile.rows, g.height,
        "conv: multi-image tiles hold whole images"
    );
    assert!(product.len() >= o * n && tile.first_image + tile.images <= g.batch);
    for j in 0..tile.images {
        for oc in 0..o {
            let src = &product[oc * n + j * hw..][..hw];
            // The row may be uninitialised: it is written whole through the pointer first.
            // SAFETY: in bounds (image < batch, channel < O) and this tile's (caller's contract).
            let row = unsafe {
                let at = out.get().add(((tile.first_image + j) * o + oc) * hw);
                std::ptr::copy_nonoverlapping(src.as_ptr(), at, hw);
                std::slice::from_raw_parts_mut(at, hw)
            };
            finish(row, oc);
        }
    }
}

/// Gradient with respect to the input: `(B, I, H, W)` from the output gradient `g_out`
/// `(B, O, H, W)` and `w` `(O, I, k, k)`, multiplying as `products` asks
/// ([`PreparedKernel::per_call`]): the convolution of `g_out` with `w` turned by 180° and its
/// channel axes swapped. AMX tiles (bf16 on CPUs with AMX), Winograd's kernel transform (3×3
/// on the maps it takes) and the bf16 packing of a 1×1 kernel read `w` in that order directly;
/// other paths first make the turned copy.
pub fn conv_backward_input(
    g_out: &[f32],
    w: &[f32],
    g: &ConvGeometry,
    products: Products,
    g_in: &mut [f32],
) {
    let (i, o) = (g.in_channels, g.out_channels);
    assert_eq!(g_in.len(), g.batch * i * g.pixels());
    assert_eq!(w.len(), o * g.patch());
    let swapped = ConvGeometry {
        in_channels: o,
        out_channels: i,
        ..*g
    };
    let out = g_in.as_mut_ptr();
    if products == Products::Bf16 && super::amx_available() {
        // The turned kernel packed straight from `w`.
        let tiles = ConvTiles::input_gradient_of(w, o, i, g.kernel);
        let post = PostOp {
            bias: None,
            epilogue: Epilogue::Identity,
        };
        #[allow(unsafe_code)]
        // SAFETY: `g_in` is an exclusive region of `B·I·H·W` values; AMX is usable.
        unsafe {
            conv_amx::conv_forward_tiles(g_out, &tiles, post, None, &swapped, out)
        };
        return;
    }
    if g.kernel == 3 && winograd::applies(&swapped) {
        // Winograd's products are f32 ones whatever `products` asks (as in `per_call`).
        let u = WinogradWeights::for_input_gradient(w, i, o);
        let post = PostOp {
            bias: None,
            epilogue: Epilogue::Identity,
        };
        #[allow(unsafe_code)]
        // SAFETY: `g_in` is an exclusive region of `B·I·H·W` values; `applies` holds.
        unsafe {
            winograd::conv_forward_winograd(g_out, &u, post, &swapped, out)
        };
        return;
    }
    let run = |kernel: &[f32], prepared: &PreparedKernel| {
        #[allow(unsafe_code)]
        // SAFETY: `g_in` is an exclusive, initialised region of the right length; `kernel` has
        // the length of the swapped geometry's kernel.
        unsafe {
            conv_forward_raw(
                g_out,
                kernel,
                None,
                Epilogue::Identity,
                &swapped,
                Some(prepared),
                out,
            )
        };
    };
    if g.kernel == 1 && products == Products::Bf16 {
        // `wᵀ` (`I × O`) is `w` read by columns; its packed copy is all the products read (`w`
        // itself has `wᵀ`'s length for the shape checks).
        let packed = PackedWeights::pack(&MatRef {
            data: w,
            offset: 0,
            rows: i,
            cols: o,
            row_stride: 1,
            col_stride: i,
        });
        run(w, &PreparedKernel::Bf16(packed));
    } else {
        let (flipped, _) = transposed_kernel(w, g);
        run(
            &flipped,
            &PreparedKernel::per_call(&flipped, &swapped, products),
        );
    }
}

/// [`conv_backward_input`] into a new vector.
pub fn conv_backward_input_new(g_out: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (flipped, swapped) = transposed_kernel(w, g);
    let winograd = PreparedKernel::per_call_winograd();
    conv_forward_new(
        g_out,
        &flipped,
        None,
        Epilogue::Identity,
        &swapped,
        Some(&winograd),
    )
}

/// A stride-1 "same" convolution's input gradient is the convolution of the output gradient
/// with the kernel flipped and its channel axes swapped: `w'[i][o][y][x] = w[o][i][k-1-y][k-1-x]`.
/// Returns `w'` and the geometry of that convolution.
fn transposed_kernel(w: &[f32], g: &ConvGeometry) -> (Vec<f32>, ConvGeometry) {
    let (i, o, k) = (g.in_channels, g.out_channels, g.kernel);
    let kk = k * k;
    let mut flipped = zeroed(i * o * kk);
    flipped
        .par_chunks_mut(o * kk)
        .enumerate()
        .for_each(|(ic, block)| {
            for oc in 0..o {
                let src = &w[(oc * i + ic) * kk..][..kk];
                let dst = &mut block[oc * kk..][..kk];
                for (t, v) in dst.iter_mut().enumerate() {
                    *v = src[kk - 1 - t];
                }
            }
        });
    let swapped = ConvGeometry {
        in_channels: o,
        out_channels: i,
        ..*g
    };
    (flipped, swapped)
}

/// Gradient with respect to the weights `(O, I, k, k)`, summed over the batch: by Winograd's
/// transforms for the 3×3 kernels it applies to (unless bf16 products run on AMX tiles), else
/// im2col products, multiplying as `products` asks ([`Products::Bf16`]: the output gradient and
/// the image columns rounded to bf16, sums in f32; CPUs with AVX-512 BF16 only). Either way the sum runs in a fixed order, so
/// the result does not depend on thread timing (im2col: a fixed number of contiguous chunks of
/// tiles, reduced in order).
pub fn conv_backward_weight(
    x: &[f32],
    g_out: &[f32],
    g: &ConvGeometry,
    products: Products,
    g_w: &mut [f32],
) {
    let (hw, patch, o) = (g.pixels(), g.patch(), g.out_channels);
    assert_eq!(g_w.len(), o * patch);
    assert_eq!(x.len(), g.batch * g.in_channels * hw);
    assert_eq!(g_out.len(), g.batch * o * hw);
    // With AMX, bf16 products beat f32 Winograd here too.
    let tiles = products == Products::Bf16 && super::amx_available();
    if !tiles && winograd::applies_to_weight_gradient(g) {
        winograd::conv_backward_weight_winograd(x, g_out, g, g_w);
        return;
    }
    let (tiles, _) = plan(g);
    let chunks = rayon::current_num_threads().clamp(1, tiles.len().max(1));
    let partials: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut acc = vec![0.0f32; o * patch];
            let lo = c * tiles.len() / chunks;
            let hi = (c + 1) * tiles.len() / chunks;
            for tile in &tiles[lo..hi] {
                let n = tile.columns(g);
                let per_image = tile.image_pixels(g);
                with_thread_scratch(&COLUMNS, |col| {
                    with_thread_scratch(&PRODUCT, |grad| {
                        // The tile's image columns as a `patch × n` block: the input planes
                        // themselves for a 1×1 kernel on one image, else built by im2col.
                        let first_pixel = tile.first_row * g.width;
                        let columns = if g.kernel == 1 && tile.images == 1 {
                            let offset = tile.first_image * g.in_channels * hw + first_pixel;
                            MatRef::with_rows(x, offset, patch, n, hw)
                        } else {
                            let col = scratch(col, patch * n);
                            im2col(x, g, tile, col, false);
                            MatRef::with_rows(col, 0, patch, n, n)
                        };
                        // The tile's output gradient as an `O × n` block.
                        let gradient = if tile.images == 1 {
                            let offset = tile.first_image * o * hw + first_pixel;
                            MatRef::with_rows(g_out, offset, o, n, hw)
                        } else {
                            let grad = scratch(grad, o * n);
                            for j in 0..tile.images {
                                for oc in 0..o {
                                    grad[oc * n + j * per_image..][..per_image].copy_from_slice(
                                        &g_out[((tile.first_image + j) * o + oc) * hw..][..hw],
                                    );
                                }
                            }
                            MatRef::with_rows(grad, 0, o, n, n)
                        };
                        match products {
                            Products::F32 => {
                                let dst = MatMut::row_major(&mut acc, o, patch);
                                let rhs = MatRef {
                                    rows: n,
                                    cols: patch,
                                    row_stride: columns.col_stride,
                                    col_stride: columns.row_stride,
                                    ..columns
                                };
                                #[allow(unsafe_code)]
                                // SAFETY: `acc` belongs to this chunk alone.
                                unsafe {
                                    sgemm(dst, gradient, rhs, true, 1)
                                };
                            }
                            Products::Bf16 => {
                                conv_bf16::accumulate_weight_gradient(&mut acc, &gradient, &columns)
                            }
                        }
                    });
                });
            }
            acc
        })
        .collect();
    // The partial sums added in chunk order (deterministic), in parallel over the weights.
    const BLOCK: usize = 1 << 14;
    g_w.par_chunks_mut(BLOCK).enumerate().for_each(|(b, out)| {
        out.fill(0.0);
        for part in &partials {
            for (a, p) in out.iter_mut().zip(&part[b * BLOCK..]) {
                *a += p;
            }
        }
    });
}

/// A raw pointer that may cross threads (the regions written through it are disjoint).
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);

impl SendPtr {
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: see `conv_forward`: every task writes a disjoint region.
#[allow(unsafe_code)]
unsafe impl Send for SendPtr {}
#[allow(unsafe_code)]
unsafe impl Sync for SendPtr {}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(batch: usize, height: usize, width: usize) -> ConvGeometry {
        ConvGeometry {
            batch,
            in_channels: 4,
            out_channels: 4,
            height,
            width,
            kernel: 1,
        }
    }

    #[test]
    fn tiles_cover_every_row_once_in_order() {
        for (batch, height, width) in [(1, 28, 28), (3, 56, 56), (1, 7, 7), (5, 9, 300), (2, 1, 1)]
        {
            for threads in [1, 2, 3, 16] {
                let g = geometry(batch, height, width);
                let mut next = (0, 0);
                for tile in g.tiles(threads) {
                    assert_eq!((tile.first_image, tile.first_row), next, "{g:?} {threads}");
                    assert!(tile.rows > 0 && tile.first_row + tile.rows <= height);
                    next = if tile.first_row + tile.rows == height {
                        (tile.first_image + tile.images, 0)
                    } else {
                        assert_eq!(tile.images, 1);
                        (tile.first_image, tile.first_row + tile.rows)
                    };
                }
                assert_eq!(next, (batch, 0), "{g:?} {threads}: every image covered");
            }
        }
    }

    #[test]
    fn few_bands_are_shared_equally_by_the_threads() {
        // One 28 × 28 image in bands of at most ⌊256/28⌋ = 9 rows (with a 1 MiB L2) would be
        // 9, 9, 9, 1: four bands of 7 instead.
        let g = geometry(1, 28, 28);
        let rows = |threads| -> Vec<usize> { g.tiles(threads).iter().map(|t| t.rows).collect() };
        if tile_pixels() == 256 {
            assert_eq!(rows(2), [7, 7, 7, 7]);
            assert_eq!(rows(3).len() % 3, 0);
        }
        for threads in [2, 3, 4] {
            // A multiple of the threads, all of one height but a last one at least half as high.
            let bands = rows(threads);
            assert!(bands.len().is_multiple_of(threads), "{threads}: {bands:?}");
            let (last, rest) = bands.split_last().unwrap();
            assert!(rest.iter().all(|&r| r == bands[0]), "{threads}: {bands:?}");
            assert!(2 * last >= bands[0], "{threads}: {bands:?}");
        }
    }
}
