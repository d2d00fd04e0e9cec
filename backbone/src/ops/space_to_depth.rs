//! Space-to-depth as a candle operation: the CPU kernel for contiguous f32 inputs.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::f32_slice;
use crate::cpu_kernels::space_to_depth::BLOCK;
use crate::cpu_kernels::{space_to_depth_forward, zeroed};

/// [`space_to_depth_forward`] as a candle operation; its gradient is the inverse rearrangement
/// (tensor operations: images rarely need one).
pub(crate) struct SpaceToDepthOp;

impl CustomOp1 for SpaceToDepthOp {
    fn name(&self) -> &'static str {
        "tresnet-space-to-depth"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        if h % BLOCK != 0 || w % BLOCK != 0 {
            candle_core::bail!("space-to-depth: {h}×{w} is not a multiple of 4");
        }
        let mut out = zeroed(n * c * h * w);
        space_to_depth_forward(
            f32_slice(s, l, "space-to-depth input")?,
            (n, c, h, w),
            &mut out,
        );
        Ok((
            CpuStorage::F32(out),
            Shape::from((n, BLOCK * BLOCK * c, h / BLOCK, w / BLOCK)),
        ))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (n, c, h, w) = x.dims4()?;
        // grad (N, (i, j, c), y, x) → (N, c, y, i, x, j) → (N, C, H, W).
        let g = grad
            .reshape((n, BLOCK, BLOCK, c, h / BLOCK, w / BLOCK))?
            .permute((0, 3, 4, 1, 5, 2))?
            .reshape((n, c, h, w))?;
        Ok(Some(g))
    }
}
