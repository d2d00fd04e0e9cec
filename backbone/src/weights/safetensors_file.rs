//! Reading `.safetensors` files through a memory map.

use std::path::Path;

use candle_core::Device;
use candle_core::safetensors::MmapedSafetensors;

use super::StateDict;
use crate::error::{Error, Result};

/// The first bytes of a safetensors file: an 8-byte little-endian header length and then `{`.
pub fn looks_like_safetensors(head: &[u8]) -> bool {
    head.len() >= 9 && head[8] == b'{'
}

/// Reads every tensor of a safetensors file onto the CPU, keeping each tensor's stored dtype.
///
/// The file is memory-mapped, so only the bytes of the tensors read are paged in.
pub fn read_safetensors(path: &Path) -> Result<StateDict> {
    std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and dropped before this function returns; a concurrent writer
    // truncating the file is the one hazard, as for every memory-mapped reader.
    #[allow(unsafe_code)]
    let file = unsafe { MmapedSafetensors::new(path) }
        .map_err(|e| Error::checkpoint(path, format!("not a readable safetensors file: {e}")))?;
    let mut state = StateDict::new();
    for (name, _) in file.tensors() {
        let tensor = file
            .load(&name, &Device::Cpu)
            .map_err(|e| Error::checkpoint(path, format!("tensor `{name}`: {e}")))?;
        state.insert(name, tensor);
    }
    Ok(state)
}
