//! PyTorch `.pth` / `.pt` / `.bin` checkpoints in the zip format `torch.save` writes.
//!
//! The pickle inside (`<archive>/data.pkl`) is decoded with candle's unpickler; the tensors it
//! references are read from `<archive>/data/<storage key>` through [`StoredZip`]. The state dict is
//! found whether it is the top-level object (a bare `state_dict()`) or stored under a key such as
//! `model` (the official TResNet/ASL/ML-Decoder checkpoints) or `state_dict` (timm's training
//! checkpoints).

mod stored_zip;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

pub use stored_zip::StoredZip;

use super::StateDict;
use crate::error::{Error, Result};

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

/// Reads a PyTorch zip checkpoint.
pub fn read_pth(path: &Path) -> Result<PthCheckpoint> {
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
                String::from_utf8_lossy(order)
            ),
        ));
    }
    let mut pickle = zip.member(&pickle_name)?;
    let mut stack = Stack::empty();
    stack
        .read_loop(&mut pickle)
        .map_err(|e| Error::checkpoint(path, format!("cannot unpickle {pickle_name}: {e}")))?;
    let root = stack
        .finalize()
        .map_err(|e| Error::checkpoint(path, format!("cannot unpickle {pickle_name}: {e}")))?;
    let storage = StorageReader {
        zip: &zip,
        prefix,
        path,
    };
    let top = match root {
        Object::Dict(entries) => entries,
        other => {
            return Err(Error::checkpoint(
                path,
                format!("top-level object is {}, not a dict", describe(&other)),
            ));
        }
    };
    if top.iter().any(|(_, v)| tensor_call(v).is_some()) {
        let state_dict = storage.state_dict(top)?;
        return Ok(PthCheckpoint {
            state_dict,
            container_key: None,
            metadata: BTreeMap::new(),
        });
    }
    let mut named: Vec<(String, Object)> = top
        .into_iter()
        .filter_map(|(k, v)| match k {
            Object::Unicode(k) => Some((k, v)),
            _ => None,
        })
        .collect();
    let chosen = CONTAINER_KEYS.iter().find_map(|key| {
        named.iter().position(|(k, v)| {
            k == key
                && matches!(v, Object::Dict(d) if d.iter().any(|(_, t)| tensor_call(t).is_some()))
        })
    });
    let Some(index) = chosen else {
        let keys: Vec<&str> = named.iter().map(|(k, _)| k.as_str()).collect();
        return Err(Error::checkpoint(
            path,
            format!(
                "no state dict found: the top-level dict has keys {keys:?} and none of {:?} holds \
                 tensors",
                CONTAINER_KEYS
            ),
        ));
    };
    let (key, value) = named.remove(index);
    let Object::Dict(entries) = value else {
        unreachable!("chosen container is a dict")
    };
    let state_dict = storage.state_dict(entries)?;
    let metadata = named
        .iter()
        .filter_map(|(k, v)| plain_value(v).map(|v| (k.clone(), v)))
        .collect();
    Ok(PthCheckpoint {
        state_dict,
        container_key: Some(key),
        metadata,
    })
}

/// Resolves storage references to tensor bytes.
struct StorageReader<'a> {
    zip: &'a StoredZip,
    prefix: &'a str,
    path: &'a Path,
}

impl StorageReader<'_> {
    fn state_dict(&self, entries: Vec<(Object, Object)>) -> Result<StateDict> {
        let mut state = StateDict::new();
        for (key, value) in entries {
            let Object::Unicode(key) = key else { continue };
            let Some((callable, args)) = tensor_call(&value) else {
                if let Object::Reduce { callable, .. } = &value
                    && let Object::Class {
                        module_name,
                        class_name,
                    } = callable.as_ref()
                    && module_name.starts_with("torch")
                {
                    return Err(Error::checkpoint(
                        self.path,
                        format!(
                            "tensor `{key}` is stored as {module_name}.{class_name}, which this \
                             reader does not support"
                        ),
                    ));
                }
                continue; // `_metadata` and other non-tensor bookkeeping
            };
            let tensor = self.rebuild(&key, callable, args)?;
            state.insert(key, tensor);
        }
        Ok(state)
    }

    /// `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`.
    fn rebuild(&self, key: &str, callable: &str, args: &Object) -> Result<Tensor> {
        let bad = |what: &str| {
            Error::checkpoint(self.path, format!("tensor `{key}` ({callable}): {what}"))
        };
        let Object::Tuple(args) = args else {
            return Err(bad("arguments are not a tuple"));
        };
        if args.len() < 4 {
            return Err(bad("too few arguments"));
        }
        let Object::PersistentLoad(storage) = &args[0] else {
            return Err(bad("first argument is not a storage reference"));
        };
        let Object::Tuple(storage) = storage.as_ref() else {
            return Err(bad("storage reference is not a tuple"));
        };
        let (Some(Object::Class { class_name, .. }), Some(Object::Unicode(storage_key))) =
            (storage.get(1), storage.get(2))
        else {
            return Err(bad("storage reference lacks its type or key"));
        };
        let dtype = storage_dtype(class_name)
            .ok_or_else(|| bad(&format!("storage type {class_name} is not supported")))?;
        let offset = as_int(&args[1]).ok_or_else(|| bad("storage offset is not an integer"))?;
        let size = as_int_tuple(&args[2]).ok_or_else(|| bad("size is not a tuple of integers"))?;
        let stride =
            as_int_tuple(&args[3]).ok_or_else(|| bad("stride is not a tuple of integers"))?;
        if size.len() != stride.len() {
            return Err(bad("size and stride differ in length"));
        }
        let data = self
            .zip
            .member(&format!("{}data/{storage_key}", self.prefix))?;
        let elem = dtype.size_in_bytes();
        let numel: usize = size.iter().product();
        let bytes = if numel == 0 {
            Vec::new()
        } else {
            let last = offset
                + size
                    .iter()
                    .zip(&stride)
                    .map(|(n, s)| (n - 1) * s)
                    .sum::<usize>();
            if (last + 1) * elem > data.len() {
                return Err(bad(&format!(
                    "view needs {} bytes of a {}-byte storage (truncated file?)",
                    (last + 1) * elem,
                    data.len()
                )));
            }
            gather_strided(data, elem, offset, &size, &stride)
        };
        let tensor = Tensor::from_raw_buffer(&bytes, dtype, &size, &Device::Cpu)
            .map_err(|e| bad(&e.to_string()))?;
        Ok(tensor)
    }
}

/// Copies the elements of a strided view into row-major order.
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

/// If `value` rebuilds a tensor, the rebuild function's name and its arguments (unwrapping
/// `_rebuild_parameter` and `_rebuild_from_type_v2`).
fn tensor_call(value: &Object) -> Option<(&'static str, &Object)> {
    let Object::Reduce { callable, args } = value else {
        return None;
    };
    let Object::Class {
        module_name,
        class_name,
    } = callable.as_ref()
    else {
        return None;
    };
    match (module_name.as_str(), class_name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") => Some(("_rebuild_tensor_v2", args)),
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            match args.as_ref() {
                Object::Tuple(a) => a.first().and_then(tensor_call),
                _ => None,
            }
        }
        ("torch._tensor", "_rebuild_from_type_v2") => match args.as_ref() {
            // (func, type, args, state): the tensor is func(*args).
            Object::Tuple(a) if a.len() >= 3 => match &a[0] {
                Object::Class {
                    module_name,
                    class_name,
                } if module_name == "torch._utils" && class_name == "_rebuild_tensor_v2" => {
                    Some(("_rebuild_tensor_v2", &a[2]))
                }
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
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

fn as_int(o: &Object) -> Option<usize> {
    match o {
        Object::Int(v) => usize::try_from(*v).ok(),
        Object::Long(v) => usize::try_from(*v).ok(),
        _ => None,
    }
}

fn as_int_tuple(o: &Object) -> Option<Vec<usize>> {
    match o {
        Object::Tuple(items) | Object::List(items) => items.iter().map(as_int).collect(),
        _ => None,
    }
}

/// A JSON view of plain pickled values (numbers, strings, booleans, lists and dicts of them).
fn plain_value(o: &Object) -> Option<serde_json::Value> {
    use serde_json::Value;
    Some(match o {
        Object::Int(v) => Value::from(*v),
        Object::Long(v) => Value::from(*v),
        Object::Float(v) => Value::from(*v),
        Object::Unicode(s) => Value::from(s.clone()),
        Object::Bool(b) => Value::from(*b),
        Object::None => Value::Null,
        Object::Tuple(items) | Object::List(items) => {
            Value::Array(items.iter().map(plain_value).collect::<Option<_>>()?)
        }
        Object::Dict(entries) => {
            let mut map = serde_json::Map::new();
            for (k, v) in entries {
                let key = match k {
                    Object::Unicode(s) => s.clone(),
                    Object::Int(i) => i.to_string(),
                    Object::Long(i) => i.to_string(),
                    _ => return None,
                };
                map.insert(key, plain_value(v)?);
            }
            Value::Object(map)
        }
        _ => return None,
    })
}

fn describe(o: &Object) -> String {
    match o {
        Object::Class {
            module_name,
            class_name,
        } => format!("the class {module_name}.{class_name}"),
        Object::Reduce { callable, .. } | Object::Build { callable, .. } => {
            format!("an object built by {}", describe(callable))
        }
        Object::List(_) => "a list".into(),
        Object::Tuple(_) => "a tuple".into(),
        other => format!("{other:?}").chars().take(60).collect(),
    }
}
