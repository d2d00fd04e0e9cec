//! The anti-aliasing blur that does TResNet's in-block downsampling.

use candle_core::{DType, Device, Tensor};

use super::conv2d;
use crate::error::{Error, Result};

/// Fixed 3×3 binomial blur `[1,2,1]ᵀ[1,2,1] / 16` with reflect padding 1 and stride 2, applied to
/// every channel (timm `BlurPool2d(filt_size=3)`): `(N, C, H, W)` → `(N, C, ⌈H/2⌉, ⌈W/2⌉)`.
///
/// It runs as a single one-channel convolution over `(N·C, 1, H+2, W+2)`, not as a grouped
/// convolution (which candle would execute one group at a time).
#[derive(Debug, Clone)]
pub struct BlurPool {
    /// `(1, 1, 3, 3)`.
    kernel: Tensor,
}

impl BlurPool {
    /// The blur in `dtype` on `device`.
    pub fn new(dtype: DType, device: &Device) -> Result<Self> {
        let taps = [1.0f32, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0].map(|v| v / 16.0);
        let kernel = Tensor::from_slice(&taps, (1, 1, 3, 3), device)?.to_dtype(dtype)?;
        Ok(Self { kernel })
    }

    /// Blurs and subsamples; both sides must be at least 2 (reflect padding needs a neighbour).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if h < 2 || w < 2 {
            return Err(Error::InputShape {
                shape: x.dims().to_vec(),
                reason: format!(
                    "a {h}×{w} feature map is too small to downsample with reflect padding; use a \
                     larger input image (at least 20×20 pixels)"
                ),
            });
        }
        let padded = reflect_pad_1(x)?.reshape((n * c, 1, h + 2, w + 2))?;
        let y = conv2d(&padded, &self.kernel, 0, 2)?;
        let (_, _, ho, wo) = y.dims4()?;
        Ok(y.reshape((n, c, ho, wo))?)
    }
}

/// Reflect padding of one pixel on all four sides (`F.pad(x, [1,1,1,1], mode="reflect")`).
fn reflect_pad_1(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let rows = Tensor::cat(&[&x.narrow(2, 1, 1)?, x, &x.narrow(2, h - 2, 1)?], 2)?;
    Ok(Tensor::cat(
        &[&rows.narrow(3, 1, 1)?, &rows, &rows.narrow(3, w - 2, 1)?],
        3,
    )?)
}
