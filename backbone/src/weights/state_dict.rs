//! [`StateDict`]: named CPU tensors, the common currency of every weight format.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Named tensors on the CPU in the dtype they were stored in, keyed by timm's names once a
/// checkpoint has been translated.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    tensors: BTreeMap<String, Tensor>,
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a tensor.
    pub fn insert(&mut self, key: impl Into<String>, tensor: Tensor) {
        self.tensors.insert(key.into(), tensor);
    }

    /// The tensor stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.tensors.get(key)
    }

    /// Removes and returns the tensor stored under `key`.
    pub fn remove(&mut self, key: &str) -> Option<Tensor> {
        self.tensors.remove(key)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// Keys in sorted order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// `(key, tensor)` pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Moves out every tensor whose key starts with `prefix`, with the prefix removed.
    pub fn take_prefix(&mut self, prefix: &str) -> StateDict {
        let keys: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        let mut taken = StateDict::new();
        for key in keys {
            if let Some(t) = self.tensors.remove(&key) {
                taken.insert(&key[prefix.len()..], t);
            }
        }
        taken
    }

    /// A tensor as an f32 vector of its elements (row-major), for the small per-channel tensors.
    pub fn vec_f32(&self, key: &str) -> Result<Vec<f32>> {
        let t = self.require(key)?;
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// The tensor under `key`, or an error naming it.
    pub fn require(&self, key: &str) -> Result<&Tensor> {
        self.get(key)
            .ok_or_else(|| Error::Config(format!("state dict has no tensor `{key}`")))
    }

    /// Writes the tensors to a safetensors file, atomically and durably
    /// ([`tresnet_io::atomic_write`]: an exclusive temporary file, synced, renamed over `path`).
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let map: HashMap<&str, Tensor> = self
            .tensors
            .iter()
            .map(|(k, v)| Ok((k.as_str(), v.to_device(&Device::Cpu)?.contiguous()?)))
            .collect::<Result<_>>()?;
        let bytes = safetensors::serialize(&map, None)
            .map_err(|e| Error::checkpoint(path, format!("cannot write safetensors: {e}")))?;
        tresnet_io::atomic_write(path, tresnet_io::Durability::Durable, |w| {
            w.write_all(&bytes)
        })
        .map_err(|e| Error::io(path, e))
    }
}

impl FromIterator<(String, Tensor)> for StateDict {
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(iter: I) -> Self {
        Self {
            tensors: iter.into_iter().collect(),
        }
    }
}

impl IntoIterator for StateDict {
    type Item = (String, Tensor);
    type IntoIter = std::collections::btree_map::IntoIter<String, Tensor>;
    fn into_iter(self) -> Self::IntoIter {
        self.tensors.into_iter()
    }
}
