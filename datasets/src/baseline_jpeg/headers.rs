//! The marker segments of a JPEG up to its first scan (ITU T.81 annex B): frame, tables, restart
//! interval, scan header; and whether the file is one the fast decoder handles.

use super::huffman::HuffmanTable;

/// One colour component of the frame.
pub(super) struct Component {
    /// Position in the frame header (0 = Y, 1 = Cb, 2 = Cr for colour files).
    pub(super) frame_index: usize,
    /// Horizontal and vertical sampling factors (1..=4).
    pub(super) sampling: (usize, usize),
    /// Quantisation table of the component, in zig-zag order.
    pub(super) quant: [f32; 64],
    /// DC and AC Huffman table slots (0..=3) the scan names.
    pub(super) tables: (usize, usize),
}

/// What decoding the first scan needs: a baseline or extended sequential frame with 8-bit
/// samples, one (grey) or three (YCbCr) components, all in that one scan.
pub(super) struct Headers<'a> {
    pub(super) width: usize,
    pub(super) height: usize,
    /// The components in the order the scan interleaves them.
    pub(super) components: Vec<Component>,
    pub(super) dc_tables: [Option<Box<HuffmanTable>>; 4],
    pub(super) ac_tables: [Option<Box<HuffmanTable>>; 4],
    /// MCUs per restart interval, 0 for none.
    pub(super) restart_interval: usize,
    /// The bytes from the first entropy-coded byte to the end of the file.
    pub(super) scan: &'a [u8],
}

/// A frame component as its SOF segment declares it, before the scan assigns tables.
struct FrameComponent {
    id: u8,
    sampling: (usize, usize),
    quant_slot: usize,
}

/// Reads the segments of `bytes` up to the first scan. `None` for anything the fast decoder
/// leaves to the general one: progressive, lossless, hierarchical or arithmetic coding, 12-bit
/// samples, CMYK or RGB colour, scans with only some components, or any malformed segment.
pub(super) fn parse(bytes: &[u8]) -> Option<Headers<'_>> {
    if bytes.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut quant: [Option<[u16; 64]>; 4] = [None; 4];
    let mut dc_tables: [Option<Box<HuffmanTable>>; 4] = Default::default();
    let mut ac_tables: [Option<Box<HuffmanTable>>; 4] = Default::default();
    let mut frame: Option<(usize, usize, Vec<FrameComponent>)> = None;
    let mut restart_interval = 0;
    let mut adobe_transform = None;
    let mut pos = 2;
    loop {
        if *bytes.get(pos)? != 0xFF {
            return None;
        }
        while bytes.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let marker = *bytes.get(pos)?;
        pos += 1;
        if matches!(marker, 0x01 | 0xD0..=0xD7) {
            continue;
        }
        let length = usize::from(be16(bytes, pos)?);
        let body = bytes.get(pos.checked_add(2)?..pos.checked_add(length)?)?;
        pos += length;
        match marker {
            0xC0 | 0xC1 if frame.is_none() => frame = Some(parse_frame(body)?),
            0xC4 => parse_huffman_tables(body, &mut dc_tables, &mut ac_tables)?,
            0xDB => parse_quant_tables(body, &mut quant)?,
            0xDD => restart_interval = usize::from(be16(body, 0)?),
            0xEE if body.starts_with(b"Adobe") => adobe_transform = Some(*body.get(11)?),
            0xDA => {
                let (width, height, frame_components) = frame?;
                let rgb_ids = frame_components.iter().map(|c| c.id).eq(*b"RGB");
                if frame_components.len() == 3 && (adobe_transform == Some(0) || rgb_ids) {
                    return None;
                }
                let components = parse_scan(body, &frame_components, &quant)?;
                return Some(Headers {
                    width,
                    height,
                    components,
                    dc_tables,
                    ac_tables,
                    restart_interval,
                    scan: bytes.get(pos..)?,
                });
            }
            // Other frame types (progressive, lossless, arithmetic), a second frame, the
            // arithmetic conditioning table, or the end of the image before any scan.
            0xC0..=0xCF | 0xD8 | 0xD9 => return None,
            _ => {}
        }
    }
}

/// Big-endian u16 at `at`.
fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([
        *bytes.get(at)?,
        *bytes.get(at.checked_add(1)?)?,
    ]))
}

/// SOF0 / SOF1 body: 8-bit precision, nonzero size, one or three components.
fn parse_frame(body: &[u8]) -> Option<(usize, usize, Vec<FrameComponent>)> {
    let (precision, height, width) = (*body.first()?, be16(body, 1)?, be16(body, 3)?);
    let count = usize::from(*body.get(5)?);
    if precision != 8 || height == 0 || width == 0 || !matches!(count, 1 | 3) {
        return None;
    }
    if body.len() != 6 + 3 * count {
        return None;
    }
    let components = body[6..]
        .chunks_exact(3)
        .map(|c| {
            let sampling = (usize::from(c[1] >> 4), usize::from(c[1] & 0x0F));
            let valid = (1..=4).contains(&sampling.0) && (1..=4).contains(&sampling.1);
            (valid && c[2] < 4).then_some(FrameComponent {
                id: c[0],
                // A lone component is not interleaved: its blocks go in raster order whatever
                // its factors say.
                sampling: if count == 1 { (1, 1) } else { sampling },
                quant_slot: usize::from(c[2]),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some((usize::from(width), usize::from(height), components))
}

/// DHT body: one or more tables.
fn parse_huffman_tables(
    mut body: &[u8],
    dc_tables: &mut [Option<Box<HuffmanTable>>; 4],
    ac_tables: &mut [Option<Box<HuffmanTable>>; 4],
) -> Option<()> {
    while !body.is_empty() {
        let (class, slot) = (body[0] >> 4, usize::from(body[0] & 0x0F));
        let counts: &[u8; 16] = body.get(1..17)?.try_into().ok()?;
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        let symbols = body.get(17..17 + total)?;
        let table = HuffmanTable::new(counts, symbols)?;
        match (class, slot) {
            (0, 0..=3) => dc_tables[slot] = Some(table),
            (1, 0..=3) => ac_tables[slot] = Some(table),
            _ => return None,
        }
        body = &body[17 + total..];
    }
    Some(())
}

/// DQT body: one or more tables of 8- or 16-bit steps, in zig-zag order.
fn parse_quant_tables(mut body: &[u8], quant: &mut [Option<[u16; 64]>; 4]) -> Option<()> {
    while !body.is_empty() {
        let (precision, slot) = (body[0] >> 4, usize::from(body[0] & 0x0F));
        let mut table = [0u16; 64];
        let used = match precision {
            0 => {
                let steps = body.get(1..65)?;
                for (step, &byte) in table.iter_mut().zip(steps) {
                    *step = u16::from(byte);
                }
                65
            }
            1 => {
                let steps = body.get(1..129)?;
                for (step, pair) in table.iter_mut().zip(steps.chunks_exact(2)) {
                    *step = u16::from_be_bytes([pair[0], pair[1]]);
                }
                129
            }
            _ => return None,
        };
        *quant.get_mut(slot)? = Some(table);
        body = &body[used..];
    }
    Some(())
}

/// SOS body: the scan must hold every frame component once, sequential DCT (spectral range
/// 0..=63, no successive approximation), with defined tables.
fn parse_scan(
    body: &[u8],
    frame: &[FrameComponent],
    quant: &[Option<[u16; 64]>; 4],
) -> Option<Vec<Component>> {
    let count = usize::from(*body.first()?);
    if count != frame.len() || body.len() != 1 + 2 * count + 3 {
        return None;
    }
    if body[1 + 2 * count..] != [0, 63, 0] {
        return None;
    }
    let mut seen = [false; 3];
    body[1..1 + 2 * count]
        .chunks_exact(2)
        .map(|selector| {
            let index = frame.iter().position(|c| c.id == selector[0])?;
            if std::mem::replace(&mut seen[index], true) {
                return None;
            }
            let component = &frame[index];
            let steps = quant[component.quant_slot]?;
            let tables = (
                usize::from(selector[1] >> 4),
                usize::from(selector[1] & 0x0F),
            );
            if tables.0 > 3 || tables.1 > 3 {
                return None;
            }
            Some(Component {
                frame_index: index,
                sampling: component.sampling,
                quant: steps.map(f32::from),
                tables,
            })
        })
        .collect()
}
