//! The training-mode convolution + batch norm + activation as one candle operation.
//!
//! As separate operations, candle's backward pass materialises the gradient of the convolution's
//! output as its own tensor and accumulates it into a fresh zero tensor (one fill and one add over
//! the whole map, on one thread). One fused node hands the convolution's backward the batch norm's
//! input gradient directly: the map-sized work per layer drops from five passes to three.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::{f32_slice, geometry};
use crate::cpu_kernels::{
    ConvGeometry, Epilogue, PreparedKernel, Products, conv_backward_input, conv_backward_weight,
    conv_forward_new,
};
use crate::cpu_kernels::{bn_act_backward, bn_act_forward, channel_stats};
use crate::cpu_kernels::{zeroed, zeroed_with_spare};

/// What the forward pass keeps for the backward pass: the convolution's output (the batch norm's
/// input) and the batch statistics.
#[derive(Debug)]
pub(crate) struct ConvBnActSaved {
    /// `(N, O, H, W)` convolution output, flat.
    conv_out: Vec<f32>,
    /// `(O)` batch mean.
    pub mean: Vec<f32>,
    /// `(O)` biased batch variance.
    pub var: Vec<f32>,
}

/// Where a [`ConvBnActOp`]'s forward pass leaves what it saved.
pub(crate) type SharedConvBnAct = Arc<Mutex<Option<Arc<ConvBnActSaved>>>>;

/// `act(batch_norm(conv(x, w)))` with batch statistics, on `(x (N, I, H, W), w (O, I, k, k),
/// γ ‖ β (2·O))` → `(N, O, H, W)`; stride 1, "same" padding, k = 1 or 3. Differentiable in all
/// three arguments.
pub(crate) struct ConvBnActOp {
    /// Fused activation.
    pub act: Epilogue,
    /// Variance epsilon.
    pub eps: f32,
    /// How the convolution and both its gradients multiply (bf16 under CPU mixed precision;
    /// Winograd's products and the batch norm stay f32).
    pub products: Products,
    /// Filled by the forward pass; read by the backward pass and for the running statistics.
    pub saved: SharedConvBnAct,
}

fn invstd(var: &[f32], eps: f32) -> Vec<f32> {
    var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect()
}

fn lock_error() -> candle_core::Error {
    candle_core::Error::Msg("conv-bn-act saved state lock".into())
}

impl CustomOp3 for ConvBnActOp {
    fn name(&self) -> &'static str {
        "tresnet-conv-bn-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = geometry(l1, l2)?;
        let affine = f32_slice(s3, l3, "batch-norm gamma and beta")?;
        if affine.len() != 2 * g.out_channels {
            candle_core::bail!(
                "conv-bn-act: {} affine values for {} channels",
                affine.len(),
                g.out_channels
            );
        }
        let (gamma, beta) = affine.split_at(g.out_channels);
        let dims = (g.batch, g.out_channels, g.height * g.width);
        let w = f32_slice(s2, l2, "conv weight")?;
        let conv_out = conv_forward_new(
            f32_slice(s1, l1, "conv input")?,
            w,
            None,
            Epilogue::Identity,
            &g,
            Some(&PreparedKernel::per_call(w, &g, self.products)),
        );
        let (mean, var) = channel_stats(&conv_out, dims.0, dims.1, dims.2);
        let mut y = zeroed(conv_out.len());
        bn_act_forward(
            &conv_out,
            &mean,
            &invstd(&var, self.eps),
            gamma,
            beta,
            self.act,
            dims,
            &mut y,
        );
        *self.saved.lock().map_err(|_| lock_error())? = Some(Arc::new(ConvBnActSaved {
            conv_out,
            mean,
            var,
        }));
        Ok((
            CpuStorage::F32(y),
            Shape::from((g.batch, g.out_channels, g.height, g.width)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        affine: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self
            .saved
            .lock()
            .map_err(|_| lock_error())?
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("conv-bn-act backward before forward".into()))?;
        let op = ConvBnActGradOp {
            act: self.act,
            eps: self.eps,
            products: self.products,
            saved,
            affine: affine.flatten_all()?.to_vec1()?,
        };
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &op)?;
        let (nx, nw) = (x.elem_count(), w.elem_count());
        Ok((
            Some(packed.narrow(0, 0, nx)?.reshape(x.shape())?),
            Some(packed.narrow(0, nx, nw)?.reshape(w.shape())?),
            Some(packed.narrow(0, nx + nw, affine.elem_count())?),
        ))
    }
}

/// `(x, w, dy)` → `dx ‖ dw ‖ dγ ‖ dβ`.
struct ConvBnActGradOp {
    act: Epilogue,
    eps: f32,
    products: Products,
    saved: Arc<ConvBnActSaved>,
    /// γ ‖ β.
    affine: Vec<f32>,
}

impl CustomOp3 for ConvBnActGradOp {
    fn name(&self) -> &'static str {
        "tresnet-conv-bn-act-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g: ConvGeometry = geometry(l1, l2)?;
        let (x, w) = (
            f32_slice(s1, l1, "conv input")?,
            f32_slice(s2, l2, "conv weight")?,
        );
        let dy = f32_slice(s3, l3, "conv-bn-act gradient")?;
        let o = g.out_channels;
        let dims = (g.batch, o, g.height * g.width);
        let (gamma, beta) = self.affine.split_at(o);
        // dz ‖ dγ ‖ dβ, z being the convolution's output.
        let bn = bn_act_backward(
            &self.saved.conv_out,
            dy,
            &self.saved.mean,
            &invstd(&self.saved.var, self.eps),
            gamma,
            beta,
            self.act,
            dims,
        );
        let (dz, daffine) = bn.split_at(self.saved.conv_out.len());
        let mut packed = zeroed_with_spare(x.len() + w.len(), daffine.len());
        let (dx, dw) = packed.split_at_mut(x.len());
        conv_backward_input(dz, w, &g, self.products, dx);
        conv_backward_weight(x, dz, &g, self.products, dw);
        packed.extend_from_slice(daffine);
        let n = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(n)))
    }
}
