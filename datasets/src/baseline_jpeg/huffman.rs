//! Huffman tables of a JPEG scan (ITU T.81 annex C) and the lookups that decode with them.

use super::bit_reader::BitReader;

/// Bits of look-ahead the direct tables cover: every code this long or shorter decodes with one
/// table read.
pub(super) const LOOKUP_BITS: u32 = 10;

/// One DC or AC Huffman table, built from a DHT segment's 16 code counts and its symbols.
pub(super) struct HuffmanTable {
    /// For each `LOOKUP_BITS`-bit prefix: `code length << 8 | symbol`, or 0 where the code is
    /// longer than the prefix (or the prefix is no code).
    lookup: [u16; 1 << LOOKUP_BITS],
    /// For each prefix that holds a whole AC code *and* its extra bits: `value << 16 | run << 8 |
    /// bits used`, where an end of block has run [`END_OF_BLOCK_RUN`] and a 16-zero run has run
    /// 15 and value 0; 0 otherwise (long codes, large values).
    coefficient: [i32; 1 << LOOKUP_BITS],
    /// Largest code of each length (index = length), −1 where no code has that length.
    max_code: [i32; 17],
    /// Index into `symbols` of a code of each length, minus that code.
    symbol_offset: [i32; 17],
    symbols: [u8; 256],
}

impl HuffmanTable {
    /// The table with `counts[l - 1]` codes of length `l` assigned to `symbols` in order (the
    /// canonical code of annex C), or `None` when the counts do not match the symbols or ask for
    /// more codes of some length than the code space holds.
    pub(super) fn new(counts: &[u8; 16], symbols: &[u8]) -> Option<Box<Self>> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total != symbols.len() || total > 256 {
            return None;
        }
        let mut table = Box::new(Self {
            lookup: [0; 1 << LOOKUP_BITS],
            coefficient: [0; 1 << LOOKUP_BITS],
            max_code: [-1; 17],
            symbol_offset: [0; 17],
            symbols: [0; 256],
        });
        table.symbols[..total].copy_from_slice(symbols);
        let mut code: u32 = 0;
        let mut index: usize = 0;
        for length in 1..=16u32 {
            let count = u32::from(counts[length as usize - 1]);
            table.symbol_offset[length as usize] = index as i32 - code as i32;
            if count > 0 {
                if code + count > 1 << length {
                    return None;
                }
                table.max_code[length as usize] = (code + count - 1) as i32;
            }
            for _ in 0..count {
                if length <= LOOKUP_BITS {
                    let shift = LOOKUP_BITS - length;
                    let first = (code << shift) as usize;
                    let entry = (length << 8) as u16 | u16::from(symbols[index]);
                    table.lookup[first..first + (1 << shift)].fill(entry);
                }
                code += 1;
                index += 1;
            }
            code <<= 1;
        }
        table.fill_coefficient_lookup();
        Some(table)
    }

    /// Fills `coefficient` for every prefix whose AC code and extra bits both fit in it.
    fn fill_coefficient_lookup(&mut self) {
        for prefix in 0..1u32 << LOOKUP_BITS {
            let entry = u32::from(self.lookup[prefix as usize]);
            if entry == 0 {
                continue;
            }
            let (length, symbol) = (entry >> 8, entry & 0xFF);
            let size = symbol & 0x0F;
            if length + size > LOOKUP_BITS {
                continue;
            }
            let extra = (prefix >> (LOOKUP_BITS - length - size)) & ((1 << size) - 1);
            let (run, value) = run_and_value(symbol as u8, extra as i32);
            self.coefficient[prefix as usize] =
                (value << 16) | ((run as i32) << 8) | (length + size) as i32;
        }
    }

    /// Decodes one symbol; the reader must hold at least 16 bits. `None` for a bit pattern that
    /// is no code of this table.
    #[inline(always)]
    pub(super) fn decode_symbol(&self, reader: &mut BitReader<'_>) -> Option<u8> {
        let entry = self.lookup[reader.peek(LOOKUP_BITS)];
        let (length, symbol) = if entry != 0 {
            (u32::from(entry >> 8), entry as u8)
        } else {
            self.decode_long_symbol(reader.peek(16) as u32)?
        };
        reader.consume(length);
        Some(symbol)
    }

    /// The next AC coefficient as `(zero run, value)` (T.81 F.2.2.2), its bits consumed; an end
    /// of block comes back as run [`END_OF_BLOCK_RUN`], a 16-zero run as run 15 with value 0.
    /// The reader must hold at least 32 bits. `None` for a bit pattern that is no code.
    #[inline(always)]
    pub(super) fn decode_coefficient(&self, reader: &mut BitReader<'_>) -> Option<(usize, i32)> {
        let entry = self.coefficient[reader.peek(LOOKUP_BITS)];
        let (used, run, value) = if entry != 0 {
            (
                (entry & 0xFF) as u32,
                ((entry >> 8) & 0xFF) as u32,
                entry >> 16,
            )
        } else {
            self.decode_long_coefficient(reader.window())?
        };
        reader.consume(used);
        Some((run as usize, value))
    }

    /// For codes or values too long for the direct table: `(bits used, run, value)` of the
    /// coefficient at the top of `window` (≥ 32 valid bits).
    #[cold]
    #[inline(never)]
    fn decode_long_coefficient(&self, window: u64) -> Option<(u32, u32, i32)> {
        let (length, symbol) = self.decode_long_symbol((window >> 48) as u32)?;
        let size = u32::from(symbol & 0x0F);
        let extra = ((window << length) >> 32) as u32;
        let extra = if size == 0 {
            0
        } else {
            (extra >> (32 - size)) as i32
        };
        let (run, value) = run_and_value(symbol, extra);
        Some((length + size, run, value))
    }

    /// `(code length, symbol)` of a code longer than [`LOOKUP_BITS`] (or of any code) at the
    /// top of the 16-bit `window`.
    fn decode_long_symbol(&self, window: u32) -> Option<(u32, u8)> {
        let entry = self.lookup[(window >> (16 - LOOKUP_BITS)) as usize];
        if entry != 0 {
            return Some((u32::from(entry >> 8), entry as u8));
        }
        for length in LOOKUP_BITS + 1..=16 {
            let code = (window >> (16 - length)) as i32;
            if code <= self.max_code[length as usize] {
                let index = code + self.symbol_offset[length as usize];
                let symbol = *self.symbols.get(usize::try_from(index).ok()?)?;
                return Some((length, symbol));
            }
        }
        None
    }
}

/// The run added to the coefficient index for an end of block: it takes any index of the block
/// past 64, and no real run (≤ 15 + 1 from index ≤ 63) reaches that far.
pub(super) const END_OF_BLOCK_RUN: u32 = 128;

/// `(run, value)` of AC symbol `symbol` with extra bits `extra`: the zero run before the value
/// (15 with value 0 for the 16-zero symbol `F0`, [`END_OF_BLOCK_RUN`] for the other size-0
/// symbols, which T.81 defines only as `00`).
#[inline]
fn run_and_value(symbol: u8, extra: i32) -> (u32, i32) {
    let (run, size) = (u32::from(symbol >> 4), u32::from(symbol & 0x0F));
    match (run, size) {
        (15, 0) => (15, 0),
        (_, 0) => (END_OF_BLOCK_RUN, 0),
        _ => (run, extend(extra, size)),
    }
}

/// The signed value of `size` extra bits `bits` (T.81 figure F.12): the lower half of the range
/// stands for negative values.
#[inline]
pub(super) fn extend(bits: i32, size: u32) -> i32 {
    if size == 0 {
        0
    } else if bits < 1 << (size - 1) {
        bits - (1 << size) + 1
    } else {
        bits
    }
}
