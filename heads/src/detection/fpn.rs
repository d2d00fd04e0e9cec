//! A feature pyramid over TResNet's stride-8/16/32 maps: 1×1 laterals, nearest-neighbour top-down
//! sums, 3×3 smoothing, and optionally P6/P7 by stride-2 convs on P5.

use candle_core::{DType, Device, Tensor};
use tresnet::layers::conv2d;
use tresnet::weights::StateDict;

use super::config::DetectorConfig;
use super::parameters::fetch;
use crate::error::Result;

/// A conv with its bias.
#[derive(Debug, Clone)]
pub(crate) struct BiasedConv {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    stride: usize,
}

impl BiasedConv {
    pub(crate) fn load(
        state: &StateDict,
        name: &str,
        stride: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let weight = fetch(state, &format!("{name}.weight"), dtype, device)?;
        let padding = weight.dims()[2] / 2;
        Ok(Self {
            bias: fetch(state, &format!("{name}.bias"), dtype, device)?,
            weight,
            padding,
            stride,
        })
    }

    /// `(B, I, H, W)` → `(B, O, H', W')`.
    ///
    /// A strided conv runs as the stride-1 conv sampled every `stride` rows and columns (the
    /// same numbers): candle 0.11's backward of a stride-2 conv on an odd-sized map returns a
    /// gradient of the wrong shape, and the maps here are small.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = conv2d(x, &self.weight, self.padding, 1)?;
        if self.stride > 1 {
            for dim in [2, 3] {
                let n = y.dim(dim)?;
                let keep: Vec<u32> = (0..n as u32).step_by(self.stride).collect();
                let index = Tensor::from_vec(keep, n.div_ceil(self.stride), y.device())?;
                y = y.index_select(&index, dim)?;
            }
        }
        Ok(y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)?)
    }
}

/// Nearest-neighbour ×2 upsampling cut to `(height, width)`: `(B, C, H, W)` →
/// `(B, C, height, width)` with `height ≤ 2H`, `width ≤ 2W`. Built from a broadcast so it
/// backpropagates.
pub fn upsample_nearest_2x(x: &Tensor, height: usize, width: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let up = x
        .reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))?;
    Ok(up.narrow(2, 0, height)?.narrow(3, 0, width)?)
}

/// The pyramid's weights.
#[derive(Debug, Clone)]
pub struct Fpn {
    lateral: Vec<BiasedConv>,
    output: Vec<BiasedConv>,
    p6: Option<BiasedConv>,
    p7: Option<BiasedConv>,
}

impl Fpn {
    /// Loads `fpn.*` from `state` (see [`super::detector_parameters`]).
    pub fn load(
        config: &DetectorConfig,
        state: &StateDict,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let conv = |name: String, stride| BiasedConv::load(state, &name, stride, dtype, device);
        Ok(Self {
            lateral: (0..3)
                .map(|i| conv(format!("fpn.lateral.{i}"), 1))
                .collect::<Result<_>>()?,
            output: (0..3)
                .map(|i| conv(format!("fpn.output.{i}"), 1))
                .collect::<Result<_>>()?,
            p6: config
                .extra_levels
                .then(|| conv("fpn.p6".into(), 2))
                .transpose()?,
            p7: config
                .extra_levels
                .then(|| conv("fpn.p7".into(), 2))
                .transpose()?,
        })
    }

    /// Backbone maps `[C3, C4, C5]` (strides 8, 16, 32) → `[P3, P4, P5]` (+ `P6, P7`), each
    /// `(B, fpn_channels, H_l, W_l)`.
    pub fn forward(&self, maps: [&Tensor; 3]) -> Result<Vec<Tensor>> {
        let lateral: Vec<Tensor> = maps
            .iter()
            .zip(&self.lateral)
            .map(|(m, conv)| conv.forward(m))
            .collect::<Result<_>>()?;
        let mut merged = vec![lateral[2].clone()];
        for i in (0..2).rev() {
            let (_, _, h, w) = lateral[i].dims4()?;
            let top = upsample_nearest_2x(&merged[0], h, w)?;
            merged.insert(0, (&lateral[i] + top)?);
        }
        let mut levels: Vec<Tensor> = merged
            .iter()
            .zip(&self.output)
            .map(|(m, conv)| conv.forward(m))
            .collect::<Result<_>>()?;
        if let (Some(p6), Some(p7)) = (&self.p6, &self.p7) {
            let six = p6.forward(&levels[2])?;
            let seven = p7.forward(&six.relu()?)?;
            levels.push(six);
            levels.push(seven);
        }
        Ok(levels)
    }
}
