//! Reading one weights file of any supported format into a timm-named [`StateDict`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::StateDict;
use super::official_naming::{Naming, detect_naming, translate_official};
use super::pth::{StoredZip, read_pth};
use super::safetensors_file::{looks_like_safetensors, read_safetensors};
use crate::error::{Error, Result};

/// The container format of a weights file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    /// `.safetensors`.
    Safetensors,
    /// A `torch.save` zip (`.pth`, `.pt`, `.bin`, `.ckpt`).
    PytorchZip,
}

/// A weights file read and translated to timm's names.
#[derive(Debug)]
pub struct LoadedWeights {
    /// The file read.
    pub path: PathBuf,
    /// Its container format.
    pub format: WeightsFormat,
    /// The naming the file used (the state dict below is always in timm's).
    pub source_naming: Naming,
    /// The tensors under timm's names, InPlaceABN gammas converted.
    pub state_dict: StateDict,
    /// Plain values stored beside the state dict in `.pth` files (e.g. ASL's `num_classes`,
    /// `idx_to_class`).
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// Reads a weights file, detecting its format from its first bytes and its naming from its keys.
///
/// `module.` prefixes (left by `DataParallel`) are removed; official MIIL names are translated
/// (see [`super::official_naming`]).
pub fn read_weights_file(path: &Path) -> Result<LoadedWeights> {
    let mut head = [0u8; 16];
    let read = tresnet_io::open_regular(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| Error::io(path, e))?;
    let head = &head[..read];
    let (format, mut state_dict, metadata) = if StoredZip::has_zip_magic(head) {
        let pth = read_pth(path)?;
        (WeightsFormat::PytorchZip, pth.state_dict, pth.metadata)
    } else if looks_like_safetensors(head) {
        (
            WeightsFormat::Safetensors,
            read_safetensors(path)?,
            BTreeMap::new(),
        )
    } else if head.starts_with(&[0x80]) {
        return Err(Error::checkpoint(
            path,
            "this is a legacy (pre-1.6) PyTorch pickle, not a zip checkpoint; re-save it with \
             `torch.save(torch.load(path), new_path)` in PyTorch >= 1.6, or convert it to \
             safetensors",
        ));
    } else {
        return Err(Error::checkpoint(
            path,
            format!(
                "neither a safetensors file nor a PyTorch zip checkpoint (first bytes {:02x?})",
                &head[..head.len().min(8)]
            ),
        ));
    };
    if state_dict.is_empty() {
        return Err(Error::checkpoint(path, "the file holds no tensors"));
    }
    if state_dict.keys().all(|k| k.starts_with("module.")) {
        state_dict = state_dict.take_prefix("module.");
    }
    let source_naming =
        detect_naming(state_dict.keys()).map_err(|e| Error::checkpoint(path, e.to_string()))?;
    if source_naming == Naming::Official {
        state_dict =
            translate_official(state_dict).map_err(|e| Error::checkpoint(path, e.to_string()))?;
    }
    Ok(LoadedWeights {
        path: path.to_path_buf(),
        format,
        source_naming,
        state_dict,
        metadata,
    })
}
