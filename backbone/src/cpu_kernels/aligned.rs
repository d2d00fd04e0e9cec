//! A growable buffer of 32-bit words that starts on a cache line, for packed operands whose rows
//! the products load 64 bytes at a time: an AMX tile row that straddles two cache lines costs two
//! loads. In a microbenchmark of the 3×3 layers' products on one core of a Xeon with AMX, operands
//! whose buffers started 16 bytes off a line ran at 0.7-0.9 TFLOP/s, line-aligned ones at 1.3-1.5
//! (and at 1.75-2.2 where every tap's rows were aligned too).
//!
//! Large buffers (from [`HUGE_PAGE_BYTES`] on), and any made by [`AlignedWords::on_huge_pages`],
//! are mapped on their own and, on Linux, offered transparent huge pages: an AMX tile of image
//! columns reads 16 rows one pair plane apart (up to 14 KB), i.e. 16 different 4 KiB pages. In the
//! same microbenchmark that took the 64-channel 3×3 layer at 56 × 56 from 2.2 to 2.4 TFLOP/s; in
//! whole passes no difference showed (the allocator's own arenas already sit on huge pages).
//! Where the kernel gives no huge pages the mapping is an ordinary one.

use std::ops::{Deref, DerefMut};

/// Words per cache line.
const LINE_WORDS: usize = 16;
/// A huge page; buffers of at least this size get a mapping of their own.
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// One cache line of words.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([u32; LINE_WORDS]);

/// Where the words are.
enum Storage {
    /// Small buffers: whole lines on the heap.
    Lines(Vec<Line>),
    /// Large buffers: an anonymous mapping of their own.
    #[cfg(unix)]
    Mapped(Mapping),
}

/// Words on whole cache lines, the first at a 64-byte boundary; dereferences to its `len`
/// words.
pub struct AlignedWords {
    storage: Storage,
    len: usize,
    /// Whether even small sizes get a mapping of their own (with huge pages).
    huge: bool,
}

impl Default for AlignedWords {
    fn default() -> Self {
        Self {
            storage: Storage::Lines(Vec::new()),
            len: 0,
            huge: false,
        }
    }
}

impl AlignedWords {
    /// An empty buffer whose storage, whatever its size, is a mapping of its own offered huge
    /// pages (for operands read with large strides; each takes at least 2 MiB).
    pub fn on_huge_pages() -> Self {
        Self {
            huge: true,
            ..Self::default()
        }
    }

    /// Words the storage holds.
    fn capacity(&self) -> usize {
        match &self.storage {
            Storage::Lines(lines) => lines.len() * LINE_WORDS,
            #[cfg(unix)]
            Storage::Mapped(mapping) => mapping.words,
        }
    }

    /// Sets the length to `len`: words kept up to the old length, `value` after it.
    pub fn resize(&mut self, len: usize, value: u32) {
        let old = self.len;
        if len > self.capacity() {
            let mut grown = Self {
                storage: Storage::with_capacity(len.max(old.saturating_mul(5) / 4), self.huge),
                len: old,
                huge: self.huge,
            };
            grown[..old].copy_from_slice(&self[..old]);
            *self = grown;
        }
        self.len = len;
        if len > old {
            self[old..].fill(value);
        }
    }

    fn data_ptr(&self) -> *const u32 {
        match &self.storage {
            Storage::Lines(lines) => lines.as_ptr().cast(),
            #[cfg(unix)]
            Storage::Mapped(mapping) => mapping.data.cast_const(),
        }
    }
}

impl Storage {
    /// Room for at least `words` words (zeroed), mapped if `huge` or large.
    fn with_capacity(words: usize, huge: bool) -> Self {
        let bytes = words
            .checked_mul(4)
            .expect("aligned buffer: size overflows");
        #[cfg(unix)]
        if (huge || bytes >= HUGE_PAGE_BYTES)
            && let Some(mapping) = Mapping::new(bytes)
        {
            return Self::Mapped(mapping);
        }
        let _ = (bytes, huge);
        Self::Lines(vec![Line::default(); words.div_ceil(LINE_WORDS)])
    }
}

impl Deref for AlignedWords {
    type Target = [u32];

    fn deref(&self) -> &[u32] {
        #[allow(unsafe_code)]
        // A `Line` is `repr(C)` around `[u32; 16]` with no padding; a mapping is zero-filled.
        // SAFETY: the storage holds `capacity() ≥ len` initialised, 64-byte aligned words.
        unsafe {
            std::slice::from_raw_parts(self.data_ptr(), self.len)
        }
    }
}

impl DerefMut for AlignedWords {
    fn deref_mut(&mut self) -> &mut [u32] {
        #[allow(unsafe_code)]
        // SAFETY: as in `deref`; the borrow of the storage is exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(self.data_ptr().cast_mut(), self.len)
        }
    }
}

/// An anonymous private mapping whose data starts on a huge-page boundary, offered huge pages
/// (`madvise(MADV_HUGEPAGE)`, Linux); unmapped on drop.
#[cfg(unix)]
struct Mapping {
    base: *mut libc::c_void,
    bytes: usize,
    /// The first word, `HUGE_PAGE_BYTES`-aligned inside the mapping.
    data: *mut u32,
    /// Words from `data` to the end of the mapping.
    words: usize,
}

// SAFETY: the mapping is owned by its `Mapping` alone (as a `Vec` owns its allocation); shared
// references only read it.
#[cfg(unix)]
#[allow(unsafe_code)]
unsafe impl Send for Mapping {}
#[cfg(unix)]
#[allow(unsafe_code)]
unsafe impl Sync for Mapping {}

#[cfg(unix)]
impl Mapping {
    /// A mapping with room for `bytes` from a huge-page boundary, or `None` if the system
    /// refuses it.
    fn new(bytes: usize) -> Option<Self> {
        let data_bytes = bytes.checked_next_multiple_of(HUGE_PAGE_BYTES)?;
        let total = data_bytes.checked_add(HUGE_PAGE_BYTES)?;
        #[allow(unsafe_code)]
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let skip = (base as usize).next_multiple_of(HUGE_PAGE_BYTES) - base as usize;
        #[allow(unsafe_code)]
        // SAFETY: `skip < HUGE_PAGE_BYTES`: `data` and `data_bytes` after it lie in the mapping.
        let data = unsafe { base.cast::<u8>().add(skip) };
        #[cfg(target_os = "linux")]
        #[allow(unsafe_code)]
        // SAFETY: advice on a range of this mapping; failure (no THP support) changes nothing.
        unsafe {
            libc::madvise(data.cast(), data_bytes, libc::MADV_HUGEPAGE);
        }
        Some(Self {
            base,
            bytes: total,
            data: data.cast(),
            words: (total - skip) / 4,
        })
    }
}

#[cfg(unix)]
impl Drop for Mapping {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: `base` and `bytes` are the mapping made in `new`, unmapped once here; no
        // reference into it outlives its owner.
        unsafe {
            libc::munmap(self.base, self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_start_on_a_cache_line_and_keep_their_values_when_grown() {
        let mut words = AlignedWords::default();
        assert!(words.is_empty());
        words.resize(5, 7);
        assert_eq!(&words[..], &[7; 5]);
        assert_eq!(words.as_ptr() as usize % 64, 0);
        words[4] = 9;
        words.resize(40, 1);
        assert_eq!(words.len(), 40);
        assert_eq!(&words[..6], &[7, 7, 7, 7, 9, 1]);
        assert!(words[6..].iter().all(|&w| w == 1));
        assert_eq!(words.as_ptr() as usize % 64, 0);
        words.resize(3, 0);
        assert_eq!(&words[..], &[7, 7, 7]);
        // Growing again refills what shrinking cut off.
        words.resize(17, 2);
        assert_eq!(
            &words[..],
            &[7, 7, 7, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
        );
    }

    #[test]
    fn buffers_asked_for_huge_pages_are_mapped_whatever_their_size() {
        let mut words = AlignedWords::on_huge_pages();
        words.resize(100, 1);
        #[cfg(unix)]
        {
            assert!(matches!(words.storage, Storage::Mapped(_)));
            assert_eq!(words.as_ptr() as usize % HUGE_PAGE_BYTES, 0);
        }
        assert!(words.iter().all(|&w| w == 1));
    }

    #[test]
    fn large_buffers_are_mapped_on_a_huge_page_boundary_and_keep_their_values() {
        let mut words = AlignedWords::default();
        words.resize(1000, 3);
        words[999] = 4;
        // 4 MiB: past the mapping threshold.
        words.resize(1 << 20, 5);
        #[cfg(unix)]
        {
            assert!(matches!(words.storage, Storage::Mapped(_)));
            assert_eq!(words.as_ptr() as usize % HUGE_PAGE_BYTES, 0);
        }
        assert_eq!(words[998..1001], [3, 4, 5]);
        assert!(words[1001..].iter().all(|&w| w == 5));
        words[(1 << 20) - 1] = 6;
        // Grown again inside the mapping's rounding, and past it.
        words.resize((1 << 20) + 10, 7);
        assert_eq!(words[(1 << 20) - 1..(1 << 20) + 1], [6, 7]);
        words.resize(3 << 20, 8);
        assert_eq!(words[(1 << 20) - 1..(1 << 20) + 1], [6, 7]);
        assert_eq!(words[(3 << 20) - 1], 8);
    }
}
