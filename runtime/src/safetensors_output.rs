//! Writing named tensors to a safetensors file atomically, with string metadata.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use safetensors::tensor::{Dtype, TensorView};

/// Writes `tensors` (any device; stored as they are, f32/f16/bf16/i64/u8) and `metadata` to `path`
/// with [`tresnet_io::atomic_write`] (exclusive temporary file, synced, renamed into place).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let tensor = tensor.to_device(&candle_core::Device::Cpu)?.contiguous()?;
        let dtype = match tensor.dtype() {
            DType::F32 => Dtype::F32,
            DType::F16 => Dtype::F16,
            DType::BF16 => Dtype::BF16,
            DType::F64 => Dtype::F64,
            DType::I64 => Dtype::I64,
            DType::U8 => Dtype::U8,
            other => anyhow::bail!("{name}: cannot store dtype {other:?}"),
        };
        let bytes = tensor_bytes(&tensor)?;
        buffers.push((name.clone(), dtype, tensor.dims().to_vec(), bytes));
    }
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            Ok((name.clone(), TensorView::new(*dtype, shape.clone(), bytes)?))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(metadata))
        .with_context(|| format!("serialising {}", path.display()))?;
    tresnet_io::atomic_write(path, tresnet_io::Durability::Durable, |w| {
        std::io::Write::write_all(w, &bytes)
    })
    .with_context(|| format!("writing {}", path.display()))
}

fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => flat
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F64 => flat
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F16 => flat
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::BF16 => flat
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::I64 => flat
            .to_vec1::<i64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::U8 => flat.to_vec1::<u8>()?,
        other => anyhow::bail!("cannot store dtype {other:?}"),
    })
}
