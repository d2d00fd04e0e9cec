//! A bounded reader for the pickles `torch.save` writes (`data.pkl`, protocol 2, and the opcodes of
//! protocols 3–5 that appear in practice).
//!
//! The file is treated as hostile. Values live in one flat arena and refer to each other by index,
//! so:
//! - memo look-ups (`BINGET`) share a value instead of copying it: a small pickle that re-uses one
//!   list many times costs one index per use, not an exponentially growing copy;
//! - dropping the result is dropping one `Vec`: nesting depth never reaches the call stack;
//! - every opcode adds at most one value or one container item, so memory is linear in the size of
//!   the pickle, which is itself capped ([`PickleLimits`]), and string lengths are checked against
//!   the bytes that remain before anything is allocated.
//!
//! Nothing here runs code: globals are recorded by name, `REDUCE`/`NEWOBJ` by what they would call.

use std::collections::HashMap;

/// Index of a value in a [`Pickle`]'s arena.
pub type ValueId = u32;

/// One unpickled value. Containers hold indices into the arena.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// An integer wider than 64 bits (its value is not kept).
    BigInt,
    /// A float.
    Float(f64),
    /// A `str` (also `bytes`/legacy strings that are valid UTF-8).
    Str(String),
    /// A `bytes` value that is not UTF-8 (its content is not kept, only its length).
    Bytes(usize),
    /// A global looked up by `module.name` (never imported: just the names).
    Global {
        /// The module, e.g. `torch._utils`.
        module: String,
        /// The attribute, e.g. `_rebuild_tensor_v2`.
        name: String,
    },
    /// A tuple.
    Tuple(Vec<ValueId>),
    /// A list.
    List(Vec<ValueId>),
    /// A dict (also `collections.OrderedDict()` and `defaultdict`), in insertion order.
    Dict(Vec<(ValueId, ValueId)>),
    /// A set or frozenset.
    Set(Vec<ValueId>),
    /// `callable(*args)` (`REDUCE`, `NEWOBJ`).
    Call {
        /// What would be called.
        callable: ValueId,
        /// The argument tuple.
        args: ValueId,
    },
    /// `obj.__setstate__(state)` (`BUILD`).
    Build {
        /// The object being built.
        object: ValueId,
        /// Its state.
        state: ValueId,
    },
    /// `persistent_load(pid)`: a reference the loader resolves (torch: a tensor storage).
    Persistent(ValueId),
}

/// Caps on what one pickle may make us hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PickleLimits {
    /// Largest accepted pickle, in bytes.
    pub max_bytes: usize,
    /// Largest number of values plus container items.
    pub max_objects: usize,
}

impl Default for PickleLimits {
    /// 64 MiB and 16 M objects: a TResNet-L state dict's pickle is ~60 KB, one with ImageNet-21k
    /// class names a few MB.
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            max_objects: 16 << 20,
        }
    }
}

/// A decoded pickle: the arena and the id of the value `STOP` returned.
#[derive(Debug)]
pub struct Pickle {
    values: Vec<Value>,
    root: ValueId,
}

impl Pickle {
    /// The value `STOP` returned.
    pub fn root(&self) -> ValueId {
        self.root
    }

    /// The value with id `id`.
    pub fn get(&self, id: ValueId) -> &Value {
        &self.values[id as usize]
    }

    /// The string value of `id`, if it is one.
    pub fn str(&self, id: ValueId) -> Option<&str> {
        match self.get(id) {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The non-negative integer value of `id`, if it is one.
    pub fn usize(&self, id: ValueId) -> Option<usize> {
        match self.get(id) {
            Value::Int(v) => usize::try_from(*v).ok(),
            Value::Bool(b) => Some(usize::from(*b)),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub fn items(&self, id: ValueId) -> Option<&[ValueId]> {
        match self.get(id) {
            Value::Tuple(items) | Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// `(module, name)` if `id` is a global.
    pub fn global(&self, id: ValueId) -> Option<(&str, &str)> {
        match self.get(id) {
            Value::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }
}

/// Decodes `bytes` as a pickle within `limits`. The error says which opcode at which byte failed.
pub fn unpickle(bytes: &[u8], limits: &PickleLimits) -> Result<Pickle, String> {
    if bytes.len() > limits.max_bytes {
        return Err(format!(
            "the pickle is {} bytes, above the limit of {} bytes (TRESNET_MAX_PICKLE_BYTES raises it)",
            bytes.len(),
            limits.max_bytes
        ));
    }
    Machine {
        input: bytes,
        at: 0,
        values: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        budget: limits.max_objects,
    }
    .run()
}

struct Machine<'a> {
    input: &'a [u8],
    at: usize,
    values: Vec<Value>,
    stack: Vec<ValueId>,
    marks: Vec<usize>,
    memo: HashMap<u32, ValueId>,
    /// Values plus container items still allowed.
    budget: usize,
}

impl<'a> Machine<'a> {
    fn run(mut self) -> Result<Pickle, String> {
        loop {
            let start = self.at;
            let op = self.take(1)?[0];
            let done = self
                .step(op)
                .map_err(|e| format!("opcode {op:#04x} at byte {start}: {e}"))?;
            if let Some(root) = done {
                return Ok(Pickle {
                    values: self.values,
                    root,
                });
            }
        }
    }

    /// Executes one opcode; `Some(root)` on `STOP`.
    fn step(&mut self, op: u8) -> Result<Option<ValueId>, String> {
        match op {
            0x80 => {
                self.take(1)?; // PROTO n
            }
            0x95 => {
                self.take(8)?; // FRAME length: framing is irrelevant when all bytes are here
            }
            b'.' => {
                let root = self.pop()?;
                return Ok(Some(root));
            }
            b'(' => self.marks.push(self.stack.len()),
            b'N' => self.push_new(Value::None)?,
            0x88 => self.push_new(Value::Bool(true))?,
            0x89 => self.push_new(Value::Bool(false))?,
            b'J' => {
                let b = self.take(4)?;
                let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                self.push_new(Value::Int(i64::from(v)))?;
            }
            b'K' => {
                let v = self.take(1)?[0];
                self.push_new(Value::Int(i64::from(v)))?;
            }
            b'M' => {
                let b = self.take(2)?;
                self.push_new(Value::Int(i64::from(u16::from_le_bytes([b[0], b[1]]))))?;
            }
            0x8a => {
                let n = usize::from(self.take(1)?[0]);
                let value = long_value(self.take(n)?);
                self.push_new(value)?;
            }
            0x8b => {
                let n = self.length_u32()?;
                let value = long_value(self.take(n)?);
                self.push_new(value)?;
            }
            b'G' => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                self.push_new(Value::Float(f64::from_be_bytes(a)))?;
            }
            b'X' => {
                let n = self.length_u32()?;
                self.push_text(n)?;
            }
            0x8c => {
                let n = usize::from(self.take(1)?[0]);
                self.push_text(n)?;
            }
            0x8d => {
                let n = self.length_u64()?;
                self.push_text(n)?;
            }
            b'U' | b'C' => {
                let n = usize::from(self.take(1)?[0]);
                self.push_bytes(n)?;
            }
            b'T' | b'B' => {
                let n = self.length_u32()?;
                self.push_bytes(n)?;
            }
            0x8e => {
                let n = self.length_u64()?;
                self.push_bytes(n)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.push_new(Value::Global { module, name })?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Value::Str(module), Value::Str(name)) = (self.get(module), self.get(name))
                else {
                    return Err("STACK_GLOBAL needs two strings".into());
                };
                let global = Value::Global {
                    module: module.clone(),
                    name: name.clone(),
                };
                self.push_new(global)?;
            }
            b')' => self.push_new(Value::Tuple(Vec::new()))?,
            b']' => self.push_new(Value::List(Vec::new()))?,
            b'}' => self.push_new(Value::Dict(Vec::new()))?,
            0x8f => self.push_new(Value::Set(Vec::new()))?,
            b't' => {
                let items = self.pop_to_mark()?;
                self.push_new(Value::Tuple(items))?;
            }
            b'l' => {
                let items = self.pop_to_mark()?;
                self.push_new(Value::List(items))?;
            }
            b'd' => {
                let items = self.pop_to_mark()?;
                let pairs = pairs(&items)?;
                self.push_new(Value::Dict(pairs))?;
            }
            0x91 => {
                let items = self.pop_to_mark()?;
                self.push_new(Value::Set(items))?;
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < n + self.marks.last().copied().unwrap_or(0) {
                    return Err(format!("TUPLE{n} on a stack of fewer than {n} values"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push_new(Value::Tuple(items))?;
            }
            b'q' => {
                let key = u32::from(self.take(1)?[0]);
                self.memoize(key)?;
            }
            b'r' => {
                let b = self.take(4)?;
                self.memoize(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))?;
            }
            0x94 => {
                let key = u32::try_from(self.memo.len()).map_err(|_| "memo overflow")?;
                self.memoize(key)?;
            }
            b'h' => {
                let key = u32::from(self.take(1)?[0]);
                self.recall(key)?;
            }
            b'j' => {
                let b = self.take(4)?;
                self.recall(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))?;
            }
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_to_mark()?;
            }
            b'2' => {
                let top = *self.stack.last().ok_or("DUP on an empty stack")?;
                self.push_existing(top)?;
            }
            b'a' => {
                let item = self.pop()?;
                let list = self.top()?;
                self.extend(list, vec![item])?;
            }
            b'e' | 0x90 => {
                let items = self.pop_to_mark()?;
                let list = self.top()?;
                self.extend(list, items)?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                let dict = self.top()?;
                self.insert(dict, vec![(key, value)])?;
            }
            b'u' => {
                let items = self.pop_to_mark()?;
                let pairs = pairs(&items)?;
                let dict = self.top()?;
                self.insert(dict, pairs)?;
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let value = if self.makes_dict(callable, args) {
                    Value::Dict(Vec::new())
                } else {
                    Value::Call { callable, args }
                };
                self.push_new(value)?;
            }
            0x92 => {
                let _kwargs = self.pop()?;
                let args = self.pop()?;
                let callable = self.pop()?;
                self.push_new(Value::Call { callable, args })?;
            }
            b'b' => {
                let state = self.pop()?;
                let object = self.pop()?;
                self.push_new(Value::Build { object, state })?;
            }
            b'Q' => {
                let pid = self.pop()?;
                self.push_new(Value::Persistent(pid))?;
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode {:?} (not written by torch.save)",
                    char::from(other)
                ));
            }
        }
        Ok(None)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.input.len())
            .ok_or_else(|| {
                format!(
                    "needs {n} more bytes at byte {} of a {}-byte pickle (truncated?)",
                    self.at,
                    self.input.len()
                )
            })?;
        let input = self.input;
        let bytes = &input[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn length_u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).map_err(|e| e.to_string())
    }

    fn length_u64(&mut self) -> Result<usize, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(a)).map_err(|_| "length does not fit in memory".into())
    }

    /// A newline-terminated ASCII line (`GLOBAL`'s module and name), at most 256 bytes.
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.input[self.at..];
        let end = rest
            .iter()
            .take(256)
            .position(|&b| b == b'\n')
            .ok_or("GLOBAL name is not a line of at most 256 bytes")?;
        let text = std::str::from_utf8(&rest[..end])
            .map_err(|_| "GLOBAL name is not UTF-8")?
            .to_string();
        self.at += end + 1;
        Ok(text)
    }

    fn push_text(&mut self, n: usize) -> Result<(), String> {
        let bytes = self.take(n)?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "string is not UTF-8")?
            .to_string();
        self.push_new(Value::Str(text))
    }

    fn push_bytes(&mut self, n: usize) -> Result<(), String> {
        let bytes = self.take(n)?;
        let value = match std::str::from_utf8(bytes) {
            Ok(text) => Value::Str(text.to_string()),
            Err(_) => Value::Bytes(n),
        };
        self.push_new(value)
    }

    fn charge(&mut self, n: usize) -> Result<(), String> {
        self.budget = self.budget.checked_sub(n).ok_or(
            "the pickle holds more objects than the limit allows (TRESNET_MAX_PICKLE_OBJECTS \
             raises it)",
        )?;
        Ok(())
    }

    fn push_new(&mut self, value: Value) -> Result<(), String> {
        self.charge(1)?;
        let id = ValueId::try_from(self.values.len()).map_err(|_| "too many values")?;
        self.values.push(value);
        self.stack.push(id);
        Ok(())
    }

    fn push_existing(&mut self, id: ValueId) -> Result<(), String> {
        self.charge(1)?;
        self.stack.push(id);
        Ok(())
    }

    fn get(&self, id: ValueId) -> &Value {
        &self.values[id as usize]
    }

    fn pop(&mut self) -> Result<ValueId, String> {
        // Values below the last MARK belong to the enclosing container: pickle never pops them.
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("pops more values than the stack holds above its last MARK".into());
        }
        self.stack.pop().ok_or_else(|| "pops an empty stack".into())
    }

    fn top(&self) -> Result<ValueId, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("needs a value on the stack".into());
        }
        Ok(self.stack[self.stack.len() - 1])
    }

    fn pop_to_mark(&mut self) -> Result<Vec<ValueId>, String> {
        let mark = self.marks.pop().ok_or("no MARK to pop to")?;
        if mark > self.stack.len() {
            return Err("MARK lies above the stack".into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn memoize(&mut self, key: u32) -> Result<(), String> {
        let top = *self.stack.last().ok_or("memoizes from an empty stack")?;
        if !self.memo.contains_key(&key) {
            self.charge(1)?;
        }
        self.memo.insert(key, top);
        Ok(())
    }

    fn recall(&mut self, key: u32) -> Result<(), String> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| format!("memo entry {key} was never stored"))?;
        self.push_existing(id)
    }

    fn extend(&mut self, target: ValueId, items: Vec<ValueId>) -> Result<(), String> {
        self.charge(items.len())?;
        match &mut self.values[target as usize] {
            Value::List(list) | Value::Set(list) => list.extend(items),
            // An object with its own `append`/`extend`: not a state dict; the items are dropped.
            Value::Call { .. } | Value::Build { .. } => {}
            other => return Err(format!("appends to {}", kind(other))),
        }
        Ok(())
    }

    fn insert(&mut self, target: ValueId, pairs: Vec<(ValueId, ValueId)>) -> Result<(), String> {
        self.charge(pairs.len())?;
        match &mut self.values[target as usize] {
            Value::Dict(dict) => dict.extend(pairs),
            Value::Call { .. } | Value::Build { .. } => {}
            other => return Err(format!("sets items on {}", kind(other))),
        }
        Ok(())
    }

    /// Whether `callable(*args)` makes a plain mapping: `collections.OrderedDict()` and
    /// `collections.defaultdict(factory)`.
    fn makes_dict(&self, callable: ValueId, args: ValueId) -> bool {
        let Value::Global { module, name } = self.get(callable) else {
            return false;
        };
        let no_args = matches!(self.get(args), Value::Tuple(a) if a.is_empty());
        module == "collections" && (name == "OrderedDict" && no_args || name == "defaultdict")
    }
}

/// `LONG1` / `LONG4`: little-endian two's complement of any width.
fn long_value(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() > 8 {
        let sign = if bytes[bytes.len() - 1] & 0x80 != 0 {
            0xFF
        } else {
            0
        };
        if bytes[8..].iter().any(|&b| b != sign) {
            return Value::BigInt;
        }
    }
    let fill = if bytes[bytes.len().min(8) - 1] & 0x80 != 0 {
        0xFF
    } else {
        0
    };
    let mut a = [fill; 8];
    let n = bytes.len().min(8);
    a[..n].copy_from_slice(&bytes[..n]);
    Value::Int(i64::from_le_bytes(a))
}

fn pairs(items: &[ValueId]) -> Result<Vec<(ValueId, ValueId)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("a dict needs an even number of items".into());
    }
    Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::Int(_) | Value::BigInt => "an int",
        Value::Float(_) => "a float",
        Value::Str(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Global { .. } => "a global",
        Value::Tuple(_) => "a tuple",
        Value::List(_) => "a list",
        Value::Dict(_) => "a dict",
        Value::Set(_) => "a set",
        Value::Call { .. } => "a constructed object",
        Value::Build { .. } => "a built object",
        Value::Persistent(_) => "a persistent reference",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PickleLimits {
        PickleLimits::default()
    }

    #[test]
    fn a_shared_list_is_shared_not_copied() {
        // ]q\x00 (h\x00 h\x00 ... l q\x01 ...: each level lists the previous one twice.
        let mut p = vec![0x80, 2, b']', b'q', 0];
        for level in 0..60u8 {
            p.extend_from_slice(&[b'(', b'h', level, b'h', level, b'l', b'q', level + 1]);
        }
        p.push(b'.');
        let pickle = unpickle(&p, &limits()).unwrap();
        assert!(pickle.values.len() < 100);
        assert_eq!(pickle.items(pickle.root()).unwrap().len(), 2);
    }

    #[test]
    fn deep_nesting_is_held_flat() {
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b']', 1_000_000));
        p.extend(std::iter::repeat_n(b'a', 999_999));
        p.push(b'.');
        let pickle = unpickle(&p, &limits()).unwrap();
        drop(pickle); // one Vec: no recursion
    }

    #[test]
    fn limits_and_truncation_are_reported() {
        let small = PickleLimits {
            max_bytes: 4,
            max_objects: 10,
        };
        assert!(
            unpickle(b"\x80\x02]]]]].", &small)
                .unwrap_err()
                .contains("limit")
        );
        let few = PickleLimits {
            max_bytes: 100,
            max_objects: 3,
        };
        assert!(unpickle(b"]]]]].", &few).unwrap_err().contains("objects"));
        assert!(
            unpickle(b"X\xff\xff\xff\xff", &limits())
                .unwrap_err()
                .contains("truncated")
        );
        assert!(
            unpickle(b"h\x05.", &limits())
                .unwrap_err()
                .contains("never stored")
        );
        assert!(unpickle(b"t.", &limits()).unwrap_err().contains("MARK"));
    }

    #[test]
    fn longs_of_any_width_decode() {
        assert_eq!(long_value(&[0xff]), Value::Int(-1));
        assert_eq!(long_value(&[0x00, 0x01]), Value::Int(256));
        assert_eq!(long_value(&[0x01; 9]), Value::BigInt);
        assert_eq!(long_value(&[0xff; 12]), Value::Int(-1));
    }
}
