//! The shortcut's 2×2 average pool in ceil mode.

use candle_core::Tensor;

use crate::error::Result;

/// `AvgPool2d(kernel 2, stride 2, ceil_mode=True, count_include_pad=False)`:
/// `(N, C, H, W)` → `(N, C, ⌈H/2⌉, ⌈W/2⌉)`. With an odd side the last window is partial and averages
/// only the elements inside the map (a 3×3 map gives `[a, b, c, d]` over windows of 4, 2, 2 and 1).
pub fn avg_pool_2x2_ceil(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h % 2 == 0 && w % 2 == 0 {
        return Ok(x.avg_pool2d(2)?);
    }
    let padded = x.pad_with_zeros(2, 0, h % 2)?.pad_with_zeros(3, 0, w % 2)?;
    // The pool divides every window by 4; rescale the partial ones to their real element count.
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let rows = |i: usize, n: usize, odd: bool| if odd && i == n - 1 { 1.0 } else { 2.0 };
    let correction: Vec<f32> = (0..ho)
        .flat_map(|i| (0..wo).map(move |j| (i, j)))
        .map(|(i, j)| 4.0 / (rows(i, ho, h % 2 == 1) * rows(j, wo, w % 2 == 1)))
        .collect();
    let correction =
        Tensor::from_vec(correction, (1, 1, ho, wo), x.device())?.to_dtype(x.dtype())?;
    Ok(padded.avg_pool2d(2)?.broadcast_mul(&correction)?)
}
