//! The FCOS head shared by every pyramid level: a classification tower and a box tower of
//! 3×3 conv + GroupNorm + ReLU, class logits from the first, side distances (`exp`, times a
//! learned per-level scale and the stride) and centerness from the second.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::GroupNorm;
use tresnet::weights::StateDict;

use super::config::DetectorConfig;
use super::fcos_targets::LevelShape;
use super::fpn::BiasedConv;
use super::parameters::fetch;
use crate::error::Result;

/// What the head says about one level.
#[derive(Debug, Clone)]
pub struct LevelOutput {
    /// Map size and stride.
    pub shape: LevelShape,
    /// Class logits `(B, num_classes, H, W)`.
    pub class_logits: Tensor,
    /// Side distances `[l, t, r, b]` in input pixels, `(B, 4, H, W)`, positive.
    pub ltrb: Tensor,
    /// Centerness logits `(B, 1, H, W)`.
    pub centerness_logits: Tensor,
}

/// The head's outputs on every level, finest first.
#[derive(Debug, Clone)]
pub struct FcosOutput {
    /// One entry per level.
    pub levels: Vec<LevelOutput>,
}

impl FcosOutput {
    /// The level shapes, in order.
    pub fn level_shapes(&self) -> Vec<LevelShape> {
        self.levels.iter().map(|l| l.shape).collect()
    }
}

#[derive(Debug, Clone)]
struct TowerLayer {
    conv: BiasedConv,
    norm: GroupNorm,
}

fn tower(
    config: &DetectorConfig,
    state: &StateDict,
    name: &str,
    dtype: DType,
    device: &Device,
) -> Result<Vec<TowerLayer>> {
    (0..config.tower_convs)
        .map(|j| {
            let prefix = format!("fcos.{name}.{j}");
            Ok(TowerLayer {
                conv: BiasedConv::load(state, &format!("{prefix}.conv"), 1, dtype, device)?,
                norm: GroupNorm::new(
                    fetch(state, &format!("{prefix}.norm.weight"), dtype, device)?,
                    fetch(state, &format!("{prefix}.norm.bias"), dtype, device)?,
                    config.fpn_channels,
                    config.group_norm_groups,
                    1e-5,
                )?,
            })
        })
        .collect()
}

fn run_tower(layers: &[TowerLayer], x: &Tensor) -> Result<Tensor> {
    let mut x = x.clone();
    for layer in layers {
        x = layer.norm.forward(&layer.conv.forward(&x)?)?.relu()?;
    }
    Ok(x)
}

/// The shared head.
#[derive(Debug, Clone)]
pub struct FcosHead {
    cls_tower: Vec<TowerLayer>,
    bbox_tower: Vec<TowerLayer>,
    cls_logits: BiasedConv,
    bbox_pred: BiasedConv,
    centerness: BiasedConv,
    /// One learned scale per level, `(L)`.
    scales: Tensor,
    strides: Vec<usize>,
}

impl FcosHead {
    /// Loads `fcos.*` from `state`.
    pub fn load(
        config: &DetectorConfig,
        state: &StateDict,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let conv = |name: &str| BiasedConv::load(state, name, 1, dtype, device);
        Ok(Self {
            cls_tower: tower(config, state, "cls_tower", dtype, device)?,
            bbox_tower: tower(config, state, "bbox_tower", dtype, device)?,
            cls_logits: conv("fcos.cls_logits")?,
            bbox_pred: conv("fcos.bbox_pred")?,
            centerness: conv("fcos.centerness")?,
            scales: fetch(state, "fcos.scales", dtype, device)?,
            strides: config.strides(),
        })
    }

    /// Pyramid levels `(B, F, H_l, W_l)` → the outputs of every level.
    pub fn forward(&self, levels: &[Tensor]) -> Result<FcosOutput> {
        let mut out = Vec::with_capacity(levels.len());
        for (l, x) in levels.iter().enumerate() {
            let (_, _, height, width) = x.dims4()?;
            let stride = self.strides[l];
            let cls = run_tower(&self.cls_tower, x)?;
            let reg = run_tower(&self.bbox_tower, x)?;
            let scale = self.scales.narrow(0, l, 1)?.reshape((1, 1, 1, 1))?;
            let distances = self
                .bbox_pred
                .forward(&reg)?
                .broadcast_mul(&scale)?
                .clamp(-12.0, 12.0)?
                .exp()?
                * stride as f64;
            out.push(LevelOutput {
                shape: LevelShape {
                    height,
                    width,
                    stride,
                },
                class_logits: self.cls_logits.forward(&cls)?,
                ltrb: distances?,
                centerness_logits: self.centerness.forward(&reg)?,
            });
        }
        Ok(FcosOutput { levels: out })
    }
}
