//! PyTorch `.pth` / `.pt` / `.bin` checkpoints in the zip format `torch.save` writes.
//!
//! The pickle inside (`<archive>/data.pkl`) is decoded by this crate's bounded unpickler
//! ([`pickle`]); the tensors it references are read from `<archive>/data/<storage key>` through
//! [`StoredZip`]. The state dict is found whether it is the top-level object (a bare
//! `state_dict()`) or stored under a key such as `model` (the official TResNet/ASL/ML-Decoder
//! checkpoints) or `state_dict` (timm's training checkpoints).
//!
//! Every size, stride and offset the file declares goes through checked arithmetic; a tensor must
//! lie inside its storage, and the tensors together may not exceed
//! [`CheckpointLimits::max_tensor_bytes`].

mod pickle;
mod stored_zip;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

pub use pickle::PickleLimits;
use pickle::{Pickle, Value, ValueId, unpickle};
pub use stored_zip::StoredZip;

use super::StateDict;
use crate::error::{Error, Result};
use tresnet_io::env_limit;

/// Caps on what one checkpoint may make us allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointLimits {
    /// Caps on `data.pkl`.
    pub pickle: PickleLimits,
    /// Largest total of tensor bytes (elements × element size, summed over the state dict).
    pub max_tensor_bytes: u64,
    /// Largest number of dimensions of one tensor.
    pub max_dims: usize,
}

impl Default for CheckpointLimits {
    fn default() -> Self {
        Self {
            pickle: PickleLimits::default(),
            max_tensor_bytes: 16 << 30,
            max_dims: 16,
        }
    }
}

impl CheckpointLimits {
    /// The defaults, each replaced by its environment variable when set:
    /// `TRESNET_MAX_CHECKPOINT_BYTES`, `TRESNET_MAX_PICKLE_BYTES`, `TRESNET_MAX_PICKLE_OBJECTS`.
    pub fn from_env() -> Self {
        let d = Self::default();
        Self {
            pickle: PickleLimits {
                max_bytes: env_limit("TRESNET_MAX_PICKLE_BYTES", d.pickle.max_bytes as u64)
                    as usize,
                max_objects: env_limit("TRESNET_MAX_PICKLE_OBJECTS", d.pickle.max_objects as u64)
                    as usize,
            },
            max_tensor_bytes: env_limit("TRESNET_MAX_CHECKPOINT_BYTES", d.max_tensor_bytes),
            max_dims: d.max_dims,
        }
    }
}

/// Keys under which checkpoints keep their state dict, in the order they are tried.
const CONTAINER_KEYS: &[&str] = &["state_dict", "model", "model_state_dict", "net", "module"];

/// What a `.pth` file held.
#[derive(Debug)]
pub struct PthCheckpoint {
    /// The tensors, under the names the file uses.
    pub state_dict: StateDict,
    /// The top-level key holding the state dict (`model` for the official checkpoints), or `None`
    /// when the file is a bare state dict.
    pub container_key: Option<String>,
    /// Plain values stored beside the state dict (e.g. ASL's `num_classes` and `idx_to_class`).
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// Reads a PyTorch zip checkpoint within the limits [`CheckpointLimits::from_env`] gives.
pub fn read_pth(path: &Path) -> Result<PthCheckpoint> {
    read_pth_with(path, &CheckpointLimits::from_env())
}

/// Reads a PyTorch zip checkpoint within `limits`.
pub fn read_pth_with(path: &Path, limits: &CheckpointLimits) -> Result<PthCheckpoint> {
    let zip = StoredZip::open(path)?;
    let pickle_name = zip
        .names()
        .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| n.len())
        .map(str::to_string)
        .ok_or_else(|| {
            Error::checkpoint(
                path,
                "zip archive holds no `data.pkl`: not a torch.save checkpoint",
            )
        })?;
    let prefix = &pickle_name[..pickle_name.len() - "data.pkl".len()];
    if let Ok(order) = zip.member(&format!("{prefix}byteorder"))
        && order != b"little"
    {
        return Err(Error::checkpoint(
            path,
            format!(
                "tensors are stored {} endian; only little-endian checkpoints are supported",
                String::from_utf8_lossy(&order[..order.len().min(16)])
            ),
        ));
    }
    let pickle = unpickle(zip.member(&pickle_name)?, &limits.pickle)
        .map_err(|e| Error::checkpoint(path, format!("cannot unpickle {pickle_name}: {e}")))?;
    let mut storage = StorageReader {
        zip: &zip,
        pickle: &pickle,
        prefix,
        path,
        limits,
        total_bytes: 0,
    };
    let Value::Dict(top) = pickle.get(pickle.root()) else {
        return Err(Error::checkpoint(
            path,
            format!(
                "top-level object is {}, not a dict",
                describe(&pickle, pickle.root())
            ),
        ));
    };
    if top.iter().any(|&(_, v)| tensor_call(&pickle, v).is_some()) {
        let state_dict = storage.state_dict(top)?;
        return Ok(PthCheckpoint {
            state_dict,
            container_key: None,
            metadata: BTreeMap::new(),
        });
    }
    let named: Vec<(&str, ValueId)> = top
        .iter()
        .filter_map(|&(k, v)| pickle.str(k).map(|k| (k, v)))
        .collect();
    let holds_tensors = |v: ValueId| match pickle.get(v) {
        Value::Dict(d) => d.iter().any(|&(_, t)| tensor_call(&pickle, t).is_some()),
        _ => false,
    };
    let chosen = CONTAINER_KEYS.iter().find_map(|key| {
        named
            .iter()
            .position(|&(k, v)| k == *key && holds_tensors(v))
    });
    let Some(index) = chosen else {
        let keys: Vec<&str> = named.iter().map(|(k, _)| *k).take(32).collect();
        return Err(Error::checkpoint(
            path,
            format!(
                "no state dict found: the top-level dict has keys {keys:?} and none of {:?} holds \
                 tensors",
                CONTAINER_KEYS
            ),
        ));
    };
    let (key, value) = named[index];
    let Value::Dict(entries) = pickle.get(value) else {
        unreachable!("chosen container is a dict")
    };
    let state_dict = storage.state_dict(entries)?;
    let mut budget = PLAIN_VALUE_NODES;
    let metadata = named
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != index)
        .filter_map(|(_, &(k, v))| plain_value(&pickle, v, 0, &mut budget).map(|v| (k.into(), v)))
        .collect();
    Ok(PthCheckpoint {
        state_dict,
        container_key: Some(key.to_string()),
        metadata,
    })
}

/// Deepest nesting of metadata values converted to JSON (deeper ones are left out).
const PLAIN_VALUE_DEPTH: usize = 32;
/// Most JSON nodes made from one checkpoint's metadata (shared values count at each use).
const PLAIN_VALUE_NODES: usize = 1 << 20;
/// Most wrappers (`_rebuild_parameter`, `_rebuild_from_type_v2`) around one tensor.
const MAX_TENSOR_WRAPPERS: usize = 4;

/// Resolves storage references to tensor bytes.
struct StorageReader<'a> {
    zip: &'a StoredZip,
    pickle: &'a Pickle,
    prefix: &'a str,
    path: &'a Path,
    limits: &'a CheckpointLimits,
    /// Tensor bytes produced so far.
    total_bytes: u64,
}

impl StorageReader<'_> {
    fn state_dict(&mut self, entries: &[(ValueId, ValueId)]) -> Result<StateDict> {
        let pickle = self.pickle;
        let mut state = StateDict::new();
        for &(key, value) in entries {
            let Some(key) = pickle.str(key) else { continue };
            let Some((callable, args)) = tensor_call(pickle, value) else {
                if let Value::Call { callable, .. } = pickle.get(value)
                    && let Some((module, class)) = pickle.global(*callable)
                    && module.starts_with("torch")
                {
                    return Err(Error::checkpoint(
                        self.path,
                        format!(
                            "tensor `{key}` is stored as {module}.{class}, which this reader does \
                             not support"
                        ),
                    ));
                }
                continue; // `_metadata` and other non-tensor bookkeeping
            };
            let tensor = self.rebuild(key, callable, args)?;
            state.insert(key.to_string(), tensor);
        }
        Ok(state)
    }

    /// `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`.
    fn rebuild(&mut self, key: &str, callable: &str, args: ValueId) -> Result<Tensor> {
        let path = self.path;
        let bad =
            |what: &str| Error::checkpoint(path, format!("tensor `{key}` ({callable}): {what}"));
        let pickle = self.pickle;
        let Value::Tuple(args) = pickle.get(args) else {
            return Err(bad("arguments are not a tuple"));
        };
        if args.len() < 4 {
            return Err(bad("too few arguments"));
        }
        let Value::Persistent(storage) = pickle.get(args[0]) else {
            return Err(bad("first argument is not a storage reference"));
        };
        let Value::Tuple(storage) = pickle.get(*storage) else {
            return Err(bad("storage reference is not a tuple"));
        };
        let class_name = storage
            .get(1)
            .and_then(|&c| pickle.global(c))
            .map(|(_, c)| c);
        let storage_key = storage.get(2).and_then(|&k| pickle.str(k));
        let (Some(class_name), Some(storage_key)) = (class_name, storage_key) else {
            return Err(bad("storage reference lacks its type or key"));
        };
        let dtype = storage_dtype(class_name)
            .ok_or_else(|| bad(&format!("storage type {class_name} is not supported")))?;
        let offset = pickle
            .usize(args[1])
            .ok_or_else(|| bad("storage offset is not a non-negative integer"))?;
        let size = int_tuple(pickle, args[2])
            .ok_or_else(|| bad("size is not a tuple of non-negative integers"))?;
        let stride = int_tuple(pickle, args[3])
            .ok_or_else(|| bad("stride is not a tuple of non-negative integers"))?;
        if size.len() != stride.len() {
            return Err(bad("size and stride differ in length"));
        }
        if size.len() > self.limits.max_dims {
            return Err(bad(&format!(
                "{} dimensions, more than the {} accepted",
                size.len(),
                self.limits.max_dims
            )));
        }
        let data = self
            .zip
            .member(&format!("{}data/{storage_key}", self.prefix))?;
        let elem = dtype.size_in_bytes();
        let extent = view_extent(offset, &size, &stride, elem)
            .ok_or_else(|| bad(&format!("size {size:?} × stride {stride:?} overflows")))?;
        if extent.bytes > data.len() as u64 || extent.end_byte > data.len() as u64 {
            return Err(bad(&format!(
                "a view of {} elements (size {size:?}, stride {stride:?}, offset {offset}) needs \
                 {} bytes of a {}-byte storage (truncated or crafted file)",
                extent.elements,
                extent.bytes.max(extent.end_byte),
                data.len()
            )));
        }
        self.total_bytes = self
            .total_bytes
            .checked_add(extent.bytes)
            .filter(|&t| t <= self.limits.max_tensor_bytes)
            .ok_or_else(|| {
                bad(&format!(
                    "the tensors exceed the limit of {} bytes in all \
                     (TRESNET_MAX_CHECKPOINT_BYTES raises it)",
                    self.limits.max_tensor_bytes
                ))
            })?;
        let bytes = if extent.elements == 0 {
            Vec::new()
        } else {
            gather_strided(data, elem, offset, &size, &stride)
        };
        Tensor::from_raw_buffer(&bytes, dtype, &size, &Device::Cpu).map_err(|e| bad(&e.to_string()))
    }
}

/// What a strided view covers, computed with checked arithmetic.
struct ViewExtent {
    /// Elements in the view.
    elements: u64,
    /// `elements × element size`.
    bytes: u64,
    /// One past the last byte the view reads (0 for an empty view).
    end_byte: u64,
}

/// The extent of `size`/`stride` at `offset` elements with `elem`-byte elements, or `None` when
/// any product or sum overflows 64 bits.
fn view_extent(offset: usize, size: &[usize], stride: &[usize], elem: usize) -> Option<ViewExtent> {
    let elem = elem as u64;
    let mut elements: u64 = 1;
    for &n in size {
        elements = elements.checked_mul(n as u64)?;
    }
    let bytes = elements.checked_mul(elem)?;
    if elements == 0 {
        return Some(ViewExtent {
            elements,
            bytes,
            end_byte: 0,
        });
    }
    let mut last = offset as u64;
    for (&n, &s) in size.iter().zip(stride) {
        last = last.checked_add((n as u64 - 1).checked_mul(s as u64)?)?;
    }
    let end_byte = last.checked_add(1)?.checked_mul(elem)?;
    Some(ViewExtent {
        elements,
        bytes,
        end_byte,
    })
}

/// Copies the elements of a strided view into row-major order. The caller has checked with
/// [`view_extent`] that the view lies inside `data`.
fn gather_strided(
    data: &[u8],
    elem: usize,
    offset: usize,
    size: &[usize],
    stride: &[usize],
) -> Vec<u8> {
    let numel: usize = size.iter().product();
    let mut contiguous = true;
    let mut expected = 1;
    for (n, s) in size.iter().zip(stride).rev() {
        if *n != 1 && *s != expected {
            contiguous = false;
        }
        expected *= n;
    }
    if contiguous {
        return data[offset * elem..(offset + numel) * elem].to_vec();
    }
    let mut out = Vec::with_capacity(numel * elem);
    let mut index = vec![0usize; size.len()];
    for _ in 0..numel {
        let at = offset + index.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(&data[at * elem..(at + 1) * elem]);
        for d in (0..size.len()).rev() {
            index[d] += 1;
            if index[d] < size[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

/// If `value` rebuilds a tensor, the rebuild function's name and its argument tuple (unwrapping
/// `_rebuild_parameter` and `_rebuild_from_type_v2`, at most [`MAX_TENSOR_WRAPPERS`] deep).
fn tensor_call(pickle: &Pickle, mut value: ValueId) -> Option<(&'static str, ValueId)> {
    for _ in 0..=MAX_TENSOR_WRAPPERS {
        let Value::Call { callable, args } = pickle.get(value) else {
            return None;
        };
        let args_items = pickle.items(*args);
        match pickle.global(*callable)? {
            ("torch._utils", "_rebuild_tensor_v2") => return Some(("_rebuild_tensor_v2", *args)),
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                value = *args_items?.first()?;
            }
            // (func, type, args, state): the tensor is func(*args).
            ("torch._tensor", "_rebuild_from_type_v2") => {
                let a = args_items?;
                if a.len() < 3 || pickle.global(a[0])? != ("torch._utils", "_rebuild_tensor_v2") {
                    return None;
                }
                return Some(("_rebuild_tensor_v2", a[2]));
            }
            _ => return None,
        }
    }
    None
}

fn storage_dtype(class_name: &str) -> Option<DType> {
    Some(match class_name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "ByteStorage" | "BoolStorage" => DType::U8,
        _ => return None,
    })
}

fn int_tuple(pickle: &Pickle, id: ValueId) -> Option<Vec<usize>> {
    pickle
        .items(id)?
        .iter()
        .map(|&item| pickle.usize(item))
        .collect()
}

/// A JSON view of plain pickled values (numbers, strings, booleans, lists and dicts of them);
/// `None` for anything else, for values nested deeper than [`PLAIN_VALUE_DEPTH`], and once
/// `budget` nodes have been made.
fn plain_value(
    pickle: &Pickle,
    id: ValueId,
    depth: usize,
    budget: &mut usize,
) -> Option<serde_json::Value> {
    use serde_json::Value as Json;
    if depth > PLAIN_VALUE_DEPTH {
        return None;
    }
    *budget = budget.checked_sub(1)?;
    Some(match pickle.get(id) {
        Value::Int(v) => Json::from(*v),
        Value::Float(v) => Json::from(*v),
        Value::Str(s) => Json::from(s.clone()),
        Value::Bool(b) => Json::from(*b),
        Value::None => Json::Null,
        Value::Tuple(items) | Value::List(items) => Json::Array(
            items
                .iter()
                .map(|&item| plain_value(pickle, item, depth + 1, budget))
                .collect::<Option<_>>()?,
        ),
        Value::Dict(entries) => {
            let mut map = serde_json::Map::new();
            for &(k, v) in entries {
                let key = match pickle.get(k) {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    _ => return None,
                };
                map.insert(key, plain_value(pickle, v, depth + 1, budget)?);
            }
            Json::Object(map)
        }
        _ => return None,
    })
}

/// A short description of a value, looking one level deep at most.
fn describe(pickle: &Pickle, id: ValueId) -> String {
    let name = |id: ValueId| match pickle.global(id) {
        Some((module, name)) => format!("{module}.{name}"),
        None => "a computed callable".into(),
    };
    match pickle.get(id) {
        Value::Global { module, name } => format!("the class {module}.{name}"),
        Value::Call { callable, .. } => format!("an object built by {}", name(*callable)),
        Value::Build { .. } => "an object restored from its state".into(),
        Value::List(_) => "a list".into(),
        Value::Tuple(_) => "a tuple".into(),
        Value::Set(_) => "a set".into(),
        Value::Str(s) => format!("the string {:?}", s.chars().take(40).collect::<String>()),
        other => format!("{other:?}").chars().take(60).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_extents_are_checked_for_overflow() {
        let e = view_extent(2, &[3, 4], &[4, 1], 4).unwrap();
        assert_eq!((e.elements, e.bytes, e.end_byte), (12, 48, 56));
        assert!(view_extent(0, &[(1 << 58) + 1, 64], &[64, 1], 4).is_none());
        assert!(view_extent(usize::MAX, &[2], &[1], 4).is_none());
        let empty = view_extent(usize::MAX, &[0, 5], &[5, 1], 4).unwrap();
        assert_eq!((empty.elements, empty.end_byte), (0, 0));
    }
}
