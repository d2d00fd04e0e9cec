//! Strict loading: a state dict must hold exactly the tensors the architecture needs.

use std::collections::HashSet;
use std::fmt;

use super::StateDict;
use crate::manifest::{EntryKind, Manifest};

/// Every way a state dict differs from an architecture's manifest, by tensor name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDictMismatch {
    /// Tensors the architecture needs that the state dict lacks, with the expected shape.
    pub missing: Vec<(String, Vec<usize>)>,
    /// Tensors the state dict has that the architecture does not use, with their shape.
    pub unexpected: Vec<(String, Vec<usize>)>,
    /// Tensors present under the right name with the wrong shape: (name, expected, found).
    pub wrong_shape: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl StateDictMismatch {
    /// Whether the state dict matched.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }
}

impl fmt::Display for StateDictMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "state dict does not match the architecture: {} missing, {} unexpected, {} with the \
             wrong shape",
            self.missing.len(),
            self.unexpected.len(),
            self.wrong_shape.len()
        )?;
        for (key, shape) in &self.missing {
            write!(f, "\n  missing:     {key} {shape:?}")?;
        }
        for (key, shape) in &self.unexpected {
            write!(f, "\n  unexpected:  {key} {shape:?}")?;
        }
        for (key, want, got) in &self.wrong_shape {
            write!(f, "\n  wrong shape: {key} expected {want:?}, found {got:?}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StateDictMismatch {}

/// Compares a state dict with a manifest. `num_batches_tracked` counters may be absent (older
/// checkpoints lack them, and PyTorch accepts that too).
pub fn check_state_dict(manifest: &Manifest, state: &StateDict) -> Result<(), StateDictMismatch> {
    let mut mismatch = StateDictMismatch::default();
    for entry in &manifest.entries {
        match state.get(&entry.key) {
            None if entry.kind == EntryKind::BatchCounter => {}
            None => mismatch
                .missing
                .push((entry.key.clone(), entry.shape.clone())),
            Some(t) if entry.kind == EntryKind::BatchCounter && t.elem_count() == 1 => {}
            Some(t) if t.dims() != entry.shape.as_slice() => mismatch.wrong_shape.push((
                entry.key.clone(),
                entry.shape.clone(),
                t.dims().to_vec(),
            )),
            Some(_) => {}
        }
    }
    let known: HashSet<&str> = manifest.entries.iter().map(|e| e.key.as_str()).collect();
    for (key, tensor) in state.iter() {
        if !known.contains(key) {
            mismatch
                .unexpected
                .push((key.to_string(), tensor.dims().to_vec()));
        }
    }
    if mismatch.is_empty() {
        Ok(())
    } else {
        Err(mismatch)
    }
}
