//! The TResNet stem's space-to-depth rearrangement.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::ops::SpaceToDepthOp;

/// Rearranges 4×4 pixel blocks into channels: `(N, C, H, W)` → `(N, 16·C, H/4, W/4)` with
/// `out[n, (4·i + j)·C + c, y, x] = in[n, c, 4·y + i, 4·x + j]` (block row `i`, block column `j`,
/// channel `c` fastest — TensorFlow's `space_to_depth` order, not `pixel_unshuffle`'s).
///
/// `H` and `W` must be multiples of 4. f32 on the CPU runs one gather kernel; elsewhere a reshape,
/// permute and copy.
pub fn space_to_depth(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h % 4 != 0 || w % 4 != 0 {
        return Err(Error::InputShape {
            shape: x.dims().to_vec(),
            reason: format!("height {h} and width {w} must be multiples of 4 (space-to-depth)"),
        });
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return Ok(x.contiguous()?.apply_op1(SpaceToDepthOp)?);
    }
    Ok(x.reshape((n, c, h / 4, 4, w / 4, 4))?
        .permute((0, 3, 5, 1, 2, 4))?
        .reshape((n, 16 * c, h / 4, w / 4))?)
}
