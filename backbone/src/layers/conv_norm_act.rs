//! Convolution + batch norm + activation (+ anti-aliasing), timm's `ConvNormAct`.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::batch_norm::RunningStats;
use super::{
    BatchNormStats, BatchNormTrain, BlurPool, LayerWeights, NormMode, apply_activation, conv2d,
};
use crate::cpu_kernels::{PreparedKernel, Products, WinogradKernel};
use crate::error::Result;
use crate::layers::compute::{add_relu, conv2d_bias_act_add_relu_with, conv2d_bias_act_with};
use crate::layout::{Activation, ConvNormActSpec};

/// How the batch norm is applied.
#[derive(Debug, Clone)]
enum Norm {
    /// Folded into the convolution: `W' = W · scale[o]`, plus this bias `(1, O, 1, 1)`.
    Folded { bias: Tensor },
    /// Applied after the convolution as `y · scale + shift`, both `(1, O, 1, 1)`.
    Separate { scale: Tensor, shift: Tensor },
    /// Training mode: batch statistics.
    Train(Arc<BatchNormTrain>),
}

/// A stride-1 convolution without bias, its batch norm (folded or separate), an activation and an
/// optional stride-2 blur: `(N, I, H, W)` → `(N, O, H, W)`, or `(N, O, ⌈H/2⌉, ⌈W/2⌉)` with the blur.
#[derive(Debug, Clone)]
pub struct ConvNormAct {
    /// `(O, I, k, k)`; BN-scaled when folded.
    weight: Tensor,
    norm: Norm,
    padding: usize,
    activation: Activation,
    blur: Option<BlurPool>,
    /// The folded weights prepared for the CPU's products: packed for bf16 ones when the
    /// network multiplies in bf16, a Winograd kernel for 3×3 ones in f32 on AVX-512 CPUs.
    prepared: Option<Arc<PreparedKernel>>,
    /// How a training-mode convolution multiplies (bf16 under CPU mixed precision).
    products: Products,
}

impl ConvNormAct {
    /// Builds the unit described by `spec` from `{prefix}.conv.weight` and `{prefix}.bn.*`.
    pub fn load(spec: &ConvNormActSpec, weights: &LayerWeights<'_>) -> Result<Self> {
        let conv_key = format!("{}.conv.weight", spec.prefix);
        let bn = format!("{}.bn", spec.prefix);
        let (weight, norm) = match weights.norm {
            NormMode::Train { momentum, registry } => {
                let running = RunningStats {
                    mean: weights.place(
                        &weights
                            .state
                            .require(&format!("{bn}.running_mean"))?
                            .copy()?,
                    )?,
                    var: weights.place(
                        &weights
                            .state
                            .require(&format!("{bn}.running_var"))?
                            .copy()?,
                    )?,
                    batches: match weights.state.get(&format!("{bn}.num_batches_tracked")) {
                        Some(t) => t
                            .to_dtype(DType::I64)?
                            .flatten_all()?
                            .to_vec1::<i64>()?
                            .first()
                            .copied()
                            .unwrap_or(0),
                        None => 0,
                    },
                };
                let layer = Arc::new(BatchNormTrain::new(
                    weights.tensor(&format!("{bn}.weight"))?,
                    weights.tensor(&format!("{bn}.bias"))?,
                    running,
                    momentum,
                ));
                registry
                    .lock()
                    .expect("batch-norm registry lock")
                    .push((bn.clone(), Arc::clone(&layer)));
                (weights.tensor(&conv_key)?, Norm::Train(layer))
            }
            NormMode::Fold | NormMode::Separate => {
                let stats = BatchNormStats::from_state_dict(weights.state, &bn)?;
                let (scale, shift) = stats.scale_shift();
                let out = spec.out_channels;
                let per_channel = |v: Vec<f64>| -> Result<Tensor> {
                    weights.place(&Tensor::from_vec(v, (1, out, 1, 1), &Device::Cpu)?)
                };
                let raw = weights.state.require(&conv_key)?;
                if matches!(weights.norm, NormMode::Fold) {
                    let scale = Tensor::from_vec(scale, (out, 1, 1, 1), &Device::Cpu)?;
                    let folded = raw
                        .to_device(&Device::Cpu)?
                        .to_dtype(DType::F64)?
                        .broadcast_mul(&scale)?;
                    (
                        weights.place(&folded)?,
                        Norm::Folded {
                            bias: per_channel(shift)?,
                        },
                    )
                } else {
                    (
                        weights.place(raw)?,
                        Norm::Separate {
                            scale: per_channel(scale)?,
                            shift: per_channel(shift)?,
                        },
                    )
                }
            }
        };
        let blur = spec.anti_alias.then_some(BlurPool);
        let prepared = match (&norm, weights.products) {
            (Norm::Folded { .. }, Products::Bf16) if weight.device().is_cpu() => {
                let (o, i, kh, _) = weight.dims4()?;
                let data = weight
                    .flatten_all()?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?;
                Some(Arc::new(PreparedKernel::bf16_for_inference(
                    &data, o, i, kh,
                )))
            }
            (Norm::Folded { .. }, Products::F32)
                if weight.device().is_cpu()
                    && spec.kernel_size == 3
                    && crate::cpu_kernels::winograd_available() =>
            {
                Some(Arc::new(
                    PreparedKernel::Winograd(WinogradKernel::default()),
                ))
            }
            _ => None,
        };
        Ok(Self {
            weight,
            norm,
            padding: spec.kernel_size / 2,
            activation: spec.activation,
            blur,
            prepared,
            products: weights.products,
        })
    }

    /// `relu(self.forward(x) + residual)`, a residual block's last unit with the shortcut's add
    /// and ReLU: fused into the convolution where its norm is folded and it has no blur (on AMX
    /// tiles inside the products' epilogue), else in two steps.
    pub fn forward_add_relu(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if let (Norm::Folded { bias }, None) = (&self.norm, &self.blur) {
            let weight = self.weight.to_dtype(x.dtype())?;
            return conv2d_bias_act_add_relu_with(
                x,
                &weight,
                bias,
                self.padding,
                self.activation,
                self.prepared.as_ref(),
                residual,
            );
        }
        add_relu(&self.forward(x)?, residual)
    }

    /// Applies the unit to `(N, I, H, W)`.
    ///
    /// The weights are cast to `x`'s dtype first (a no-op unless a mixed-precision training net
    /// keeps f32 weights under f16/bf16 activations).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let weight = self.weight.to_dtype(x.dtype())?;
        let y = match &self.norm {
            Norm::Folded { bias } => conv2d_bias_act_with(
                x,
                &weight,
                bias,
                self.padding,
                self.activation,
                self.prepared.as_ref(),
            )?,
            Norm::Separate { scale, shift } => {
                let y = conv2d(x, &weight, self.padding, 1)?;
                apply_activation(
                    &y.broadcast_mul(scale)?.broadcast_add(shift)?,
                    self.activation,
                )?
            }
            Norm::Train(bn) => {
                bn.conv_forward_act(x, &weight, self.padding, self.activation, self.products)?
            }
        };
        match &self.blur {
            Some(blur) => blur.forward(&y),
            None => Ok(y),
        }
    }
}
