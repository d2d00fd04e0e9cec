//! The architecture as a plan: every layer with its timm weight name and channel counts.
//!
//! One [`Layout`] drives both the state-dict manifest (names, shapes, parameter counts) and the
//! construction of the runnable network, so the two can never disagree.

use crate::config::{GlobalPool, TResNetConfig};
use crate::error::Result;

/// The non-linearity applied after a batch norm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// No activation (the last conv of a block, shortcut convs).
    Identity,
    /// `max(x, slope * x)`.
    LeakyRelu(f64),
    /// `max(x, 0)`.
    Relu,
}

/// timm `ConvNormAct`: a bias-free convolution, a batch norm and an activation, optionally followed by
/// the anti-aliasing blur with stride 2 (the only way TResNet downsamples inside a block).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvNormActSpec {
    /// Weight-name prefix, e.g. `body.layer2.0.conv1`; tensors are `{prefix}.conv.weight` and
    /// `{prefix}.bn.{weight,bias,running_mean,running_var,num_batches_tracked}`.
    pub prefix: String,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size (1 or 3); padding is `kernel_size / 2`, stride is always 1.
    pub kernel_size: usize,
    /// Activation after the batch norm.
    pub activation: Activation,
    /// Whether a stride-2 blur follows the activation.
    pub anti_alias: bool,
}

/// Squeeze-and-excitation: global mean, 1×1 conv to `hidden`, ReLU, 1×1 conv back, sigmoid gate.
#[derive(Debug, Clone, PartialEq)]
pub struct SqueezeExciteSpec {
    /// Weight-name prefix, e.g. `body.layer1.0.se` (tensors `fc1.*`, `fc2.*`).
    pub prefix: String,
    /// Channels gated.
    pub channels: usize,
    /// Width of the bottleneck: `max(planes * expansion / 4, 64)` (basic) or
    /// `max(planes * expansion / 8, 64)` (bottleneck).
    pub hidden: usize,
}

/// The projection shortcut of a stage's first block.
#[derive(Debug, Clone, PartialEq)]
pub struct ShortcutSpec {
    /// Whether a 2×2 average pool (stride 2, ceil mode, padding excluded) precedes the conv.
    pub avg_pool: bool,
    /// The 1×1 conv + batch norm (no activation); its prefix ends in `downsample.1`, or
    /// `downsample.0` when there is no pool.
    pub conv: ConvNormActSpec,
}

/// The two residual block types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convs (expansion 1); SE on the output before the residual add.
    Basic,
    /// 1×1, 3×3, 1×1 convs (expansion 4); SE on the middle width before the last conv.
    Bottleneck,
}

impl BlockKind {
    /// Output channels per `planes` of block width.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// One residual block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSpec {
    /// Weight-name prefix, e.g. `body.layer3.0`.
    pub prefix: String,
    /// Basic or bottleneck.
    pub kind: BlockKind,
    /// Projection shortcut (first block of a stage that changes stride or width).
    pub shortcut: Option<ShortcutSpec>,
    /// The convs in order (2 for basic, 3 for bottleneck).
    pub convs: Vec<ConvNormActSpec>,
    /// Squeeze-and-excitation, absent in stage 4.
    pub squeeze_excite: Option<SqueezeExciteSpec>,
}

/// One of the four stages.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSpec {
    /// `layer1` … `layer4` (timm's module names).
    pub name: String,
    /// Total downsampling of this stage's output relative to the input image (4, 8, 16, 32).
    pub stride: usize,
    /// Channels of the stage output.
    pub out_channels: usize,
    /// The blocks in order.
    pub blocks: Vec<BlockSpec>,
}

/// The linear classifier `head.fc`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierSpec {
    /// `head.fc`.
    pub prefix: String,
    /// Width of the pooled vector.
    pub in_features: usize,
    /// Number of outputs.
    pub num_classes: usize,
}

/// The whole network.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Input channels before space-to-depth.
    pub in_chans: usize,
    /// The stem conv `body.conv1` (input `16 * in_chans` channels after space-to-depth).
    pub stem: ConvNormActSpec,
    /// `layer1` … `layer4`.
    pub stages: Vec<StageSpec>,
    /// Global pooling.
    pub global_pool: GlobalPool,
    /// Channels of the last stage.
    pub num_features: usize,
    /// The classifier, absent when `num_classes == 0`.
    pub classifier: Option<ClassifierSpec>,
}

impl Layout {
    /// Plans the network described by `config`, the way timm's `TResNet.__init__` builds it.
    pub fn new(config: &TResNetConfig) -> Result<Self> {
        config.validate()?;
        let planes = config.base_planes();
        let stem = ConvNormActSpec {
            prefix: "body.conv1".into(),
            in_channels: config.in_chans * 16,
            out_channels: planes,
            kernel_size: 3,
            activation: Activation::LeakyRelu(config.stem_leaky_slope),
            anti_alias: false,
        };
        let first_kind = if config.v2 {
            BlockKind::Bottleneck
        } else {
            BlockKind::Basic
        };
        let kinds = [
            first_kind,
            first_kind,
            BlockKind::Bottleneck,
            BlockKind::Bottleneck,
        ];
        let mut in_channels = planes;
        let mut stages = Vec::with_capacity(4);
        for (index, kind) in kinds.into_iter().enumerate() {
            let stage_planes = planes << index;
            let downsamples = index > 0;
            let name = format!("layer{}", index + 1);
            let mut blocks = Vec::with_capacity(config.layers[index]);
            for block_index in 0..config.layers[index] {
                let block = plan_block(
                    &format!("body.{name}.{block_index}"),
                    kind,
                    in_channels,
                    stage_planes,
                    downsamples && block_index == 0,
                    index < 3,
                    config.block_leaky_slope,
                );
                in_channels = stage_planes * kind.expansion();
                blocks.push(block);
            }
            stages.push(StageSpec {
                name,
                stride: 4 << index,
                out_channels: in_channels,
                blocks,
            });
        }
        let num_features = in_channels;
        let classifier = (config.num_classes > 0).then(|| ClassifierSpec {
            prefix: "head.fc".into(),
            in_features: config.global_pool.output_width(num_features),
            num_classes: config.num_classes,
        });
        Ok(Self {
            in_chans: config.in_chans,
            stem,
            stages,
            global_pool: config.global_pool,
            num_features,
            classifier,
        })
    }

    /// Every conv + batch-norm unit in state-dict order.
    pub fn conv_units(&self) -> Vec<&ConvNormActSpec> {
        let mut units = vec![&self.stem];
        for block in self.stages.iter().flat_map(|s| &s.blocks) {
            if let Some(shortcut) = &block.shortcut {
                units.push(&shortcut.conv);
            }
            units.extend(block.convs.iter());
        }
        units
    }
}

fn plan_block(
    prefix: &str,
    kind: BlockKind,
    in_channels: usize,
    planes: usize,
    stride_two: bool,
    with_se: bool,
    slope: f64,
) -> BlockSpec {
    let out_channels = planes * kind.expansion();
    let conv = |name: &str, cin: usize, cout: usize, k: usize, act: Activation, aa: bool| {
        ConvNormActSpec {
            prefix: format!("{prefix}.{name}"),
            in_channels: cin,
            out_channels: cout,
            kernel_size: k,
            activation: act,
            anti_alias: aa,
        }
    };
    let leaky = Activation::LeakyRelu(slope);
    let shortcut = (stride_two || in_channels != out_channels).then(|| ShortcutSpec {
        avg_pool: stride_two,
        conv: conv(
            if stride_two {
                "downsample.1"
            } else {
                "downsample.0"
            },
            in_channels,
            out_channels,
            1,
            Activation::Identity,
            false,
        ),
    });
    let (convs, se_channels, se_hidden) = match kind {
        BlockKind::Basic => (
            vec![
                conv("conv1", in_channels, planes, 3, leaky, stride_two),
                conv("conv2", planes, planes, 3, Activation::Identity, false),
            ],
            out_channels,
            (out_channels / 4).max(64),
        ),
        BlockKind::Bottleneck => (
            vec![
                conv("conv1", in_channels, planes, 1, leaky, false),
                conv("conv2", planes, planes, 3, leaky, stride_two),
                conv(
                    "conv3",
                    planes,
                    out_channels,
                    1,
                    Activation::Identity,
                    false,
                ),
            ],
            planes,
            (out_channels / 8).max(64),
        ),
    };
    BlockSpec {
        prefix: prefix.to_string(),
        kind,
        shortcut,
        convs,
        squeeze_excite: with_se.then(|| SqueezeExciteSpec {
            prefix: format!("{prefix}.se"),
            channels: se_channels,
            hidden: se_hidden,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tresnet_m_shapes_match_the_spec() {
        let layout = Layout::new(&TResNetConfig::variant("tresnet_m").unwrap()).unwrap();
        let outs: Vec<usize> = layout.stages.iter().map(|s| s.out_channels).collect();
        assert_eq!(outs, vec![64, 128, 1024, 2048]);
        let se: Vec<(usize, usize)> = layout
            .stages
            .iter()
            .filter_map(|s| s.blocks[0].squeeze_excite.as_ref())
            .map(|se| (se.channels, se.hidden))
            .collect();
        assert_eq!(se, vec![(64, 64), (128, 64), (256, 128)]);
        assert!(layout.stages[0].blocks[0].shortcut.is_none());
        assert!(
            layout.stages[1].blocks[0]
                .shortcut
                .as_ref()
                .unwrap()
                .avg_pool
        );
    }

    #[test]
    fn v2_first_stage_projects_without_pooling() {
        let layout = Layout::new(&TResNetConfig::variant("tresnet_v2_l").unwrap()).unwrap();
        let shortcut = layout.stages[0].blocks[0].shortcut.as_ref().unwrap();
        assert!(!shortcut.avg_pool);
        assert_eq!(shortcut.conv.prefix, "body.layer1.0.downsample.0");
        assert_eq!(shortcut.conv.out_channels, 256);
    }
}
