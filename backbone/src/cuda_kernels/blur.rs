//! Launchers of the blur kernels in `blur.cu`: one kernel per direction, any of f32 / f16 / bf16.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CudaDevice, CudaStorage, Layout};

use super::{MODULE, PTX};

/// Blurs and subsamples contiguous planes: `x (P, H, W)` (P = batch · channels, H, W ≥ 2) →
/// `(P, OH, OW)` in `x`'s dtype (f32, f16 or bf16; arithmetic in f32); the caller gives the
/// blurred sides `(OH, OW)` (⌈H/2⌉, ⌈W/2⌉).
pub fn blur_forward(
    x: &CudaStorage,
    layout: &Layout,
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> candle_core::Result<CudaStorage> {
    let out_len = planes * oh * ow;
    launch_typed(
        x,
        layout,
        "blur_forward",
        planes * h * w,
        out_len,
        planes,
        h,
        w,
    )
}

/// The gradient of [`blur_forward`]: `grad_out (P, OH, OW)` → `(P, H, W)`.
pub fn blur_backward(
    grad_out: &CudaStorage,
    layout: &Layout,
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> candle_core::Result<CudaStorage> {
    let in_len = planes * oh * ow;
    launch_typed(
        grad_out,
        layout,
        "blur_backward",
        in_len,
        planes * h * w,
        planes,
        h,
        w,
    )
}

/// Checks the operand (contiguous, `in_len` elements) and runs `{kernel}_{dtype}` on it.
#[allow(clippy::too_many_arguments)]
fn launch_typed(
    input: &CudaStorage,
    layout: &Layout,
    kernel: &str,
    in_len: usize,
    out_len: usize,
    planes: usize,
    h: usize,
    w: usize,
) -> candle_core::Result<CudaStorage> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{kernel}: the input must be contiguous");
    };
    if end - start != in_len {
        candle_core::bail!(
            "{kernel}: {} input elements for {planes} planes of {h}×{w}",
            end - start
        );
    }
    if h < 2 || w < 2 || h > i32::MAX as usize || w > i32::MAX as usize {
        candle_core::bail!("{kernel}: a {h}×{w} plane cannot be blurred (sides 2 to 2³¹)");
    }
    let planes = u32::try_from(planes)
        .map_err(|_| candle_core::Error::Msg(format!("{kernel}: {planes} planes is too many")))?;
    let shape = Shape {
        planes,
        h: h as i32,
        w: w as i32,
        out_len,
    };
    let device = &input.device;
    let slice = match &input.slice {
        CudaStorageSlice::F32(s) => CudaStorageSlice::F32(launch(
            device,
            s,
            start..end,
            &format!("{kernel}_f32"),
            shape,
        )?),
        CudaStorageSlice::F16(s) => CudaStorageSlice::F16(launch(
            device,
            s,
            start..end,
            &format!("{kernel}_f16"),
            shape,
        )?),
        CudaStorageSlice::BF16(s) => CudaStorageSlice::BF16(launch(
            device,
            s,
            start..end,
            &format!("{kernel}_bf16"),
            shape,
        )?),
        _ => candle_core::bail!(
            "{kernel}: {:?} tensors are not supported (f32, f16 or bf16)",
            input.dtype()
        ),
    };
    Ok(CudaStorage {
        slice,
        device: device.clone(),
    })
}

/// Kernel arguments besides the two buffers.
#[derive(Clone, Copy)]
struct Shape {
    planes: u32,
    h: i32,
    w: i32,
    /// Elements the kernel writes (one thread each).
    out_len: usize,
}

/// 256 threads per block, one thread per output element.
fn config(threads: u32) -> LaunchConfig {
    const BLOCK: u32 = 256;
    LaunchConfig {
        grid_dim: (threads.div_ceil(BLOCK), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn launch<T: DeviceRepr + ValidAsZeroBits>(
    device: &CudaDevice,
    input: &CudaSlice<T>,
    range: std::ops::Range<usize>,
    kernel: &str,
    shape: Shape,
) -> candle_core::Result<CudaSlice<T>> {
    if shape.out_len == 0 {
        return device.alloc_zeros::<T>(0);
    }
    let threads = u32::try_from(shape.out_len).map_err(|_| {
        candle_core::Error::Msg(format!("{kernel}: {} outputs is too many", shape.out_len))
    })?;
    let func = device.get_or_load_custom_func(kernel, MODULE, PTX)?;
    // SAFETY: every element of `out` is written by the kernel before anyone reads it.
    #[allow(unsafe_code)]
    let out = unsafe { device.alloc::<T>(shape.out_len)? };
    let input = input.slice(range);
    let mut args = func.builder();
    args.arg(&input)
        .arg(&out)
        .arg(&shape.planes)
        .arg(&shape.h)
        .arg(&shape.w);
    // SAFETY: the argument list matches the kernel's signature `(const T*, T*, unsigned, int,
    // int)`; `input` holds planes·h·w (forward) or planes·⌈h/2⌉·⌈w/2⌉ (backward) elements and
    // `out` the `out_len` the kernel writes, checked by `launch_typed`.
    #[allow(unsafe_code)]
    unsafe { args.launch(config(threads)) }.w()?;
    Ok(out)
}
