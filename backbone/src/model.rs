//! The TResNet network.

use candle_core::{DType, Device, Tensor};

use crate::blocks::ResidualBlock;
use crate::build_options::BuildOptions;
use crate::config::TResNetConfig;
use crate::cpu_kernels::{Products, native_bf16};
use crate::error::{Error, Result};
use crate::features::{FeatureInfo, FeatureMap, Features};
use crate::layers::{ConvNormAct, LayerWeights, Linear, NormMode, global_pool, space_to_depth};
use crate::layout::Layout;
use crate::manifest::Manifest;
use crate::stochastic_depth::StochasticDepth;
use crate::weights::{StateDict, check_state_dict, random_state_dict};
use crate::worker_pool::on_cpu_workers;

/// Smallest input side: the blur before stage 4 needs a map of at least 2×2 (⌈H/16⌉ ≥ 2).
pub const MIN_INPUT_SIDE: usize = 20;

/// A stage: its blocks and geometry.
#[derive(Debug, Clone)]
struct Stage {
    info: FeatureInfo,
    blocks: Vec<ResidualBlock>,
}

/// A TResNet (timm `TResNet`), ready for inference on one device in one dtype.
///
/// Input: `(N, in_chans, H, W)` images in `[0, 1]` (TResNet uses mean 0 / std 1), `H` and `W`
/// multiples of 4 and at least [`MIN_INPUT_SIDE`].
#[derive(Debug, Clone)]
pub struct TResNet {
    config: TResNetConfig,
    layout: Layout,
    stem: ConvNormAct,
    stages: Vec<Stage>,
    classifier: Option<Linear>,
    options: BuildOptions,
    /// How the folded CPU convolutions multiply.
    products: Products,
}

/// Outputs of one full forward pass.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// Stem and stage maps.
    pub features: Features,
    /// `(N, num_features)`: the globally pooled last map.
    pub pre_logits: Tensor,
    /// `(N, num_classes)`, absent when the network has no classifier.
    pub logits: Option<Tensor>,
}

/// The options a network is really built with, and how its CPU convolutions multiply: a CPU
/// network asked for in bf16 (for inference) is built in f32, with bf16 products where the CPU
/// has native bf16 ([`native_cpu_bf16`]) and plain f32 where it has not.
fn cpu_precision(options: &BuildOptions) -> (BuildOptions, Products) {
    if options.device.is_cpu() && options.dtype == DType::BF16 && options.compute_dtype.is_none() {
        let products = if native_bf16() {
            Products::Bf16
        } else {
            Products::F32
        };
        let f32_options = BuildOptions {
            dtype: DType::F32,
            ..options.clone()
        };
        return (f32_options, products);
    }
    (options.clone(), Products::F32)
}

/// Whether this CPU multiplies bf16 natively (AVX-512 BF16), which CPU networks built in bf16
/// use inside their convolutions.
pub fn native_cpu_bf16() -> bool {
    native_bf16()
}

/// Whether this CPU's bf16 products run on AMX tiles (Intel Xeon from Sapphire Rapids on; off
/// with `TRESNET_AMX=0`).
pub fn native_cpu_amx() -> bool {
    crate::cpu_kernels::amx_available()
}

/// Whether this CPU runs f32 3×3 convolutions by Winograd F(4×4, 3×3) (AVX-512), as CPU
/// inference networks in f32 do on maps of at least 16 tiles of 4×4.
pub fn native_cpu_winograd() -> bool {
    crate::cpu_kernels::winograd_available()
}

impl TResNet {
    /// Builds the network from a timm-named state dict, strictly: every tensor the architecture
    /// needs must be present with the right shape and nothing else may be there (the error lists
    /// every offending name). `num_batches_tracked` counters may be absent.
    pub fn new(config: &TResNetConfig, state: &StateDict, options: &BuildOptions) -> Result<Self> {
        let layout = Layout::new(config)?;
        check_state_dict(&Manifest::of(&layout), state)?;
        Self::build(config.clone(), layout, state, options)
    }

    /// A network with seeded random weights initialised as timm does (for benchmarks and
    /// training from scratch).
    pub fn random(config: &TResNetConfig, seed: u64, options: &BuildOptions) -> Result<Self> {
        let layout = Layout::new(config)?;
        let state = random_state_dict(&layout, seed)?;
        Self::build(config.clone(), layout, &state, options)
    }

    fn build(
        config: TResNetConfig,
        layout: Layout,
        state: &StateDict,
        options: &BuildOptions,
    ) -> Result<Self> {
        // A CPU network asked for in bf16 keeps f32 activations (every fast CPU kernel is an f32
        // one) and multiplies in bf16 inside its convolutions where the CPU does so natively.
        let (options, products) = cpu_precision(options);
        let mut weights = LayerWeights::inference(
            state,
            options.dtype,
            &options.device,
            options.fold_batch_norm,
        );
        weights.products = products;
        let mut model = Self::build_with(config, layout, &weights, &options)?;
        model.set_products(products);
        Ok(model)
    }

    /// Builds from explicit layer weights (also the training path).
    pub(crate) fn build_with(
        config: TResNetConfig,
        layout: Layout,
        weights: &LayerWeights<'_>,
        options: &BuildOptions,
    ) -> Result<Self> {
        // An inference network multiplying in bf16 keeps its stem convolution in f32: it sees
        // the normalised pixels themselves, and its rounding reaches every later layer. Measured
        // with the embedded model on the test photos (AMX, every other convolution in bf16): the
        // largest score change from f32 stays at 0.014, but the one label that differed
        // (`encodings/palette.png`, `triangle` 0.372 in f32 against a threshold of 0.378, 0.383
        // with a bf16 stem) comes back to 0.373; the stem is 1.5 % of TResNet-M's products.
        let stem_weights = match weights.norm {
            NormMode::Fold | NormMode::Separate => LayerWeights {
                products: Products::F32,
                ..*weights
            },
            NormMode::Train { .. } => LayerWeights { ..*weights },
        };
        let stem = ConvNormAct::load(&layout.stem, &stem_weights)?;
        let stages = layout
            .stages
            .iter()
            .map(|spec| {
                Ok(Stage {
                    info: FeatureInfo {
                        name: spec.name.clone(),
                        channels: spec.out_channels,
                        stride: spec.stride,
                    },
                    blocks: spec
                        .blocks
                        .iter()
                        .map(|b| ResidualBlock::load(b, weights))
                        .collect::<Result<_>>()?,
                })
            })
            .collect::<Result<_>>()?;
        let classifier = layout
            .classifier
            .as_ref()
            .map(|c| Linear::load(&c.prefix, weights))
            .transpose()?;
        Ok(Self {
            config,
            layout,
            stem,
            stages,
            classifier,
            options: options.clone(),
            products: Products::F32,
        })
    }

    /// Records how the network's convolutions multiply (set by the builders that chose it).
    pub(crate) fn set_products(&mut self, products: Products) {
        self.products = products;
    }

    /// Whether the convolutions multiply bf16 operands (a CPU network built in bf16, or trained
    /// under bf16 mixed precision, on a CPU with AVX-512 BF16); activations and outputs are f32
    /// then.
    pub fn multiplies_in_bf16(&self) -> bool {
        self.products == Products::Bf16
    }

    /// The architecture.
    pub fn config(&self) -> &TResNetConfig {
        &self.config
    }

    /// The layer plan (names and channel counts).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The dtype activations are computed in (inputs are cast to it).
    pub fn dtype(&self) -> DType {
        self.options.activation_dtype()
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.options.device
    }

    /// Whether batch norms were folded into the convolutions.
    pub fn is_folded(&self) -> bool {
        self.options.fold_batch_norm
    }

    /// Channels of the last feature map.
    pub fn num_features(&self) -> usize {
        self.layout.num_features
    }

    /// Width of the pooled vector fed to the classifier.
    pub fn pooled_width(&self) -> usize {
        self.config
            .global_pool
            .output_width(self.layout.num_features)
    }

    /// Classifier outputs (0 without a classifier).
    pub fn num_classes(&self) -> usize {
        self.classifier.as_ref().map_or(0, Linear::out_features)
    }

    /// Geometry of the stem and the four stages.
    pub fn feature_info(&self) -> Vec<FeatureInfo> {
        let stem = FeatureInfo {
            name: "stem".into(),
            channels: self.layout.stem.out_channels,
            stride: 4,
        };
        std::iter::once(stem)
            .chain(self.stages.iter().map(|s| s.info.clone()))
            .collect()
    }

    /// Checks an input shape before any work, so a wrong size fails with a clear message.
    pub fn check_input_shape(&self, dims: &[usize]) -> Result<()> {
        let reject = |reason: String| {
            Err(Error::InputShape {
                shape: dims.to_vec(),
                reason,
            })
        };
        let &[n, c, h, w] = dims else {
            return reject("expected a batch of images (N, C, H, W)".into());
        };
        if n == 0 {
            return reject("the batch is empty".into());
        }
        if c != self.config.in_chans {
            return reject(format!(
                "the network takes {} channels",
                self.config.in_chans
            ));
        }
        if h % 4 != 0 || w % 4 != 0 {
            return reject(format!(
                "height {h} and width {w} must be multiples of 4 (space-to-depth stem); resize to \
                 e.g. {}×{}",
                h.next_multiple_of(4),
                w.next_multiple_of(4)
            ));
        }
        if h < MIN_INPUT_SIDE || w < MIN_INPUT_SIDE {
            return reject(format!(
                "sides must be at least {MIN_INPUT_SIDE} pixels (the stride-16 map must be 2×2 \
                 or larger)"
            ));
        }
        Ok(())
    }

    /// Moves an input to the network's device and dtype after checking its shape.
    fn prepare_input(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input_shape(x.dims())?;
        Ok(x.to_device(&self.options.device)?
            .to_dtype(self.options.activation_dtype())?)
    }

    /// Runs the body: `(N, C, H, W)` → stem map (stride 4) and the four stage maps
    /// (strides 4, 8, 16, 32).
    pub fn forward_features(&self, x: &Tensor) -> Result<Features> {
        self.forward_features_with(x, None)
    }

    /// [`Self::forward_features`] with stochastic depth (training passes).
    pub fn forward_features_with(
        &self,
        x: &Tensor,
        depth: Option<&StochasticDepth>,
    ) -> Result<Features> {
        on_cpu_workers(&self.options.device, || self.run_body(x, depth))
    }

    /// The body of [`Self::forward_features_with`], on the calling thread.
    fn run_body(&self, x: &Tensor, depth: Option<&StochasticDepth>) -> Result<Features> {
        let x = self.prepare_input(x)?;
        let stem = self.stem.forward(&space_to_depth(&x)?)?;
        let mut current = stem.clone();
        let mut stages = Vec::with_capacity(self.stages.len());
        let blocks: usize = self.stages.iter().map(|s| s.blocks.len()).sum();
        let mut index = 0;
        for stage in &self.stages {
            for block in &stage.blocks {
                let factor = match depth {
                    Some(d) => d.block_factor(
                        index,
                        blocks,
                        current.dim(0)?,
                        current.dtype(),
                        current.device(),
                    )?,
                    None => None,
                };
                current = block.forward_with(&current, factor.as_ref())?;
                index += 1;
            }
            stages.push(FeatureMap {
                name: stage.info.name.clone(),
                tensor: current.clone(),
                channels: stage.info.channels,
                stride: stage.info.stride,
            });
        }
        Ok(Features {
            stem: FeatureMap {
                name: "stem".into(),
                tensor: stem,
                channels: self.layout.stem.out_channels,
                stride: 4,
            },
            stages,
        })
    }

    /// Global pooling of the last map: `(N, C, h, w)` → `(N, pooled_width)`.
    pub fn pre_logits(&self, last: &Tensor) -> Result<Tensor> {
        global_pool(last, self.config.global_pool)
    }

    /// The classifier on pooled features: `(N, pooled_width)` → `(N, num_classes)`, or `None`
    /// without a classifier.
    pub fn classify(&self, pooled: &Tensor) -> Result<Option<Tensor>> {
        self.classifier
            .as_ref()
            .map(|fc| fc.forward(pooled))
            .transpose()
    }

    /// Everything at once: feature maps, pooled features and logits.
    pub fn forward_all(&self, x: &Tensor) -> Result<ModelOutput> {
        self.forward_all_with(x, None)
    }

    /// [`Self::forward_all`] with stochastic depth (training passes).
    pub fn forward_all_with(
        &self,
        x: &Tensor,
        depth: Option<&StochasticDepth>,
    ) -> Result<ModelOutput> {
        on_cpu_workers(&self.options.device, || {
            let features = self.run_body(x, depth)?;
            let pre_logits = self.pre_logits(features.last())?;
            let logits = self.classify(&pre_logits)?;
            Ok(ModelOutput {
                features,
                pre_logits,
                logits,
            })
        })
    }

    /// Logits `(N, num_classes)`, or pooled features `(N, pooled_width)` when the network has no
    /// classifier (as timm's `forward` with `num_classes=0`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.forward_all(x)?;
        Ok(out.logits.unwrap_or(out.pre_logits))
    }

    /// Replaces the classifier by a freshly initialised one with `num_classes` outputs
    /// (`N(0, 0.01)` weights, as timm), or removes it when `num_classes` is 0.
    pub fn reset_classifier(&mut self, num_classes: usize, seed: u64) -> Result<()> {
        self.config.num_classes = num_classes;
        self.layout = Layout::new(&self.config)?;
        self.classifier = match &self.layout.classifier {
            None => None,
            Some(spec) => Some(Linear::random(
                spec.in_features,
                spec.num_classes,
                seed,
                self.options.dtype,
                &self.options.device,
            )?),
        };
        Ok(())
    }
}
