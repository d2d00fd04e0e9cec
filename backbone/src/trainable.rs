//! A TResNet for training: parameters are candle variables, batch norms use batch statistics and
//! update their running ones, gradients flow through every layer.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, Var};

use crate::build_options::BuildOptions;
use crate::config::TResNetConfig;
use crate::cpu_kernels::Products;
use crate::error::Result;
use crate::layers::{BatchNormTrain, LayerWeights, NormMode, RunningStats};
use crate::layout::Layout;
use crate::manifest::{EntryKind, Manifest};
use crate::model::TResNet;
use crate::stochastic_depth::StochasticDepth;
use crate::weights::{StateDict, check_state_dict};

/// PyTorch's batch-norm momentum (timm's default).
pub const BATCH_NORM_MOMENTUM: f64 = 0.1;

/// A trainable TResNet. Run it through [`TrainableTResNet::model`] (batch norms in training mode);
/// read its weights back with [`TrainableTResNet::state_dict`], which an inference
/// [`TResNet`] (with folding) loads.
pub struct TrainableTResNet {
    model: TResNet,
    params: Vec<(String, Var)>,
    batch_norms: Vec<(String, Arc<BatchNormTrain>)>,
}

impl TrainableTResNet {
    /// Variables initialised from `init` (timm names, strictly checked; copied, so `init` is never
    /// modified), in `dtype` on `device`; the network computes in `dtype` too.
    pub fn new(
        config: &TResNetConfig,
        init: &StateDict,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::build(config, init, dtype, None, Products::F32, device)
    }

    /// Mixed precision: f32 variables (and batch-norm statistics, computed in f32) under
    /// activations in `compute` (f16 or bf16). Each layer casts its weights to `compute` in the
    /// forward pass, so gradients come back to the f32 variables through the cast. Outputs are
    /// in `compute`; f16 training needs loss scaling against gradient underflow.
    ///
    /// bf16 on the CPU works as the CPU's bf16 inference does: activations stay f32 (every fast
    /// CPU kernel is an f32 one) and the convolutions and their input gradients multiply bf16
    /// operands with f32 sums where the CPU has AVX-512 BF16 ([`crate::native_cpu_bf16`]; the
    /// model then [`TResNet::multiplies_in_bf16`]), and so do the weight gradients; Winograd's
    /// f32 products where they apply, and batch norms in f32. A CPU without native bf16 trains in
    /// f32.
    /// Outputs are f32 there.
    pub fn mixed_precision(
        config: &TResNetConfig,
        init: &StateDict,
        compute: DType,
        device: &Device,
    ) -> Result<Self> {
        if !matches!(compute, DType::F16 | DType::BF16) {
            return Err(crate::error::Error::Config(format!(
                "mixed precision computes in f16 or bf16, not {compute:?}"
            )));
        }
        if device.is_cpu() && compute == DType::BF16 {
            let products = if crate::native_cpu_bf16() {
                Products::Bf16
            } else {
                Products::F32
            };
            return Self::build(config, init, DType::F32, None, products, device);
        }
        Self::build(
            config,
            init,
            DType::F32,
            Some(compute),
            Products::F32,
            device,
        )
    }

    fn build(
        config: &TResNetConfig,
        init: &StateDict,
        dtype: DType,
        compute_dtype: Option<DType>,
        products: Products,
        device: &Device,
    ) -> Result<Self> {
        let layout = Layout::new(config)?;
        let manifest = Manifest::of(&layout);
        check_state_dict(&manifest, init)?;
        let mut params = Vec::new();
        let mut tensors = StateDict::new();
        for entry in &manifest.entries {
            let Some(t) = init.get(&entry.key) else {
                continue;
            };
            match entry.kind {
                EntryKind::Parameter => {
                    let var = Var::from_tensor(&t.to_dtype(dtype)?.to_device(device)?.copy()?)?;
                    tensors.insert(entry.key.clone(), var.as_tensor().clone());
                    params.push((entry.key.clone(), var));
                }
                EntryKind::RunningStat => {
                    tensors.insert(
                        entry.key.clone(),
                        t.to_dtype(dtype)?.to_device(device)?.copy()?,
                    );
                }
                EntryKind::BatchCounter => {
                    tensors.insert(entry.key.clone(), t.clone());
                }
            }
        }
        let registry = Mutex::new(Vec::new());
        let weights = LayerWeights {
            state: &tensors,
            dtype,
            device,
            norm: NormMode::Train {
                momentum: BATCH_NORM_MOMENTUM,
                registry: &registry,
            },
            products,
        };
        let options = BuildOptions {
            dtype,
            device: device.clone(),
            fold_batch_norm: false,
            compute_dtype,
        };
        let mut model = TResNet::build_with(config.clone(), layout, &weights, &options)?;
        model.set_products(products);
        let batch_norms = registry.into_inner().expect("batch-norm registry lock");
        Ok(Self {
            model,
            params,
            batch_norms,
        })
    }

    /// The network in training mode.
    pub fn model(&self) -> &TResNet {
        &self.model
    }

    /// Every parameter with its timm name, in state-dict order.
    pub fn parameters(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Every batch norm with its prefix (`…bn`).
    pub fn batch_norms(&self) -> &[(String, Arc<BatchNormTrain>)] {
        &self.batch_norms
    }

    /// The running statistics of every batch norm, in [`Self::batch_norms`] order (cheap: the
    /// tensors are shared, not copied).
    pub fn running_statistics(&self) -> Vec<RunningStats> {
        self.batch_norms
            .iter()
            .map(|(_, bn)| bn.running())
            .collect()
    }

    /// Puts back statistics saved with [`Self::running_statistics`].
    pub fn restore_running_statistics(&self, saved: Vec<RunningStats>) {
        for ((_, bn), stats) in self.batch_norms.iter().zip(saved) {
            bn.restore_running(stats);
        }
    }

    /// Freezes (or unfreezes) the batch norms under any of `prefixes` (e.g. `body.conv1`,
    /// `body.layer1`): they normalise with their running statistics and stop updating them.
    /// Excluding the matching parameters from the optimiser is the caller's side.
    pub fn set_frozen(&self, prefixes: &[String], frozen: bool) {
        for (name, bn) in &self.batch_norms {
            if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                bn.set_frozen(frozen);
            }
        }
    }

    /// The current weights and running statistics as a CPU state dict (timm names).
    pub fn state_dict(&self) -> Result<StateDict> {
        let mut state = StateDict::new();
        for (name, var) in &self.params {
            state.insert(
                name.clone(),
                var.as_tensor().detach().to_device(&Device::Cpu)?.copy()?,
            );
        }
        for (prefix, bn) in &self.batch_norms {
            let (mean, var, count) = bn.state_tensors()?;
            state.insert(
                format!("{prefix}.running_mean"),
                mean.to_device(&Device::Cpu)?,
            );
            state.insert(
                format!("{prefix}.running_var"),
                var.to_device(&Device::Cpu)?,
            );
            state.insert(
                format!("{prefix}.num_batches_tracked"),
                count.to_device(&Device::Cpu)?,
            );
        }
        Ok(state)
    }

    /// Logits (or pooled features without a classifier) of a batch, in training mode.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        self.model.forward(images)
    }

    /// [`Self::forward`] with stochastic depth: `(N, 3, H, W)` → `(N, classes)`.
    pub fn forward_with(&self, images: &Tensor, depth: &StochasticDepth) -> Result<Tensor> {
        let out = self.model.forward_all_with(images, Some(depth))?;
        Ok(out.logits.unwrap_or(out.pre_logits))
    }
}
