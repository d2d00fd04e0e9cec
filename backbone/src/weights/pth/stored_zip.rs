//! A reader for the zip container of PyTorch checkpoints (`torch.save` since PyTorch 1.6).
//!
//! `torch.save` writes every entry uncompressed ("stored") and always appends a ZIP64 end record and
//! locator between the central directory and the classic end-of-central-directory record. This reader
//! takes the offsets the archive declares at face value (the archive starts at byte 0, as every
//! `torch.save` file does) instead of guessing a prefix length, and maps the file so tensor bytes are
//! read in place.
//!
//! Why not the `zip` crate: `zip` 9.8.2 (used by candle 0.11.1's `.pth` reader) guesses the central
//! directory start as "end record position minus directory size", which ignores the 76 bytes of ZIP64
//! records `torch.save` puts in between. Whenever a central-directory header happens to begin exactly
//! 76 bytes into the directory (the first entry's header is 46 bytes plus its name, so a name of 30
//! bytes, i.e. `<21-character file stem>/data.pkl`), it accepts that header as the start, concludes
//! the archive has a 76-byte prefix and then fails with "Invalid Central Directory header".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};

const LOCAL_HEADER_SIG: u32 = 0x0403_4b50;
const CENTRAL_HEADER_SIG: u32 = 0x0201_4b50;
const END_SIG: u32 = 0x0605_4b50;
const ZIP64_END_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const END_LEN: usize = 22;
const ZIP64_LOCATOR_LEN: usize = 20;

/// One member of the archive.
#[derive(Debug, Clone)]
struct Member {
    local_header_offset: u64,
    compressed_size: u64,
    uncompressed_size: u64,
    method: u16,
    flags: u16,
}

/// A memory-mapped zip archive whose members are read in place.
pub struct StoredZip {
    path: PathBuf,
    map: Mmap,
    members: BTreeMap<String, Member>,
}

/// Little-endian field access with bounds checks that report the archive as truncated.
struct Cursor<'a> {
    bytes: &'a [u8],
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn slice(&self, at: u64, len: u64, what: &str) -> Result<&'a [u8]> {
        let end = at.checked_add(len);
        match end {
            Some(end) if end <= self.bytes.len() as u64 => {
                Ok(&self.bytes[at as usize..end as usize])
            }
            _ => Err(Error::checkpoint(
                self.path,
                format!(
                    "zip archive truncated or corrupt: {what} at byte {at} (+{len}) lies past the \
                     end of the {}-byte file",
                    self.bytes.len()
                ),
            )),
        }
    }
    fn u16(&self, at: u64) -> Result<u16> {
        let b = self.slice(at, 2, "field")?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&self, at: u64) -> Result<u32> {
        let b = self.slice(at, 4, "field")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&self, at: u64) -> Result<u64> {
        let b = self.slice(at, 8, "field")?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

impl StoredZip {
    /// Whether `head` starts like a zip archive (a local file header).
    pub fn has_zip_magic(head: &[u8]) -> bool {
        head.len() >= 4
            && u32::from_le_bytes([head[0], head[1], head[2], head[3]]) == LOCAL_HEADER_SIG
    }

    /// Opens and indexes the archive at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = tresnet_io::open_regular(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only map; the archive is only read while `self` lives. A concurrent writer
        // truncating the file is the one hazard, as for every memory-mapped reader.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let members = index_members(&map, path)?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            members,
        })
    }

    /// Member names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(String::as_str)
    }

    /// The bytes of member `name`, in place.
    pub fn member(&self, name: &str) -> Result<&[u8]> {
        let m = self.members.get(name).ok_or_else(|| {
            Error::checkpoint(&self.path, format!("zip archive has no member `{name}`"))
        })?;
        if m.flags & 1 != 0 {
            return Err(Error::checkpoint(
                &self.path,
                format!("member `{name}` is encrypted"),
            ));
        }
        if m.method != 0 || m.compressed_size != m.uncompressed_size {
            return Err(Error::checkpoint(
                &self.path,
                format!(
                    "member `{name}` is compressed (method {}); PyTorch checkpoints store members \
                     uncompressed — was the file re-zipped by another tool?",
                    m.method
                ),
            ));
        }
        let cur = Cursor {
            bytes: &self.map,
            path: &self.path,
        };
        let at = m.local_header_offset;
        if cur.u32(at)? != LOCAL_HEADER_SIG {
            return Err(Error::checkpoint(
                &self.path,
                format!("member `{name}`: no local file header at byte {at}"),
            ));
        }
        let name_len = u64::from(cur.u16(at + 26)?);
        let extra_len = u64::from(cur.u16(at + 28)?);
        cur.slice(
            at + 30 + name_len + extra_len,
            m.compressed_size,
            "member data",
        )
    }
}

fn index_members(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, Member>> {
    let cur = Cursor { bytes, path };
    let len = bytes.len();
    if len < END_LEN {
        return Err(Error::checkpoint(
            path,
            format!("{len} bytes is too short for a zip archive"),
        ));
    }
    let end_at = find_end_record(bytes).ok_or_else(|| {
        Error::checkpoint(
            path,
            "no zip end-of-central-directory record (truncated download, or not a PyTorch zip \
             checkpoint)",
        )
    })? as u64;
    let mut entries = u64::from(cur.u16(end_at + 10)?);
    let mut dir_size = u64::from(cur.u32(end_at + 12)?);
    let mut dir_offset = u64::from(cur.u32(end_at + 16)?);
    let mut dir_limit = end_at;
    let locator_at = end_at.checked_sub(ZIP64_LOCATOR_LEN as u64);
    if let Some(locator_at) = locator_at
        && cur.u32(locator_at)? == ZIP64_LOCATOR_SIG
    {
        let zip64_end_at = cur.u64(locator_at + 8)?;
        if cur.u32(zip64_end_at)? != ZIP64_END_SIG {
            return Err(Error::checkpoint(
                path,
                format!(
                    "ZIP64 locator points to byte {zip64_end_at}, which holds no ZIP64 end record"
                ),
            ));
        }
        entries = cur.u64(zip64_end_at + 32)?;
        dir_size = cur.u64(zip64_end_at + 40)?;
        dir_offset = cur.u64(zip64_end_at + 48)?;
        dir_limit = zip64_end_at;
    } else if entries == 0xFFFF || dir_size == 0xFFFF_FFFF || dir_offset == 0xFFFF_FFFF {
        return Err(Error::checkpoint(
            path,
            "zip end record needs a ZIP64 record that is missing",
        ));
    }
    if dir_offset
        .checked_add(dir_size)
        .is_none_or(|e| e > dir_limit)
    {
        return Err(Error::checkpoint(
            path,
            format!(
                "central directory ({dir_size} bytes at {dir_offset}) overlaps the end records at \
                 {dir_limit}"
            ),
        ));
    }
    let mut members = BTreeMap::new();
    let mut at = dir_offset;
    for index in 0..entries {
        if cur.u32(at)? != CENTRAL_HEADER_SIG {
            return Err(Error::checkpoint(
                path,
                format!("central directory entry {index} at byte {at} has a wrong signature"),
            ));
        }
        let flags = cur.u16(at + 8)?;
        let method = cur.u16(at + 10)?;
        let mut compressed_size = u64::from(cur.u32(at + 20)?);
        let mut uncompressed_size = u64::from(cur.u32(at + 24)?);
        let name_len = u64::from(cur.u16(at + 28)?);
        let extra_len = u64::from(cur.u16(at + 30)?);
        let comment_len = u64::from(cur.u16(at + 32)?);
        let mut local_header_offset = u64::from(cur.u32(at + 42)?);
        let name_bytes = cur.slice(at + 46, name_len, "member name")?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        let extra = cur.slice(at + 46 + name_len, extra_len, "extra field")?;
        apply_zip64_extra(
            extra,
            &mut uncompressed_size,
            &mut compressed_size,
            &mut local_header_offset,
        );
        members.insert(
            name,
            Member {
                local_header_offset,
                compressed_size,
                uncompressed_size,
                method,
                flags,
            },
        );
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(members)
}

/// The last end-of-central-directory record whose comment ends exactly at the end of the file.
fn find_end_record(bytes: &[u8]) -> Option<usize> {
    let last = bytes.len() - END_LEN;
    let first = last.saturating_sub(u16::MAX as usize);
    (first..=last).rev().find(|&at| {
        let sig = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let comment = u16::from_le_bytes([bytes[at + 20], bytes[at + 21]]) as usize;
        sig == END_SIG && at + END_LEN + comment == bytes.len()
    })
}

/// Replaces the 32-bit fields saturated at 0xFFFFFFFF by their ZIP64 values, in the order the
/// format stores them (uncompressed size, compressed size, local header offset).
fn apply_zip64_extra(extra: &[u8], usize_: &mut u64, csize: &mut u64, offset: &mut u64) {
    let mut rest = extra;
    while rest.len() >= 4 {
        let id = u16::from_le_bytes([rest[0], rest[1]]);
        let size = u16::from_le_bytes([rest[2], rest[3]]) as usize;
        let body = &rest[4..(4 + size).min(rest.len())];
        if id == 0x0001 {
            let mut fields = body.chunks_exact(8).map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            });
            for field in [usize_, csize, offset] {
                if *field == 0xFFFF_FFFF {
                    match fields.next() {
                        Some(v) => *field = v,
                        None => break,
                    }
                }
            }
            return;
        }
        rest = &rest[(4 + size).min(rest.len())..];
    }
}
