//! Drawing detections onto images: a coloured frame per box and a label with the class name and
//! score, text in the embedded DejaVu Sans. Small images are enlarged first so labels stay
//! legible.

use ab_glyph::{FontRef, PxScale};
use anyhow::{Context, Result};
use image::{Rgb, RgbImage, imageops};
use imageproc::drawing::{draw_filled_rect_mut, draw_hollow_rect_mut, draw_text_mut, text_size};
use imageproc::rect::Rect;
use tresnet_heads::detection::BoxXyxy;

const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Colours cycled over class indices (well apart in hue, readable with white text).
const PALETTE: [[u8; 3]; 10] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [0, 128, 128],
    [240, 50, 230],
    [128, 128, 0],
    [170, 110, 40],
    [0, 0, 128],
];

/// One box to draw, in the image's own pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct DrawnBox {
    /// Class index (picks the colour).
    pub class: usize,
    /// Text of the label (e.g. `"star 0.93"`).
    pub label: String,
    /// `[x1, y1, x2, y2]`.
    pub bbox: BoxXyxy,
}

/// Largest enlarged canvas (16 M pixels): enlarging stops at the factor that stays below it.
pub const MAX_ENLARGED_PIXELS: u64 = 1 << 24;

/// The image enlarged to at least 256 pixels on its shorter side (integer factor, at most 8, and
/// no larger than keeps the canvas within [`MAX_ENLARGED_PIXELS`]; nearest neighbour so pixels
/// stay pixels), with `boxes` drawn on it.
pub fn draw_boxes(image: &RgbImage, boxes: &[DrawnBox]) -> Result<RgbImage> {
    let font = FontRef::try_from_slice(FONT).context("the embedded font is invalid")?;
    let short = image.width().min(image.height()).max(1);
    let pixels = u64::from(image.width()) * u64::from(image.height());
    let mut factor = 256u32.div_ceil(short).clamp(1, 8);
    while factor > 1 && pixels * u64::from(factor * factor) > MAX_ENLARGED_PIXELS {
        factor -= 1;
    }
    let mut canvas = imageops::resize(
        image,
        image.width() * factor,
        image.height() * factor,
        imageops::FilterType::Nearest,
    );
    let f = factor as f32;
    let text_px = (canvas.width().min(canvas.height()) as f32 / 22.0).clamp(11.0, 28.0);
    let scale = PxScale::from(text_px);
    for b in boxes {
        let colour = Rgb(PALETTE[b.class % PALETTE.len()]);
        // Boxes come from a model or a results file: clamp them to the canvas (NaN and huge
        // coordinates included) before they become pixel rectangles.
        let (cw, ch) = (canvas.width() as f32, canvas.height() as f32);
        let clamp = |v: f32, max: f32| if v.is_nan() { 0.0 } else { v.clamp(0.0, max) };
        let (x1f, y1f) = (
            clamp(b.bbox[0] * f, cw - 1.0),
            clamp(b.bbox[1] * f, ch - 1.0),
        );
        let (x2f, y2f) = (clamp(b.bbox[2] * f, cw), clamp(b.bbox[3] * f, ch));
        let x1 = x1f.round() as i32;
        let y1 = y1f.round() as i32;
        let w = (x2f - x1f).round().max(1.0) as u32;
        let h = (y2f - y1f).round().max(1.0) as u32;
        for inset in 0..2u32 {
            if w > 2 * inset && h > 2 * inset {
                draw_hollow_rect_mut(
                    &mut canvas,
                    Rect::at(x1 + inset as i32, y1 + inset as i32)
                        .of_size(w - 2 * inset, h - 2 * inset),
                    colour,
                );
            }
        }
        let (tw, th) = text_size(scale, &font, &b.label);
        // The label sits above the box, or inside its top edge when there is no room above.
        let label_y = if y1 >= th as i32 + 4 {
            y1 - th as i32 - 4
        } else {
            y1
        };
        draw_filled_rect_mut(
            &mut canvas,
            Rect::at(x1, label_y).of_size(tw + 6, th + 4),
            colour,
        );
        draw_text_mut(
            &mut canvas,
            Rgb([255, 255, 255]),
            x1 + 3,
            label_y + 1,
            scale,
            &font,
            &b.label,
        );
    }
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_is_framed_in_its_class_colour_and_small_images_are_enlarged() {
        let image = RgbImage::from_pixel(64, 48, Rgb([0, 0, 0]));
        let drawn = draw_boxes(
            &image,
            &[DrawnBox {
                class: 2,
                label: "ring 0.91".into(),
                bbox: [10.0, 20.0, 40.0, 44.0],
            }],
        )
        .unwrap();
        // 48 → 256 needs ×6.
        assert_eq!(drawn.dimensions(), (384, 288));
        let colour = Rgb(PALETTE[2]);
        // Left edge of the frame, half-way down; the box inside stays black.
        assert_eq!(*drawn.get_pixel(60, 180), colour);
        assert_eq!(*drawn.get_pixel(61, 180), colour);
        assert_eq!(*drawn.get_pixel(120, 200), Rgb([0, 0, 0]));
        // The label above the box has white text on the class colour.
        let label: Vec<&Rgb<u8>> = (100..120)
            .flat_map(|y| (60..160).map(move |x| (x, y)))
            .map(|(x, y)| drawn.get_pixel(x, y))
            .collect();
        assert!(
            label.iter().any(|p| p.0.iter().all(|&c| c > 230)),
            "no text"
        );
        assert!(label.iter().any(|p| **p == colour), "no label background");
    }

    #[test]
    fn a_thin_strip_is_not_enlarged_past_the_canvas_cap() {
        // 16 px wide: ×8 would be 128 × 8_000_000 pixels (3 GB).
        let strip = RgbImage::new(16, 1_000_000);
        let box_ = DrawnBox {
            class: 0,
            label: "x 0.5".into(),
            bbox: [0.0, 0.0, 8.0, f32::MAX],
        };
        let drawn = draw_boxes(&strip, &[box_]).unwrap();
        assert_eq!(drawn.dimensions(), (16, 1_000_000));
        let small = draw_boxes(&RgbImage::new(300, 40), &[]).unwrap();
        // ×7 would reach 256; 2100 × 280 is within the cap.
        assert_eq!(small.dimensions(), (2100, 280));
    }
}
