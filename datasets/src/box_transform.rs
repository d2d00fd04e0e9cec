//! Geometry that moves boxes with the image: letterbox / squish resizing and horizontal flips,
//! and the inverse mapping from network coordinates back to the original image.

use image::{Rgb, RgbImage};

use crate::error::Result;
use crate::eval_transform::resize_region;
use crate::preprocess_config::Interpolation;

/// A box `[x1, y1, x2, y2]` in pixels.
pub type BoxXyxy = [f32; 4];

/// How an image of `source` size was placed on a `target` canvas: `x' = x · scale_x + pad_x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Original `(width, height)`.
    pub source: (u32, u32),
    /// Canvas `(width, height)`.
    pub target: (u32, u32),
    /// Horizontal scale.
    pub scale_x: f32,
    /// Vertical scale.
    pub scale_y: f32,
    /// Left padding.
    pub pad_x: f32,
    /// Top padding.
    pub pad_y: f32,
}

impl Placement {
    /// Maps a box from the original image onto the canvas.
    pub fn forward(&self, b: BoxXyxy) -> BoxXyxy {
        [
            b[0] * self.scale_x + self.pad_x,
            b[1] * self.scale_y + self.pad_y,
            b[2] * self.scale_x + self.pad_x,
            b[3] * self.scale_y + self.pad_y,
        ]
    }

    /// Maps a box from the canvas back to the original image, clipped to it.
    pub fn inverse(&self, b: BoxXyxy) -> BoxXyxy {
        let (w, h) = (self.source.0 as f32, self.source.1 as f32);
        [
            ((b[0] - self.pad_x) / self.scale_x).clamp(0.0, w),
            ((b[1] - self.pad_y) / self.scale_y).clamp(0.0, h),
            ((b[2] - self.pad_x) / self.scale_x).clamp(0.0, w),
            ((b[3] - self.pad_y) / self.scale_y).clamp(0.0, h),
        ]
    }
}

/// Resizes keeping the aspect ratio to fit `width × height` and pads the rest with `fill`,
/// centring the image (letterbox).
pub fn letterbox(
    image: &RgbImage,
    width: u32,
    height: u32,
    fill: Rgb<u8>,
    filter: Interpolation,
) -> Result<(RgbImage, Placement)> {
    let (w0, h0) = image.dimensions();
    let scale = (width as f32 / w0 as f32).min(height as f32 / h0 as f32);
    let nw = ((w0 as f32 * scale).round() as u32).clamp(1, width);
    let nh = ((h0 as f32 * scale).round() as u32).clamp(1, height);
    let resized = resize_region(image, None, nw as usize, nh as usize, filter)?;
    let (pad_x, pad_y) = ((width - nw) / 2, (height - nh) / 2);
    let mut canvas = RgbImage::from_pixel(width, height, fill);
    image::imageops::replace(&mut canvas, &resized, i64::from(pad_x), i64::from(pad_y));
    Ok((
        canvas,
        Placement {
            source: (w0, h0),
            target: (width, height),
            scale_x: nw as f32 / w0 as f32,
            scale_y: nh as f32 / h0 as f32,
            pad_x: pad_x as f32,
            pad_y: pad_y as f32,
        },
    ))
}

/// Resizes straight to `width × height` (squish), with its placement.
pub fn squish(
    image: &RgbImage,
    width: u32,
    height: u32,
    filter: Interpolation,
) -> Result<(RgbImage, Placement)> {
    let (w0, h0) = image.dimensions();
    let resized = resize_region(image, None, width as usize, height as usize, filter)?;
    Ok((
        resized,
        Placement {
            source: (w0, h0),
            target: (width, height),
            scale_x: width as f32 / w0 as f32,
            scale_y: height as f32 / h0 as f32,
            pad_x: 0.0,
            pad_y: 0.0,
        },
    ))
}

/// Flips an image horizontally in place and mirrors its boxes: `x' = W − x`.
pub fn hflip_with_boxes(image: &mut RgbImage, boxes: &mut [BoxXyxy]) {
    image::imageops::flip_horizontal_in_place(image);
    let w = image.width() as f32;
    for b in boxes {
        *b = [w - b[2], b[1], w - b[0], b[3]];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_round_trips_boxes_and_keeps_content_where_boxes_say() {
        // A white square at (40..60, 10..30) on a 100×50 black image.
        let img = RgbImage::from_fn(100, 50, |x, y| {
            if (40..60).contains(&x) && (10..30).contains(&y) {
                Rgb([255, 255, 255])
            } else {
                Rgb([0, 0, 0])
            }
        });
        let (canvas, place) =
            letterbox(&img, 64, 64, Rgb([114, 114, 114]), Interpolation::Bilinear).unwrap();
        assert_eq!(canvas.dimensions(), (64, 64));
        assert_eq!((place.pad_x, place.pad_y), (0.0, 16.0));
        assert_eq!(*canvas.get_pixel(0, 0), Rgb([114, 114, 114]), "padding");
        let b = place.forward([40.0, 10.0, 60.0, 30.0]);
        let centre = canvas.get_pixel(((b[0] + b[2]) / 2.0) as u32, ((b[1] + b[3]) / 2.0) as u32);
        assert_eq!(*centre, Rgb([255, 255, 255]));
        let back = place.inverse(b);
        for (a, e) in back.iter().zip([40.0, 10.0, 60.0, 30.0]) {
            assert!((a - e).abs() < 1e-4, "{back:?}");
        }
        assert_eq!(
            place.inverse([-10.0, -10.0, 500.0, 500.0]),
            [0.0, 0.0, 100.0, 50.0]
        );
    }

    #[test]
    fn squish_and_flip_move_boxes_with_pixels() {
        let mut img = RgbImage::from_fn(8, 4, |x, _| {
            if x < 2 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 0])
            }
        });
        let mut boxes = [[0.0, 0.0, 2.0, 4.0]];
        hflip_with_boxes(&mut img, &mut boxes);
        assert_eq!(boxes[0], [6.0, 0.0, 8.0, 4.0]);
        assert_eq!(*img.get_pixel(7, 0), Rgb([255, 0, 0]));
        let (_, place) = squish(&img, 16, 16, Interpolation::Bilinear).unwrap();
        assert_eq!(place.forward(boxes[0]), [12.0, 0.0, 16.0, 16.0]);
    }
}
