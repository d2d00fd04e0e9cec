//! SGD's update for f32 parameters on the CPU as candle in-place operations: two passes over each
//! parameter instead of five single-threaded candle operations and a copy back into the variable
//! (a TResNet-M has 31 M parameters: the candle chain cost about a tenth of a training step).

use candle_core::{CpuStorage, DType, InplaceOp3, Layout, Tensor};

pub use crate::cpu_kernels::SgdSettings;
use crate::cpu_kernels::{momentum_update, param_update};

/// Whether [`sgd_step_in_place`] handles these tensors (CPU, f32, contiguous, one shape).
pub fn sgd_applies(tensors: &[&Tensor]) -> bool {
    let shape = tensors[0].shape();
    tensors.iter().all(|t| {
        t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous() && t.shape() == shape
    })
}

/// `buf ← μ·buf + g′` and `p ← p − lr·d` with `g′ = g + wd·p` and `d = g′ + μ·buf` (Nesterov) or
/// `buf`; `buf` must be the optimiser's own tensor (zeros before the first step) and, like `p`,
/// share its storage with nothing that expects it unchanged. All three `(shape of p)`.
pub fn sgd_step_in_place(
    param: &Tensor,
    grad: &Tensor,
    buf: &Tensor,
    settings: SgdSettings,
) -> candle_core::Result<()> {
    buf.inplace_op3(grad, param, &MomentumUpdate(settings))?;
    param.inplace_op3(buf, grad, &ParamUpdate(settings))
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("sgd: a tensor is not contiguous".into()))?;
    Ok(&data[a..b])
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("sgd: a tensor is not contiguous".into()))?;
    match s {
        CpuStorage::F32(data) => Ok(&mut data[a..b]),
        _ => candle_core::bail!("sgd: expected f32 storage"),
    }
}

/// `(buf, grad, param)`: the momentum buffer's update.
struct MomentumUpdate(SgdSettings);

impl InplaceOp3 for MomentumUpdate {
    fn name(&self) -> &'static str {
        "tresnet-sgd-momentum"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let (g, p) = (slice(s2, l2)?, slice(s3, l3)?);
        momentum_update(slice_mut(s1, l1)?, g, p, self.0);
        Ok(())
    }
}

/// `(param, buf, grad)`: the parameter's update from the updated buffer.
struct ParamUpdate(SgdSettings);

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "tresnet-sgd-param"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let (b, g) = (slice(s2, l2)?, slice(s3, l3)?);
        param_update(slice_mut(s1, l1)?, b, g, self.0);
        Ok(())
    }
}
