//! A checked wrapper around the `gemm` crate's f32 matrix product, the matrix views both
//! products take, and the split of a product's rows across threads.

/// A matrix view over a slice: element `(r, c)` at `offset + r·row_stride + c·col_stride`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    /// The backing data.
    pub data: &'a [f32],
    /// Index of element (0, 0).
    pub offset: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between rows.
    pub row_stride: usize,
    /// Distance between columns.
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A `rows × cols` view with contiguous rows `row_stride` apart, from element `offset`.
    pub fn with_rows(
        data: &'a [f32],
        offset: usize,
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Self {
        Self {
            data,
            offset,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// Whether every element lies inside `data`.
    pub(super) fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// A mutable destination; the same addressing as [`MatRef`], over a raw base pointer so that
/// disjoint tiles of one buffer can be written from several threads.
#[derive(Debug, Clone, Copy)]
pub struct MatMut {
    /// Base of the whole buffer.
    pub base: *mut f32,
    /// Length of the whole buffer (for the bounds check).
    pub len: usize,
    /// Index of element (0, 0).
    pub offset: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between rows.
    pub row_stride: usize,
}

// SAFETY: a MatMut is only a description of a region; writers guarantee regions are disjoint.
#[allow(unsafe_code)]
unsafe impl Send for MatMut {}
#[allow(unsafe_code)]
unsafe impl Sync for MatMut {}

impl MatMut {
    /// The whole of `buf` as a row-major `rows × cols` matrix (the caller keeps `buf` alive and
    /// unaliased while the view is used).
    pub fn row_major(buf: &mut [f32], rows: usize, cols: usize) -> Self {
        assert!(rows * cols <= buf.len(), "matrix view past its buffer");
        Self {
            base: buf.as_mut_ptr(),
            len: buf.len(),
            offset: 0,
            rows,
            cols,
            row_stride: cols,
        }
    }

    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.offset + (self.rows - 1) * self.row_stride + self.cols - 1 < self.len
    }

    /// Row `r` of the region as a slice.
    ///
    /// # Safety
    /// The buffer must outlive `'a`, and nothing else may access this row of the region while the
    /// slice lives.
    #[allow(unsafe_code)]
    pub unsafe fn row<'a>(self, r: usize) -> &'a mut [f32] {
        assert!(r < self.rows && self.in_bounds());
        // SAFETY: in bounds (checked above); exclusivity is the caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.add(self.offset + r * self.row_stride),
                self.cols,
            )
        }
    }
}

/// Row blocks handed to threads are multiples of this (the AVX-512 microkernel's 64 rows).
const ROW_BLOCK_ALIGN: usize = 64;

/// How a product's operands are multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Products {
    /// f32 operands (the default).
    #[default]
    F32,
    /// Operands rounded to bf16, products summed in f32 (CPUs with AVX-512 BF16 only).
    Bf16,
}

/// On the pool, splits `dst`'s rows (output channels) into one block per thread (whole multiples
/// of [`ROW_BLOCK_ALIGN`] rows) and runs `block(rows, first_row)` on each: one fork-join per
/// product instead of the gemm crate's finer-grained synchronisation, which left cores idle on
/// the small maps of a batch of one. Returns `false`, running nothing, for one thread or too
/// few rows.
pub(super) fn in_row_blocks(
    dst: MatMut,
    threads: usize,
    block: impl Fn(MatMut, usize) + Sync,
) -> bool {
    if threads <= 1 || dst.rows < 2 * ROW_BLOCK_ALIGN {
        return false;
    }
    let blocks = threads.min(dst.rows / ROW_BLOCK_ALIGN);
    let per_block = dst.rows.div_ceil(blocks).next_multiple_of(ROW_BLOCK_ALIGN);
    use rayon::prelude::*;
    // Captured whole (a closure would otherwise capture the raw pointer field alone).
    let whole = &dst;
    (0..dst.rows.div_ceil(per_block))
        .into_par_iter()
        .for_each(|b| {
            let dst = *whole;
            let first = b * per_block;
            let rows = per_block.min(dst.rows - first);
            let block_dst = MatMut {
                offset: dst.offset + first * dst.row_stride,
                rows,
                ..dst
            };
            block(block_dst, first);
        });
    true
}

/// `dst = lhs · rhs` (or `dst += lhs · rhs` with `accumulate`): `lhs` is `m × k`, `rhs` `k × n`,
/// `dst` `m × n`; `threads > 1` lets the product itself run on the rayon pool.
///
/// # Safety
/// The destination region must not be accessed by anyone else during the call.
#[allow(unsafe_code)]
pub unsafe fn sgemm(
    dst: MatMut,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    accumulate: bool,
    threads: usize,
) {
    assert_eq!(lhs.rows, dst.rows, "gemm: lhs rows");
    assert_eq!(rhs.cols, dst.cols, "gemm: rhs cols");
    assert_eq!(lhs.cols, rhs.rows, "gemm: inner dimension");
    assert!(
        lhs.in_bounds() && rhs.in_bounds() && dst.in_bounds(),
        "gemm: out of bounds"
    );
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    // Split across the pool by rows, each block a single-threaded product.
    let split = in_row_blocks(dst, threads, |block, first| {
        let block_lhs = MatRef {
            offset: lhs.offset + first * lhs.row_stride,
            rows: block.rows,
            ..lhs
        };
        // SAFETY: the blocks are disjoint rows of the caller's exclusive region.
        unsafe { sgemm(block, block_lhs, rhs, accumulate, 1) };
    });
    if split {
        return;
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every element addressed is in bounds (asserted); the destination is exclusive
    // (the caller's contract); strides are positive.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            lhs.cols,
            dst.base.add(dst.offset),
            1,
            dst.row_stride as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
