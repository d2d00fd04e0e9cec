//! Batch norm: the statistics and their inference-time affine form, and the training-mode layer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};

use super::apply_activation;
use super::compute::{epilogue, fast_conv};
use super::conv2d;
use crate::cpu_kernels::Products;
use crate::error::{Error, Result};
use crate::layout::Activation;
use crate::ops::{BnActOp, ConvBnActOp};
use crate::weights::StateDict;

/// Batch-norm epsilon (timm `BatchNormAct2d` and InPlaceABN both use 1e-5).
pub const BATCH_NORM_EPS: f64 = 1e-5;

/// The four per-channel tensors of a batch norm, in f64 for exact folding.
#[derive(Debug, Clone)]
pub struct BatchNormStats {
    /// γ.
    pub weight: Vec<f64>,
    /// β.
    pub bias: Vec<f64>,
    /// Running mean.
    pub running_mean: Vec<f64>,
    /// Running variance.
    pub running_var: Vec<f64>,
}

impl BatchNormStats {
    /// Reads `{prefix}.weight`, `.bias`, `.running_mean`, `.running_var`.
    pub fn from_state_dict(state: &StateDict, prefix: &str) -> Result<Self> {
        let read = |name: &str| -> Result<Vec<f64>> {
            Ok(state
                .vec_f32(&format!("{prefix}.{name}"))?
                .into_iter()
                .map(f64::from)
                .collect())
        };
        let stats = Self {
            weight: read("weight")?,
            bias: read("bias")?,
            running_mean: read("running_mean")?,
            running_var: read("running_var")?,
        };
        if let Some(v) = stats.running_var.iter().find(|v| v.is_nan() || **v < 0.0) {
            return Err(Error::Config(format!(
                "{prefix}.running_var holds {v}; a variance must be a non-negative number"
            )));
        }
        Ok(stats)
    }

    /// Per-channel `(scale, shift)` with `bn(x) = scale · x + shift` at inference:
    /// `scale = γ / √(var + eps)`, `shift = β − mean · scale`.
    pub fn scale_shift(&self) -> (Vec<f64>, Vec<f64>) {
        let scale: Vec<f64> = self
            .weight
            .iter()
            .zip(&self.running_var)
            .map(|(g, v)| g / (v + BATCH_NORM_EPS).sqrt())
            .collect();
        let shift = self
            .bias
            .iter()
            .zip(&self.running_mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        (scale, shift)
    }
}

/// Running statistics of a training batch norm.
#[derive(Debug, Clone)]
pub struct RunningStats {
    /// `(C)` running mean.
    pub mean: Tensor,
    /// `(C)` running (unbiased) variance.
    pub var: Tensor,
    /// Batches seen (`num_batches_tracked`).
    pub batches: i64,
}

/// A batch norm in training mode: normalises with the batch's statistics (biased variance over
/// N·H·W) and updates the running ones (unbiased variance), as PyTorch's `BatchNorm2d.train()`.
/// When frozen it normalises with the running statistics and leaves them unchanged.
#[derive(Debug)]
pub struct BatchNormTrain {
    /// `(C)` γ (a variable).
    pub weight: Tensor,
    /// `(C)` β (a variable).
    pub bias: Tensor,
    momentum: f64,
    running: Mutex<RunningStats>,
    frozen: AtomicBool,
}

impl BatchNormTrain {
    /// A training batch norm over `weight`/`bias` variables and initial running statistics.
    pub fn new(weight: Tensor, bias: Tensor, running: RunningStats, momentum: f64) -> Self {
        Self {
            weight,
            bias,
            momentum,
            running: Mutex::new(running),
            frozen: AtomicBool::new(false),
        }
    }

    /// Use the running statistics (and stop updating them) while frozen.
    pub fn set_frozen(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::Relaxed);
    }

    /// Whether the layer is frozen.
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::Relaxed)
    }

    /// A copy of the running statistics.
    pub fn running(&self) -> RunningStats {
        self.running
            .lock()
            .expect("batch-norm statistics lock")
            .clone()
    }

    /// Puts back statistics saved with [`Self::running`] (undoing the updates of batches that
    /// turned out to be unusable, e.g. a non-finite loss).
    pub fn restore_running(&self, saved: RunningStats) {
        *self.running.lock().expect("batch-norm statistics lock") = saved;
    }

    /// `activation(batch_norm(x))` on `(N, C, H, W)`; on the CPU in f32 one fused kernel (with a
    /// fused gradient) does both.
    pub fn forward_act(&self, x: &Tensor, activation: Activation) -> Result<Tensor> {
        let fused =
            x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 4 && !self.is_frozen();
        if !fused {
            return apply_activation(&self.forward(x)?, activation);
        }
        let stats = Arc::new(Mutex::new(None));
        let op = BnActOp {
            act: epilogue(activation),
            eps: BATCH_NORM_EPS as f32,
            stats: Arc::clone(&stats),
        };
        let y = x.contiguous()?.apply_op3(&self.weight, &self.bias, op)?;
        let (mean, var) = stats
            .lock()
            .map_err(|_| Error::Config("batch-norm statistics lock".into()))?
            .clone()
            .ok_or_else(|| Error::Config("batch-norm kernel left no statistics".into()))?;
        let (n, _, h, w) = x.dims4()?;
        self.update_running(
            &Tensor::new(mean, x.device())?,
            &Tensor::new(var, x.device())?,
            n * h * w,
        )?;
        Ok(y)
    }

    /// `activation(batch_norm(conv(x, kernel)))` (stride 1, "same" padding): `(N, I, H, W)` ×
    /// `(O, I, k, k)` → `(N, O, H, W)`. On the CPU in f32 one fused operation does all three, with
    /// one fused gradient, the convolution and its input gradient multiplying as `products` asks
    /// ([`Products::Bf16`] only on CPUs with AVX-512 BF16); elsewhere (and when frozen) it is
    /// [`conv2d`] then [`Self::forward_act`].
    pub fn conv_forward_act(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        padding: usize,
        activation: Activation,
        products: Products,
    ) -> Result<Tensor> {
        if !fast_conv(x, kernel, padding, 1) || self.is_frozen() {
            return self.forward_act(&conv2d(x, kernel, padding, 1)?, activation);
        }
        let saved = Arc::new(Mutex::new(None));
        let op = ConvBnActOp {
            act: epilogue(activation),
            eps: BATCH_NORM_EPS as f32,
            products,
            saved: Arc::clone(&saved),
        };
        let affine = Tensor::cat(&[&self.weight, &self.bias], 0)?;
        let y = x
            .contiguous()?
            .apply_op3(&kernel.contiguous()?, &affine, op)?;
        let stats = saved
            .lock()
            .map_err(|_| Error::Config("conv-bn-act saved state lock".into()))?
            .clone()
            .ok_or_else(|| Error::Config("conv-bn-act kernel left no statistics".into()))?;
        let (n, _, h, w) = x.dims4()?;
        self.update_running(
            &Tensor::new(stats.mean.as_slice(), x.device())?,
            &Tensor::new(stats.var.as_slice(), x.device())?,
            n * h * w,
        )?;
        Ok(y)
    }

    /// `running = (1 − m)·running + m·batch` (unbiased variance), `batches += 1`.
    fn update_running(&self, batch_mean: &Tensor, batch_var: &Tensor, count: usize) -> Result<()> {
        let m = self.momentum;
        let unbiased = if count > 1 {
            count as f64 / (count - 1) as f64
        } else {
            1.0
        };
        let mut running = self.running.lock().expect("batch-norm statistics lock");
        let batch_mean = batch_mean
            .detach()
            .flatten_all()?
            .to_dtype(running.mean.dtype())?;
        let batch_var =
            (batch_var.detach().flatten_all()? * unbiased)?.to_dtype(running.var.dtype())?;
        running.mean = ((&running.mean * (1.0 - m))? + (batch_mean * m)?)?;
        running.var = ((&running.var * (1.0 - m))? + (batch_var * m)?)?;
        running.batches += 1;
        Ok(())
    }

    /// Normalises `(N, C, H, W)`. Half-precision inputs (f16/bf16) are normalised in f32 (the
    /// statistics and γ/β stay f32 under mixed precision) and come back in their own dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if matches!(x.dtype(), DType::F16 | DType::BF16) {
            return Ok(self
                .forward(&x.to_dtype(DType::F32)?)?
                .to_dtype(x.dtype())?);
        }
        let c = x.dims()[1];
        let per_channel = |t: &Tensor| t.reshape((1, c, 1, 1));
        let (mean, var) = if self.is_frozen() {
            let r = self.running();
            (per_channel(&r.mean)?, per_channel(&r.var)?)
        } else {
            let (n, _, h, w) = x.dims4()?;
            let count = n * h * w;
            let mean = x.mean_keepdim(3)?.mean_keepdim(2)?.mean_keepdim(0)?;
            let centred = x.broadcast_sub(&mean)?;
            let var = centred
                .sqr()?
                .mean_keepdim(3)?
                .mean_keepdim(2)?
                .mean_keepdim(0)?;
            let m = self.momentum;
            let mut running = self.running.lock().expect("batch-norm statistics lock");
            let unbiased = if count > 1 {
                count as f64 / (count - 1) as f64
            } else {
                1.0
            };
            let batch_mean = mean
                .detach()
                .flatten_all()?
                .to_dtype(running.mean.dtype())?;
            let batch_var =
                (var.detach().flatten_all()? * unbiased)?.to_dtype(running.var.dtype())?;
            running.mean = ((&running.mean * (1.0 - m))? + (batch_mean * m)?)?;
            running.var = ((&running.var * (1.0 - m))? + (batch_var * m)?)?;
            running.batches += 1;
            (mean, var)
        };
        let inv_std = (var + BATCH_NORM_EPS)?.sqrt()?.recip()?;
        let dtype = x.dtype();
        let scale = inv_std.broadcast_mul(&per_channel(&self.weight.to_dtype(dtype)?)?)?;
        Ok(x.broadcast_sub(&mean.to_dtype(dtype)?)?
            .broadcast_mul(&scale)?
            .broadcast_add(&per_channel(&self.bias.to_dtype(dtype)?)?)?)
    }

    /// Running statistics as state-dict tensors: `(running_mean, running_var, num_batches_tracked)`.
    pub fn state_tensors(&self) -> Result<(Tensor, Tensor, Tensor)> {
        let r = self.running();
        let batches = Tensor::new(r.batches, r.mean.device())?.to_dtype(DType::I64)?;
        Ok((r.mean, r.var, batches))
    }
}
