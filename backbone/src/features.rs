//! The multi-scale outputs of the backbone.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// One named feature map with its geometry.
#[derive(Debug, Clone)]
pub struct FeatureMap {
    /// `stem` (timm `body.conv1`) or `layer1` … `layer4`.
    pub name: String,
    /// `(N, channels, H / stride, W / stride)` (sides rounded up at each halving).
    pub tensor: Tensor,
    /// Number of channels.
    pub channels: usize,
    /// Downsampling relative to the input image.
    pub stride: usize,
}

/// Everything [`crate::TResNet::forward_features`] computes.
#[derive(Debug, Clone)]
pub struct Features {
    /// The stem output (after space-to-depth and `body.conv1`), stride 4.
    pub stem: FeatureMap,
    /// `layer1` … `layer4`, strides 4, 8, 16, 32.
    pub stages: Vec<FeatureMap>,
}

impl Features {
    /// The last stage's map (what the classifier and ML-Decoder consume).
    pub fn last(&self) -> &Tensor {
        &self
            .stages
            .last()
            .expect("a TResNet always has four stages")
            .tensor
    }

    /// The stem followed by the four stages.
    pub fn all(&self) -> impl Iterator<Item = &FeatureMap> {
        std::iter::once(&self.stem).chain(self.stages.iter())
    }

    /// Every map cast to `dtype` (differentiable; the same maps when already in it), e.g. to
    /// feed an f32 head from a mixed-precision backbone.
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let cast = |m: &FeatureMap| -> Result<FeatureMap> {
            Ok(FeatureMap {
                tensor: m.tensor.to_dtype(dtype)?,
                ..m.clone()
            })
        };
        Ok(Self {
            stem: cast(&self.stem)?,
            stages: self.stages.iter().map(cast).collect::<Result<_>>()?,
        })
    }
}

/// Geometry of one feature map, known before running the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureInfo {
    /// `stem`, `layer1` … `layer4`.
    pub name: String,
    /// Channels.
    pub channels: usize,
    /// Downsampling relative to the input.
    pub stride: usize,
}
