//! Hostile files for the tests: real zip archives written from scratch, PyTorch checkpoints with
//! one field of their pickle rewritten, pickle bombs.

use std::path::Path;

use tresnet::weights::StoredZip;

/// CRC-32 (IEEE 802.3, as zip stores it).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A zip archive of `entries`, stored uncompressed as `torch.save` stores them (no ZIP64 records:
/// every offset here fits in 32 bits).
pub fn stored_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut directory = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let (crc, size, name_len) = (crc32(data), data.len() as u32, name.len() as u16);
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&20u16.to_le_bytes()); // version needed
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&0u16.to_le_bytes()); // stored
            v.extend_from_slice(&0u32.to_le_bytes()); // time, date
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&size.to_le_bytes());
            v.extend_from_slice(&size.to_le_bytes());
            v.extend_from_slice(&name_len.to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // extra length
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        directory.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        directory.extend_from_slice(&20u16.to_le_bytes()); // version made by
        common(&mut directory);
        directory.extend_from_slice(&[0u8; 6]); // comment length, disk, internal attributes
        directory.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        directory.extend_from_slice(&offset.to_le_bytes());
        directory.extend_from_slice(name.as_bytes());
    }
    let dir_offset = out.len() as u32;
    out.extend_from_slice(&directory);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // disk numbers
    let count = entries.len() as u16;
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(directory.len() as u32).to_le_bytes());
    out.extend_from_slice(&dir_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment length
    out
}

/// Every member of a `torch.save` archive, in name order.
pub fn zip_members(path: &Path) -> Vec<(String, Vec<u8>)> {
    let zip = StoredZip::open(path).expect("a readable checkpoint");
    let names: Vec<String> = zip.names().map(str::to_string).collect();
    names
        .into_iter()
        .map(|n| {
            let bytes = zip.member(&n).expect("member").to_vec();
            (n, bytes)
        })
        .collect()
}

/// `pth` with the first dimension of tensor `key`'s size replaced by `first_dim` (as a LONG1),
/// everything else (storages, strides, other tensors) untouched: the shape a crafted checkpoint
/// claims over storage it does not have.
pub fn pth_with_first_dim(pth: &Path, key: &str, first_dim: u64) -> Vec<u8> {
    let mut members = zip_members(pth);
    let (_, pickle) = members
        .iter_mut()
        .find(|(n, _)| n.ends_with("data.pkl"))
        .expect("data.pkl");
    let at = find(pickle, key.as_bytes(), 0).expect("key in the pickle");
    // After the key: the storage reference ends with BINPERSID `Q`, then the offset (BININT1)
    // and the size tuple, whose first item is a BININT1 or BININT2.
    let q = find(pickle, b"Q", at).expect("BINPERSID after the key");
    let mut size_at = q + 1;
    assert_eq!(pickle[size_at], b'K', "offset as BININT1");
    size_at += 2;
    let old_len = match pickle[size_at] {
        b'K' => 2,
        b'M' => 3,
        other => panic!("size starts with opcode {other:#x}"),
    };
    let mut long = vec![0x8a, 9];
    long.extend_from_slice(&first_dim.to_le_bytes());
    long.push(0); // a positive sign byte
    pickle.splice(size_at..size_at + old_len, long);
    stored_zip(&members)
}

/// `pth` with its `data.pkl` replaced by `pickle`.
pub fn pth_with_pickle(pth: &Path, pickle: Vec<u8>) -> Vec<u8> {
    let mut members = zip_members(pth);
    for (name, bytes) in &mut members {
        if name.ends_with("data.pkl") {
            *bytes = pickle.clone();
        }
    }
    stored_zip(&members)
}

/// A 500-byte pickle whose lists each hold the previous one twice, `levels` deep: a reader that
/// copies memoised values builds 2^levels lists.
pub fn memo_bomb_pickle(levels: u8) -> Vec<u8> {
    let mut p = vec![0x80, 2, b']', b'q', 0];
    for level in 0..levels {
        p.extend_from_slice(&[b'(', b'h', level, b'h', level, b'l', b'q', level + 1]);
    }
    // The root: a dict holding the last list, as a state dict would hold tensors.
    p.extend_from_slice(&[b'}', b'X', 1, 0, 0, 0, b'x', b'h', levels, b's', b'.']);
    p
}

/// A pickle of `depth` lists nested in each other, in a dict: a reader whose values own their
/// children recursively overflows the stack dropping it.
pub fn nested_lists_pickle(depth: usize) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'X', 1, 0, 0, 0, b'x'];
    p.extend(std::iter::repeat_n(b']', depth));
    p.extend(std::iter::repeat_n(b'a', depth - 1));
    p.extend_from_slice(b"s.");
    p
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
