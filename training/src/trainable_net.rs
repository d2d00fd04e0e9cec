//! What a run trains: a TResNet classifier, or a TResNet backbone with the FPN + FCOS detection
//! head, behind one interface (parameters, batch-norm freezing, state dict, loss of a batch).

use candle_core::{DType, Device, Tensor, Var};
use tresnet::StochasticDepth;
use tresnet::TrainableTResNet;
use tresnet::layers::RunningStats;
use tresnet::weights::StateDict;
use tresnet_heads::detection::{
    DetectionHead, DetectorConfig, GroundTruthBox, assign_fcos_targets, fcos_loss, pyramid_channels,
};

use crate::checkpoint::RunDefinition;
use crate::data::Target;
use tresnet_runtime::detection_state::{DETECTION_PREFIXES, split_detection_state};

/// The detector's trainable part beside the backbone.
pub struct TrainableDetectionHead {
    config: DetectorConfig,
    head: DetectionHead,
}

/// The network of a run, in training mode.
pub struct TrainableNet {
    backbone: TrainableTResNet,
    detection: Option<TrainableDetectionHead>,
    /// Backbone then head parameters, with their state-dict names.
    params: Vec<(String, Var)>,
}

impl TrainableNet {
    /// Variables initialised from `init` (backbone in timm names, plus `fpn.*`/`fcos.*` for a
    /// detection run), in f32 on `device`. Under mixed precision the backbone computes in f16 or
    /// bf16 and the heads and losses in f32.
    pub fn new(
        definition: &RunDefinition,
        init: &StateDict,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let (backbone_state, head_state) = split_detection_state(init.clone());
        let model = &definition.model;
        let backbone = match definition.train.precision.compute_dtype() {
            None => TrainableTResNet::new(model, &backbone_state, DType::F32, device)?,
            Some(compute) => {
                TrainableTResNet::mixed_precision(model, &backbone_state, compute, device)?
            }
        };
        let mut params = backbone.parameters().to_vec();
        let detection = match &definition.train.detector {
            Some(config) => {
                let channels = pyramid_channels(&backbone.model().feature_info())?;
                let mut live = StateDict::new();
                // Sorted, so the optimiser's parameter order is the same in every process.
                let mut names: Vec<&str> = head_state.keys().collect();
                names.sort_unstable();
                for name in names {
                    let tensor = head_state
                        .require(name)?
                        .to_device(device)?
                        .to_dtype(DType::F32)?;
                    let var = Var::from_tensor(&tensor)?;
                    live.insert(name, var.as_tensor().clone());
                    params.push((name.to_string(), var));
                }
                let head = DetectionHead::load(config, channels, &live, DType::F32, device)?;
                Some(TrainableDetectionHead {
                    config: config.clone(),
                    head,
                })
            }
            None => None,
        };
        Ok(Self {
            backbone,
            detection,
            params,
        })
    }

    /// Every parameter with its name.
    pub fn parameters(&self) -> &[(String, Var)] {
        &self.params
    }

    /// The backbone.
    pub fn backbone(&self) -> &TrainableTResNet {
        &self.backbone
    }

    /// Freezes or unfreezes the backbone batch norms under `prefixes`.
    pub fn set_frozen(&self, prefixes: &[String], frozen: bool) {
        self.backbone.set_frozen(prefixes, frozen);
    }

    /// The backbone's batch-norm running statistics (shared tensors: cheap to keep).
    pub fn running_statistics(&self) -> Vec<RunningStats> {
        self.backbone.running_statistics()
    }

    /// Puts back statistics saved with [`Self::running_statistics`].
    pub fn restore_running_statistics(&self, saved: Vec<RunningStats>) {
        self.backbone.restore_running_statistics(saved);
    }

    /// Current weights (backbone, running statistics, head) on the CPU.
    pub fn state_dict(&self) -> anyhow::Result<StateDict> {
        let mut state = self.backbone.state_dict()?;
        if self.detection.is_some() {
            for (name, var) in &self.params {
                if DETECTION_PREFIXES.iter().any(|p| name.starts_with(p)) {
                    state.insert(
                        name.clone(),
                        var.as_tensor().detach().to_device(&Device::Cpu)?.copy()?,
                    );
                }
            }
        }
        Ok(state)
    }

    /// Classification logits `(B, classes)` of a batch, in f32 (classifier runs only), with
    /// stochastic depth when `depth` is given.
    pub fn logits(
        &self,
        images: &Tensor,
        depth: Option<&StochasticDepth>,
    ) -> anyhow::Result<Tensor> {
        let logits = match depth {
            Some(d) => self.backbone.forward_with(images, d)?,
            None => self.backbone.forward(images)?,
        };
        Ok(logits.to_dtype(DType::F32)?)
    }

    /// The FCOS loss of a batch `(B, 3, H, W)` with one [`Target::Boxes`] per image (detection
    /// runs only).
    pub fn detection_loss(
        &self,
        images: &Tensor,
        targets: &[Target],
    ) -> anyhow::Result<tresnet_heads::Result<Tensor>> {
        let detection = self
            .detection
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this run has no detection head"))?;
        let features = self
            .backbone
            .model()
            .forward_features(images)?
            .to_dtype(DType::F32)?;
        let output = detection.head.forward(&features)?;
        let levels = output.level_shapes();
        let config = &detection.config;
        let assigned = targets
            .iter()
            .map(|t| {
                let boxes: Vec<GroundTruthBox> = match t {
                    Target::Boxes(d) => d
                        .boxes
                        .iter()
                        .map(|b| GroundTruthBox {
                            class: b.class,
                            bbox: b.bbox,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                assign_fcos_targets(
                    &levels,
                    &config.size_ranges,
                    config.center_sampling_radius,
                    &boxes,
                )
            })
            .collect::<Vec<_>>();
        Ok(fcos_loss(&output, &assigned, config.focal_alpha, config.focal_gamma).map(|l| l.total))
    }
}
