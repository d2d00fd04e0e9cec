//! The anti-aliasing blur that does TResNet's in-block downsampling.

use candle_core::Tensor;

use super::fast_blur;
use crate::error::{Error, Result};

/// Fixed 3×3 binomial blur `[1,2,1]ᵀ[1,2,1] / 16` with reflect padding 1 and stride 2, applied to
/// every channel (timm `BlurPool2d(filt_size=3)`): `(N, C, H, W)` → `(N, C, ⌈H/2⌉, ⌈W/2⌉)`.
///
/// f32 on the CPU, and f32/f16/bf16 on CUDA (feature `cuda`), run one kernel; elsewhere the
/// separable filter is applied along each axis with tensor operations
/// ([`BlurPool::forward_generic`]; no grouped convolution, which candle would run one group at a
/// time).
#[derive(Debug, Clone, Copy, Default)]
pub struct BlurPool;

impl BlurPool {
    /// Blurs and subsamples; both sides must be at least 2 (reflect padding needs a neighbour).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_side(x)?;
        if let Some(y) = fast_blur(x)? {
            return Ok(y);
        }
        self.forward_generic(x)
    }

    /// The same blur with tensor operations only (what devices without a kernel run), on every
    /// device and dtype: the reference the kernels are tested and benchmarked against.
    pub fn forward_generic(&self, x: &Tensor) -> Result<Tensor> {
        check_side(x)?;
        blur_axis(&blur_axis(x, 3)?, 2)
    }
}

/// Both sides must be at least 2: reflect padding needs a neighbour.
fn check_side(x: &Tensor) -> Result<()> {
    let (_, _, h, w) = x.dims4()?;
    if h < 2 || w < 2 {
        return Err(Error::InputShape {
            shape: x.dims().to_vec(),
            reason: format!(
                "a {h}×{w} feature map is too small to downsample with reflect padding; use a \
                     larger input image (at least 20×20 pixels)"
            ),
        });
    }
    Ok(())
}

/// Blur-and-subsample along one axis with reflect padding:
/// `out[i] = ¼·x[2i−1] + ½·x[2i] + ¼·x[2i+1]`, `x[−1] = x[1]`, `x[n] = x[n−2]`; `⌈n/2⌉` outputs.
///
/// Built from reshapes, narrows and sums only, so it runs (and differentiates) on every device;
/// candle's strided convolution would do, but its gradient gets the input size wrong when the
/// padded side is even.
fn blur_axis(x: &Tensor, axis: usize) -> Result<Tensor> {
    let n = x.dims()[axis];
    // Make the length even with the reflected element x[n−2] when it is odd.
    let x = if n % 2 == 1 {
        Tensor::cat(&[x, &x.narrow(axis, n - 2, 1)?], axis)?
    } else {
        x.clone()
    };
    let half = x.dims()[axis] / 2;
    let mut split = x.dims().to_vec();
    split[axis] = half;
    split.insert(axis + 1, 2);
    let pairs = x.reshape(split)?;
    let even = pairs.narrow(axis + 1, 0, 1)?.squeeze(axis + 1)?;
    let odd = pairs.narrow(axis + 1, 1, 1)?.squeeze(axis + 1)?;
    // x[2i−1] is odd[i−1], and x[−1] = x[1] = odd[0].
    let previous = if half > 1 {
        Tensor::cat(
            &[&odd.narrow(axis, 0, 1)?, &odd.narrow(axis, 0, half - 1)?],
            axis,
        )?
    } else {
        odd.clone()
    };
    Ok(((even * 0.5)? + ((previous + &odd)? * 0.25)?)?)
}
