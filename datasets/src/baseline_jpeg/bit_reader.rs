//! The bit stream of a JPEG scan: entropy-coded bytes with `FF 00` stuffing, ended by a marker.

/// Reads a scan's bits most significant first. At a marker (or the end of the data) it supplies
/// zero bits, counting them, so a scan that reads past its end is detected by [`Self::overran`]
/// instead of decoding garbage silently.
///
/// The reader is `Copy` and its out-of-line paths take and return it by value: no call sees its
/// address, so the hot loop keeps the bit buffer in registers.
#[derive(Clone, Copy)]
pub(super) struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte of `data` to load.
    pos: usize,
    /// Buffered bits, the next one at bit 63.
    bits: u64,
    /// How many bits of `bits` are buffered.
    count: u32,
    /// How many of the buffered or consumed bits since the last restart were zero padding.
    padding: u32,
    /// Whether loading stopped at a marker (or the end of the data).
    at_marker: bool,
}

impl<'a> BitReader<'a> {
    /// A reader of the entropy-coded data that starts at `data[0]`.
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            bits: 0,
            count: 0,
            padding: 0,
            at_marker: false,
        }
    }

    /// Makes at least `wanted` (≤ 57) bits available.
    #[inline(always)]
    pub(super) fn ensure(&mut self, wanted: u32) {
        if self.count < wanted {
            self.refill();
        }
    }

    /// Loads bytes until more than 56 bits are buffered: eight at once where none of them is
    /// `FF` (almost always), one at a time otherwise.
    #[inline(always)]
    fn refill(&mut self) {
        if let Some(chunk) = self.data.get(self.pos..self.pos.saturating_add(8))
            && let Ok(chunk) = <[u8; 8]>::try_from(chunk)
            && !self.at_marker
        {
            let word = u64::from_be_bytes(chunk);
            if !has_ff_byte(word) {
                // Whole bytes that fit below the buffered bits (1..=8; `count` ≤ 56 here).
                let taken = (64 - self.count) / 8;
                let kept = if taken == 8 {
                    word
                } else {
                    word & !(u64::MAX >> (8 * taken))
                };
                self.bits |= kept >> self.count;
                self.count += 8 * taken;
                self.pos += taken as usize;
                return;
            }
        }
        *self = self.refilled_bytewise();
    }

    /// [`Self::refill`] one byte at a time, through stuffing and up to a marker.
    #[cold]
    #[inline(never)]
    fn refilled_bytewise(mut self) -> Self {
        while self.count <= 56 {
            let byte = self.next_byte();
            self.bits |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
        self
    }

    /// The next data byte with stuffing removed, or 0 (counted as padding) at a marker.
    #[inline]
    fn next_byte(&mut self) -> u8 {
        if !self.at_marker {
            match self.data.get(self.pos) {
                Some(&0xFF) if self.data.get(self.pos + 1) == Some(&0) => {
                    self.pos += 2;
                    return 0xFF;
                }
                Some(&0xFF) | None => self.at_marker = true,
                Some(&byte) => {
                    self.pos += 1;
                    return byte;
                }
            }
        }
        self.padding = self.padding.saturating_add(8);
        0
    }

    /// The next `count` (1..=16) bits without consuming them; [`Self::ensure`] must have made
    /// them available.
    #[inline]
    pub(super) fn peek(&self, count: u32) -> usize {
        (self.bits >> (64 - count)) as usize
    }

    /// The buffered bits, the next one at bit 63 (at least as many as [`Self::ensure`] asked for).
    #[inline(always)]
    pub(super) fn window(&self) -> u64 {
        self.bits
    }

    /// Drops `count` buffered bits; at most as many as [`Self::ensure`] made available (every
    /// caller consumes at most 32 after ensuring 32).
    #[inline(always)]
    pub(super) fn consume(&mut self, count: u32) {
        self.bits <<= count;
        self.count = self.count.wrapping_sub(count);
    }

    /// `size` (0..=16) extra bits as a signed value (T.81 F.2.2.1).
    #[inline]
    pub(super) fn receive_extend(&mut self, size: u32) -> i32 {
        if size == 0 {
            return 0;
        }
        let bits = self.peek(size) as i32;
        self.consume(size);
        super::huffman::extend(bits, size)
    }

    /// Whether decoding has used bits that were padding past the scan's data.
    pub(super) fn overran(&self) -> bool {
        self.padding > self.count
    }

    /// The reader past restart marker `RSTn` (`n` = `index`, 0..=7) at the end of a restart
    /// interval, byte-aligned for the next one. `None` when the data does not end here with that
    /// marker (a corrupt or unusual stream).
    #[cold]
    #[inline(never)]
    pub(super) fn restarted(self, index: u8) -> Option<Self> {
        if self.overran() {
            return None;
        }
        let mut at = self.pos;
        while self.data.get(at) == Some(&0xFF) && self.data.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        if self.data.get(at) != Some(&0xFF) || self.data.get(at + 1) != Some(&(0xD0 + index)) {
            return None;
        }
        Some(Self {
            pos: at + 2,
            ..Self::new(self.data)
        })
    }
}

/// Whether any of the eight bytes of `word` is `FF` (a zero byte of `!word`).
#[inline]
fn has_ff_byte(word: u64) -> bool {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let inverted = !word;
    inverted.wrapping_sub(LOW) & !inverted & HIGH != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ff_bytes_are_found_in_every_position() {
        assert!(!has_ff_byte(0x0001_FE7F_80FE_1234));
        for byte in 0..8 {
            assert!(has_ff_byte(0xFFu64 << (8 * byte)), "byte {byte}");
            assert!(has_ff_byte(0x1234_5678_9ABC_DEF0 | (0xFFu64 << (8 * byte))));
        }
    }

    #[test]
    fn bits_come_out_in_order_across_stuffing_and_word_loads() {
        // 20 bytes: a stuffed FF 00 in the middle, then a marker.
        let mut data: Vec<u8> = (0..20u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(5))
            .collect();
        data[9] = 0xFF;
        data.insert(10, 0x00);
        data.extend_from_slice(&[0xFF, 0xD9]);
        let expected: Vec<u8> = (0..20u8)
            .map(|i| {
                if i == 9 {
                    0xFF
                } else {
                    i.wrapping_mul(37).wrapping_add(5)
                }
            })
            .collect();
        let mut reader = BitReader::new(&data);
        let mut got = Vec::new();
        // Odd-sized reads so word loads start at every bit offset, up to the last data bit.
        let mut remaining = 8 * expected.len() as u32;
        let mut bits = 0u32;
        let mut value = 0u64;
        for step in (1..=13).cycle() {
            let step = step.min(remaining);
            if step == 0 {
                break;
            }
            reader.ensure(step);
            value = (value << step) | reader.peek(step) as u64;
            reader.consume(step);
            remaining -= step;
            bits += step;
            while bits >= 8 {
                bits -= 8;
                got.push((value >> bits) as u8);
            }
        }
        assert_eq!(got, expected);
        assert!(!reader.overran());
        reader.ensure(32);
        reader.consume(32);
        assert!(reader.overran(), "reading past the marker shows");
    }
}
