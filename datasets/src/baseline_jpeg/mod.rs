//! A fast decoder for the JPEGs cameras and phones write — sequential Huffman-coded, 8-bit, grey
//! or YCbCr in one interleaved scan — that produces the image at 1/2, 1/4 or 1/8 of its size.
//!
//! At these scales a block needs only its 4×4, 2×2 or 1×1 lowest frequencies, but every
//! coefficient must still be entropy-decoded, and that is where a reduced decode spends its time.
//! This decoder's Huffman lookups decode most coefficients (code and value together) with one
//! table read; the general decoder (`jpeg-decoder`) takes two reads and a call per coefficient.
//! Anything outside the layouts above (progressive, arithmetic, 12-bit, CMYK, chroma factors
//! other than 1 and 2, partial scans) and any stream that does not decode cleanly returns
//! `None`, and the caller hands the file to the general decoder, which has the last word.

mod bit_reader;
mod colour;
mod headers;
mod huffman;
mod scaled_idct;

use bit_reader::BitReader;
use colour::Plane;
use headers::Headers;
use huffman::{END_OF_BLOCK_RUN, HuffmanTable};
use scaled_idct::Coefficients;

/// A decoded image: `height` rows of `width` pixels of `channels` (1 or 3) bytes.
pub(crate) struct ScaledImage {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) channels: usize,
    pub(crate) pixels: Vec<u8>,
}

/// Natural (row-major) position of each zig-zag coefficient index (T.81 figure A.6).
const ZIGZAG: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// The slot of `decode_block`'s buffer that takes the coefficients the reduced transform does
/// not use (slots `0..SPARE` hold the n×n kept ones).
const SPARE: usize = 16;

/// Decodes `bytes` at `1/denominator` (8, 4 or 2) of its size, each side rounded up, when the
/// file is one this decoder handles and its planes and pixels fit in `max_bytes`; `None`
/// otherwise (see the module docs).
pub(crate) fn decode_scaled(
    bytes: &[u8],
    denominator: u32,
    max_bytes: usize,
) -> Option<ScaledImage> {
    let n = match denominator {
        8 => 1,
        4 => 2,
        2 => 4,
        _ => return None,
    };
    let headers = headers::parse(bytes)?;
    let layout = Layout::new(&headers, n, denominator as usize)?;
    if layout.bytes > max_bytes {
        return None;
    }
    let mut planes = decode_planes(&headers, &layout, n)?;
    let (width, height) = (
        headers.width.div_ceil(denominator as usize),
        headers.height.div_ceil(denominator as usize),
    );
    let (channels, pixels) = if let [(_, plane)] = planes.as_slice() {
        (1, colour::grey(plane, width, height))
    } else {
        planes.sort_by_key(|(index, _)| *index);
        let [y, cb, cr]: [Plane; 3] = planes
            .into_iter()
            .map(|(_, p)| p)
            .collect::<Vec<_>>()
            .try_into()
            .ok()?;
        (3, colour::rgb(&[y, cb, cr], width, height))
    };
    Some(ScaledImage {
        width,
        height,
        channels,
        pixels,
    })
}

/// Block geometry of the scan.
struct Layout {
    /// MCUs per row and MCU rows.
    mcus: (usize, usize),
    /// Largest horizontal and vertical sampling factors.
    max_sampling: (usize, usize),
    /// Bytes of all planes plus the output pixels.
    bytes: usize,
}

impl Layout {
    /// `None` when a component's sampling factor does not divide the largest one by 1 or 2, or
    /// the sizes overflow.
    fn new(headers: &Headers<'_>, n: usize, denominator: usize) -> Option<Self> {
        let max_h = headers.components.iter().map(|c| c.sampling.0).max()?;
        let max_v = headers.components.iter().map(|c| c.sampling.1).max()?;
        let ratio_ok = |max: usize, s: usize| max.is_multiple_of(s) && matches!(max / s, 1 | 2);
        if !headers
            .components
            .iter()
            .all(|c| ratio_ok(max_h, c.sampling.0) && ratio_ok(max_v, c.sampling.1))
        {
            return None;
        }
        let mcus = (
            headers.width.div_ceil(8 * max_h),
            headers.height.div_ceil(8 * max_v),
        );
        let mut bytes = (headers.width.div_ceil(denominator))
            .checked_mul(headers.height.div_ceil(denominator))?
            .checked_mul(3)?;
        for c in &headers.components {
            let plane = (mcus.0 * c.sampling.0 * n).checked_mul(mcus.1 * c.sampling.1 * n)?;
            bytes = bytes.checked_add(plane)?;
        }
        Some(Self {
            mcus,
            max_sampling: (max_h, max_v),
            bytes,
        })
    }
}

/// Entropy-decodes the scan and writes each block's n×n samples into its component's plane.
/// Returns `(frame index, plane)` per component, or `None` for a stream that does not decode
/// cleanly (bad codes, coefficients past the block, wrong restart markers, data ending early).
fn decode_planes(headers: &Headers<'_>, layout: &Layout, n: usize) -> Option<Vec<(usize, Plane)>> {
    let mut slots = [SPARE as u8; 256];
    for (k, &natural) in ZIGZAG.iter().enumerate() {
        let (row, col) = (usize::from(natural) / 8, usize::from(natural) % 8);
        if row < n && col < n {
            slots[k] = (row * n + col) as u8;
        }
    }
    let (mcus_x, mcus_y) = layout.mcus;
    let mut planes = Vec::with_capacity(headers.components.len());
    let mut tables = Vec::with_capacity(headers.components.len());
    for c in &headers.components {
        let (h, v) = c.sampling;
        let stride = mcus_x * h * n;
        let full = (
            (headers.width * h).div_ceil(layout.max_sampling.0),
            (headers.height * v).div_ceil(layout.max_sampling.1),
        );
        planes.push(Plane {
            samples: vec![0u8; stride * mcus_y * v * n],
            stride,
            width: (full.0 * n).div_ceil(8),
            height: (full.1 * n).div_ceil(8),
            factor: (layout.max_sampling.0 / h, layout.max_sampling.1 / v),
        });
        // Quantiser steps of the kept coefficients, by slot.
        let mut steps = [0f32; SPARE];
        for (&slot, &step) in slots.iter().zip(&c.quant) {
            if let Some(kept) = steps.get_mut(usize::from(slot)) {
                *kept = step;
            }
        }
        tables.push((
            headers.dc_tables[c.tables.0].as_deref()?,
            headers.ac_tables[c.tables.1].as_deref()?,
            steps,
        ));
    }
    // A lone component is not interleaved: its scan covers the blocks inside its own size, which
    // are the MCUs above because `headers` gives it sampling (1, 1).
    let mut reader = BitReader::new(headers.scan);
    let mut predictions = [0i32; 3];
    let mut block: Coefficients = [0; 32];
    let mut next_restart = 0u8;
    for mcu in 0..mcus_x * mcus_y {
        if headers.restart_interval > 0 && mcu > 0 && mcu % headers.restart_interval == 0 {
            reader = reader.restarted(next_restart)?;
            next_restart = (next_restart + 1) % 8;
            predictions = [0; 3];
        }
        let (mx, my) = (mcu % mcus_x, mcu / mcus_x);
        for (((c, plane), &(dc, ac, ref steps)), prediction) in headers
            .components
            .iter()
            .zip(planes.iter_mut())
            .zip(&tables)
            .zip(predictions.iter_mut())
        {
            let (h, v) = c.sampling;
            for by in 0..v {
                for bx in 0..h {
                    decode_block(&mut reader, dc, ac, &slots, prediction, &mut block)?;
                    let (col, row) = ((mx * h + bx) * n, (my * v + by) * n);
                    let at = row * plane.stride + col;
                    scaled_idct::block_to_samples(
                        &block,
                        steps,
                        n,
                        &mut plane.samples[at..],
                        plane.stride,
                    );
                }
            }
        }
    }
    if reader.overran() {
        return None;
    }
    Some(
        headers
            .components
            .iter()
            .map(|c| c.frame_index)
            .zip(planes)
            .collect(),
    )
}

/// Decodes one block's coefficients (T.81 F.2.2) and keeps the quantised values the n×n
/// transform uses in `block` (`block[row·n + col]`; the others, and the end of block, go to
/// `block[SPARE]`). `None` for an invalid code or a run past the 64th coefficient.
#[inline]
fn decode_block(
    reader: &mut BitReader<'_>,
    dc: &HuffmanTable,
    ac: &HuffmanTable,
    slots: &[u8; 256],
    prediction: &mut i32,
    block: &mut Coefficients,
) -> Option<()> {
    block.fill(0);
    reader.ensure(32);
    let size = u32::from(dc.decode_symbol(reader)?);
    if size > 11 {
        return None;
    }
    *prediction = prediction.wrapping_add(reader.receive_extend(size));
    block[0] = *prediction;
    let mut k = 1;
    while k < 64 {
        reader.ensure(32);
        let (run, value) = ac.decode_coefficient(reader)?;
        k += run;
        // Unused coefficients land in the spare slot: no branch on which ones are kept.
        block[usize::from(slots[k & 0xFF]) & 31] = value;
        k += 1;
    }
    // 64: the last coefficient was coded; past END_OF_BLOCK_RUN: an end of block. In between:
    // a run past the last coefficient.
    if (65..=END_OF_BLOCK_RUN as usize).contains(&k) {
        return None;
    }
    Some(())
}

#[cfg(test)]
mod tests;
