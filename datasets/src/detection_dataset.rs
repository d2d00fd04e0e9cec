//! Images with boxes for detection: decoded, resized onto the network canvas (squish or
//! letterbox) with their boxes, optionally flipped, and returned with the placement that maps
//! predictions back to the original image.

use rand::Rng;
use rand::rngs::StdRng;

use crate::box_transform::{BoxXyxy, Placement, hflip_with_boxes, letterbox, squish};
use crate::decode::DecodeLimits;
use crate::error::Result;
use crate::eval_transform::to_chw_floats;
use crate::image_list_dataset::ImageSource;
use crate::loader::Dataset;
use crate::preprocess_config::PreprocessConfig;

/// How an image goes onto the detector's canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum CanvasFit {
    /// Stretch to the canvas (aspect ratio not kept).
    #[default]
    Squish,
    /// Keep the aspect ratio, centre, pad with grey.
    Letterbox,
}

/// A box with its class index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelledBox {
    /// Class index.
    pub class: usize,
    /// `[x1, y1, x2, y2]` in pixels.
    pub bbox: BoxXyxy,
}

/// One prepared sample.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionSample {
    /// `(3, H, W)` floats, normalised as the preprocessing says.
    pub image: Vec<f32>,
    /// The boxes on the canvas (after resizing and flipping); boxes left with no area dropped.
    pub boxes: Vec<LabelledBox>,
    /// How the original image sits on the canvas (before any flip).
    pub placement: Placement,
}

/// How samples are prepared.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionTransform {
    /// Canvas size, filter and normalisation (`resize_mode` and `crop_pct` are not used).
    pub preprocess: PreprocessConfig,
    /// Squish or letterbox.
    pub fit: CanvasFit,
    /// Probability of a horizontal flip (0 for evaluation).
    pub hflip: f64,
}

impl DetectionTransform {
    /// Prepares an image and its boxes.
    pub fn apply(
        &self,
        image: &image::RgbImage,
        boxes: &[LabelledBox],
        rng: &mut StdRng,
    ) -> Result<DetectionSample> {
        let cfg = &self.preprocess;
        let (w, h) = (cfg.width as u32, cfg.height as u32);
        let (mut canvas, placement) = match self.fit {
            CanvasFit::Squish => squish(image, w, h, cfg.interpolation)?,
            CanvasFit::Letterbox => {
                letterbox(image, w, h, image::Rgb([114; 3]), cfg.interpolation)?
            }
        };
        let mut placed: Vec<BoxXyxy> = boxes.iter().map(|b| placement.forward(b.bbox)).collect();
        if self.hflip > 0.0 && rng.random_bool(self.hflip.min(1.0)) {
            hflip_with_boxes(&mut canvas, &mut placed);
        }
        let (wf, hf) = (w as f32, h as f32);
        let boxes = boxes
            .iter()
            .zip(placed)
            .map(|(b, p)| LabelledBox {
                class: b.class,
                bbox: [
                    p[0].clamp(0.0, wf),
                    p[1].clamp(0.0, hf),
                    p[2].clamp(0.0, wf),
                    p[3].clamp(0.0, hf),
                ],
            })
            .filter(|b| b.bbox[2] > b.bbox[0] && b.bbox[3] > b.bbox[1])
            .collect();
        Ok(DetectionSample {
            image: to_chw_floats(&canvas, cfg),
            boxes,
            placement,
        })
    }
}

/// Images with their boxes; an item is a [`DetectionSample`].
#[derive(Debug, Clone)]
pub struct DetectionDataset {
    /// Sources and their boxes in original-image pixels.
    pub items: Vec<(ImageSource, Vec<LabelledBox>)>,
    /// How each image is prepared.
    pub transform: DetectionTransform,
    /// Decoding limits.
    pub limits: DecodeLimits,
}

impl Dataset for DetectionDataset {
    type Item = DetectionSample;

    fn len(&self) -> usize {
        self.items.len()
    }

    fn get(&self, index: usize, rng: &mut StdRng) -> Result<DetectionSample> {
        let (source, boxes) = &self.items[index];
        let image = source.decode(&self.limits)?;
        self.transform.apply(&image, boxes, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn boxes_follow_the_image_and_the_placement_maps_them_back() {
        // 100×50 image, white square at x 10..30, y 5..25 → squished to 64×64.
        let mut image = image::RgbImage::new(100, 50);
        for y in 5..25 {
            for x in 10..30 {
                image.put_pixel(x, y, image::Rgb([255; 3]));
            }
        }
        let boxes = [LabelledBox {
            class: 3,
            bbox: [10.0, 5.0, 30.0, 25.0],
        }];
        let mut cfg = PreprocessConfig::imagenet_eval(64);
        cfg.crop_pct = 1.0;
        for (fit, hflip) in [(CanvasFit::Squish, 1.0), (CanvasFit::Letterbox, 0.0)] {
            let t = DetectionTransform {
                preprocess: cfg.clone(),
                fit,
                hflip,
            };
            let s = t
                .apply(&image, &boxes, &mut StdRng::seed_from_u64(0))
                .unwrap();
            assert_eq!(s.image.len(), 3 * 64 * 64);
            let b = s.boxes[0].bbox;
            // The box's centre pixel on the canvas is white; just outside it, black.
            let at = |x: f32, y: f32| s.image[(y as usize) * 64 + x as usize];
            assert!(
                at((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0) > 0.9,
                "{fit:?}"
            );
            assert!(at(b[2] + 2.0, (b[1] + b[3]) / 2.0) < 0.1, "{fit:?}");
            let mut back = b;
            if hflip == 1.0 {
                back = [64.0 - b[2], b[1], 64.0 - b[0], b[3]];
            }
            let original = s.placement.inverse(back);
            for j in 0..4 {
                assert!(
                    (original[j] - boxes[0].bbox[j]).abs() < 1e-4,
                    "{original:?}"
                );
            }
        }
    }
}
