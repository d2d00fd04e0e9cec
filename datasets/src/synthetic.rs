//! A deterministic synthetic dataset: coloured shapes on textured backgrounds, written as real
//! image files with a COCO instances json (multi-label and detection) or an ImageFolder tree
//! (single-label). Boxes are exact: each is the extent of the shape's drawn pixels.

use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, Rgb, RgbImage};
use imageproc::drawing::{draw_filled_circle_mut, draw_filled_rect_mut, draw_polygon_mut};
use imageproc::point::Point;
use imageproc::rect::Rect;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::error::{DataError, Result};

/// The shape classes; category id = position + 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// A filled disc.
    Circle,
    /// An axis-aligned filled square.
    Square,
    /// A rotated filled triangle.
    Triangle,
    /// A rotated five-pointed star.
    Star,
    /// An annulus.
    Ring,
    /// A plus sign.
    Cross,
}

/// Every shape, in category order.
pub const SHAPES: [Shape; 6] = [
    Shape::Circle,
    Shape::Square,
    Shape::Triangle,
    Shape::Star,
    Shape::Ring,
    Shape::Cross,
];

impl Shape {
    /// Lower-case class name.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Ring => "ring",
            Shape::Cross => "cross",
        }
    }

    /// COCO category id (1..=6).
    pub fn category_id(self) -> u64 {
        SHAPES.iter().position(|s| *s == self).expect("listed") as u64 + 1
    }
}

/// File format of the generated images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SyntheticFormat {
    /// Lossless PNG.
    Png,
    /// JPEG at quality 90.
    #[cfg_attr(feature = "clap", value(alias = "jpg"))]
    Jpeg,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticConfig {
    /// Number of images.
    pub num_images: usize,
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Fewest objects per image (multi-label / detection).
    pub min_objects: usize,
    /// Most objects per image.
    pub max_objects: usize,
    /// Smallest object side in pixels.
    pub min_size: u32,
    /// Largest object side in pixels.
    pub max_size: u32,
    /// Seed: the same seed gives the same dataset, byte for byte.
    pub seed: u64,
    /// File format.
    pub format: SyntheticFormat,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            num_images: 64,
            width: 128,
            height: 128,
            min_objects: 1,
            max_objects: 4,
            min_size: 16,
            max_size: 48,
            seed: 0,
            format: SyntheticFormat::Png,
        }
    }
}

impl SyntheticConfig {
    /// The shapes dataset this project's embedded default model and learning tests use: 64×64
    /// images with one or two shapes of 16–32 pixels.
    pub fn shapes_64(num_images: usize, seed: u64) -> Self {
        Self {
            num_images,
            width: 64,
            height: 64,
            min_objects: 1,
            max_objects: 2,
            min_size: 16,
            max_size: 32,
            seed,
            format: SyntheticFormat::Png,
        }
    }
}

/// One drawn object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticObject {
    /// Its class.
    pub shape: Shape,
    /// Exact extent of its pixels `[x1, y1, x2, y2]` (x2, y2 exclusive).
    pub bbox_xyxy: [f32; 4],
    /// Number of its pixels.
    pub area: u32,
}

/// Renders image `index` of the dataset `config` describes. With `dominant`, the first object is
/// of that shape and at least twice the size of the others (single-label data).
pub fn render_scene(
    config: &SyntheticConfig,
    index: usize,
    dominant: Option<Shape>,
) -> (RgbImage, Vec<SyntheticObject>) {
    let mut rng =
        StdRng::seed_from_u64(config.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (w, h) = (config.width, config.height);
    let mut image = background(w, h, &mut rng);
    let count = rng.random_range(config.min_objects..=config.max_objects.max(config.min_objects));
    let mut objects: Vec<SyntheticObject> = Vec::new();
    let mut attempts = 0;
    while objects.len() < count.max(usize::from(dominant.is_some())) && attempts < 50 * count.max(1)
    {
        attempts += 1;
        let first = objects.is_empty();
        let (shape, size) = match (dominant, first) {
            (Some(shape), true) => (shape, config.max_size.max(config.min_size)),
            (Some(_), false) => {
                let small = (config.max_size / 2).max(config.min_size / 2).max(4);
                (
                    SHAPES[rng.random_range(0..SHAPES.len())],
                    rng.random_range(4.min(small)..=small),
                )
            }
            (None, _) => (
                SHAPES[rng.random_range(0..SHAPES.len())],
                rng.random_range(config.min_size..=config.max_size.max(config.min_size)),
            ),
        };
        let size = size.min(w).min(h);
        let x = rng.random_range(0..=w - size);
        let y = rng.random_range(0..=h - size);
        let angle = rng.random_range(0.0..std::f32::consts::TAU);
        let mask = shape_mask(shape, w, h, x, y, size, angle);
        let Some((bbox, area)) = extent(&mask) else {
            continue;
        };
        // Keep objects apart (2-pixel margin) so every box shows its whole shape.
        let clear = objects.iter().all(|o| {
            bbox[0] >= o.bbox_xyxy[2] + 2.0
                || o.bbox_xyxy[0] >= bbox[2] + 2.0
                || bbox[1] >= o.bbox_xyxy[3] + 2.0
                || o.bbox_xyxy[1] >= bbox[3] + 2.0
        });
        if !clear {
            continue;
        }
        let colour = vivid_colour(&mut rng);
        for (px, py, m) in mask.enumerate_pixels() {
            if m[0] > 0 {
                image.put_pixel(px, py, colour);
            }
        }
        objects.push(SyntheticObject {
            shape,
            bbox_xyxy: bbox,
            area,
        });
    }
    (image, objects)
}

fn background(w: u32, h: u32, rng: &mut StdRng) -> RgbImage {
    let base: [f32; 3] = [
        rng.random_range(60.0..190.0),
        rng.random_range(60.0..190.0),
        rng.random_range(60.0..190.0),
    ];
    let stripe_period = rng.random_range(6.0..24.0f32);
    let (gx, gy) = (
        rng.random_range(-0.3..0.3f32),
        rng.random_range(-0.3..0.3f32),
    );
    let mut noise = StdRng::seed_from_u64(rng.random());
    RgbImage::from_fn(w, h, |x, y| {
        let stripe = if ((x as f32 + y as f32 * 0.5) / stripe_period) as i32 % 2 == 0 {
            10.0
        } else {
            -10.0
        };
        let grad = gx * x as f32 + gy * y as f32;
        let mut px = [0u8; 3];
        for (c, v) in px.iter_mut().enumerate() {
            let n: f32 = noise.random_range(-12.0..12.0);
            *v = (base[c] + stripe + grad + n).clamp(0.0, 255.0) as u8;
        }
        Rgb(px)
    })
}

fn vivid_colour(rng: &mut StdRng) -> Rgb<u8> {
    let mut c = [
        rng.random_range(0..80u8),
        rng.random_range(0..80u8),
        rng.random_range(0..80u8),
    ];
    c[rng.random_range(0..3)] = rng.random_range(200..=255);
    if rng.random::<bool>() {
        c[rng.random_range(0..3)] = rng.random_range(200..=255);
    }
    Rgb(c)
}

fn shape_mask(shape: Shape, w: u32, h: u32, x: u32, y: u32, size: u32, angle: f32) -> GrayImage {
    let mut mask = GrayImage::new(w, h);
    let on = Luma([255u8]);
    let r = size as f32 / 2.0;
    let (cx, cy) = (x as f32 + r, y as f32 + r);
    let centre = (cx as i32, cy as i32);
    let polygon = |points: Vec<(f32, f32)>| -> Vec<Point<i32>> {
        let mut pts: Vec<Point<i32>> = points
            .iter()
            .map(|(px, py)| Point::new(px.round() as i32, py.round() as i32))
            .collect();
        pts.dedup();
        if pts.len() > 1 && pts.first() == pts.last() {
            pts.pop();
        }
        pts
    };
    let around = |n: usize, radius: &dyn Fn(usize) -> f32| -> Vec<(f32, f32)> {
        (0..n)
            .map(|i| {
                let a = angle + i as f32 * std::f32::consts::TAU / n as f32;
                (cx + radius(i) * a.cos(), cy + radius(i) * a.sin())
            })
            .collect()
    };
    match shape {
        Shape::Circle => draw_filled_circle_mut(&mut mask, centre, (r - 1.0).max(1.0) as i32, on),
        Shape::Square => draw_filled_rect_mut(
            &mut mask,
            Rect::at(x as i32, y as i32).of_size(size, size),
            on,
        ),
        Shape::Ring => {
            draw_filled_circle_mut(&mut mask, centre, (r - 1.0).max(2.0) as i32, on);
            draw_filled_circle_mut(&mut mask, centre, (r * 0.5) as i32, Luma([0]));
        }
        Shape::Cross => {
            let t = (size / 3).max(1);
            draw_filled_rect_mut(
                &mut mask,
                Rect::at(x as i32, (y + size / 2 - t / 2) as i32).of_size(size, t),
                on,
            );
            draw_filled_rect_mut(
                &mut mask,
                Rect::at((x + size / 2 - t / 2) as i32, y as i32).of_size(t, size),
                on,
            );
        }
        Shape::Triangle => {
            let pts = polygon(around(3, &|_| r - 1.0));
            if pts.len() >= 3 {
                draw_polygon_mut(&mut mask, &pts, on);
            }
        }
        Shape::Star => {
            let pts = polygon(around(10, &|i| if i % 2 == 0 { r - 1.0 } else { r * 0.45 }));
            if pts.len() >= 3 {
                draw_polygon_mut(&mut mask, &pts, on);
            }
        }
    }
    mask
}

/// `[x1, y1, x2, y2]` (exclusive ends) and pixel count of the lit pixels, or `None` if none.
fn extent(mask: &GrayImage) -> Option<([f32; 4], u32)> {
    let (mut x1, mut y1, mut x2, mut y2, mut n) = (u32::MAX, u32::MAX, 0, 0, 0u32);
    for (x, y, v) in mask.enumerate_pixels() {
        if v[0] > 0 {
            x1 = x1.min(x);
            y1 = y1.min(y);
            x2 = x2.max(x + 1);
            y2 = y2.max(y + 1);
            n += 1;
        }
    }
    (n > 0).then_some(([x1 as f32, y1 as f32, x2 as f32, y2 as f32], n))
}

#[derive(Serialize)]
struct JsonImage<'a> {
    id: u64,
    file_name: &'a str,
    width: u32,
    height: u32,
}

#[derive(Serialize)]
struct JsonAnnotation {
    id: u64,
    image_id: u64,
    category_id: u64,
    bbox: [f32; 4],
    area: u32,
    iscrowd: u8,
    segmentation: [u8; 0],
}

#[derive(Serialize)]
struct JsonCategory {
    id: u64,
    name: &'static str,
    supercategory: &'static str,
}

#[derive(Serialize)]
struct JsonInstances<'a> {
    images: Vec<JsonImage<'a>>,
    annotations: Vec<JsonAnnotation>,
    categories: Vec<JsonCategory>,
}

/// Where a generated COCO-format dataset lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticCoco {
    /// The instances json.
    pub annotations: PathBuf,
    /// The folder of images.
    pub images: PathBuf,
}

fn save(image: &RgbImage, path: &Path, format: SyntheticFormat) -> Result<()> {
    let io = |e: image::ImageError| DataError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    match format {
        SyntheticFormat::Png => image
            .save_with_format(path, image::ImageFormat::Png)
            .map_err(io),
        SyntheticFormat::Jpeg => {
            let file = std::fs::File::create(path).map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let mut writer = std::io::BufWriter::new(file);
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut writer, 90)
                .encode_image(image)
                .map_err(io)
        }
    }
}

fn extension(format: SyntheticFormat) -> &'static str {
    match format {
        SyntheticFormat::Png => "png",
        SyntheticFormat::Jpeg => "jpg",
    }
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `dir/images/<n>.png|jpg` and `dir/annotations.json` (COCO instances: categories
/// 1..=6 = circle, square, triangle, star, ring, cross; image ids 1..=N).
pub fn write_synthetic_coco(dir: &Path, config: &SyntheticConfig) -> Result<SyntheticCoco> {
    let images_dir = dir.join("images");
    create_dir(&images_dir)?;
    let names: Vec<String> = (0..config.num_images)
        .map(|i| format!("{:06}.{}", i + 1, extension(config.format)))
        .collect();
    let mut json = JsonInstances {
        images: Vec::with_capacity(config.num_images),
        annotations: Vec::new(),
        categories: SHAPES
            .iter()
            .map(|s| JsonCategory {
                id: s.category_id(),
                name: s.name(),
                supercategory: "shape",
            })
            .collect(),
    };
    for (i, name) in names.iter().enumerate() {
        let (image, objects) = render_scene(config, i, None);
        save(&image, &images_dir.join(name), config.format)?;
        let image_id = i as u64 + 1;
        json.images.push(JsonImage {
            id: image_id,
            file_name: name,
            width: config.width,
            height: config.height,
        });
        for o in objects {
            let [x1, y1, x2, y2] = o.bbox_xyxy;
            json.annotations.push(JsonAnnotation {
                id: json.annotations.len() as u64 + 1,
                image_id,
                category_id: o.shape.category_id(),
                bbox: [x1, y1, x2 - x1, y2 - y1],
                area: o.area,
                iscrowd: 0,
                segmentation: [],
            });
        }
    }
    let annotations = dir.join("annotations.json");
    let text = serde_json::to_vec(&json).map_err(|e| DataError::Config(e.to_string()))?;
    tresnet_io::atomic_write(&annotations, tresnet_io::Durability::Atomic, |w| {
        std::io::Write::write_all(w, &text)
    })
    .map_err(|source| DataError::Io {
        path: annotations.clone(),
        source,
    })?;
    Ok(SyntheticCoco {
        annotations,
        images: images_dir,
    })
}

/// Writes an ImageFolder tree `dir/<shape>/<n>.png|jpg`: image `i` shows a dominant shape of class
/// `i mod 6` (and up to `max_objects − 1` small distractors).
pub fn write_synthetic_image_folder(dir: &Path, config: &SyntheticConfig) -> Result<()> {
    for shape in SHAPES {
        create_dir(&dir.join(shape.name()))?;
    }
    for i in 0..config.num_images {
        let shape = SHAPES[i % SHAPES.len()];
        let (image, _) = render_scene(config, i, Some(shape));
        let path =
            dir.join(shape.name())
                .join(format!("{:06}.{}", i + 1, extension(config.format)));
        save(&image, &path, config.format)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_deterministic_with_exact_disjoint_boxes() {
        let config = SyntheticConfig {
            num_images: 4,
            ..SyntheticConfig::default()
        };
        for i in 0..4 {
            let (a, objects) = render_scene(&config, i, None);
            let (b, again) = render_scene(&config, i, None);
            assert_eq!(a, b);
            assert_eq!(objects, again);
            assert!(!objects.is_empty());
            for o in &objects {
                let [x1, y1, x2, y2] = o.bbox_xyxy;
                assert!(x1 < x2 && y1 < y2 && x2 <= 128.0 && y2 <= 128.0);
                assert!(o.area as f32 <= (x2 - x1) * (y2 - y1));
            }
        }
        let (_, dominant) = render_scene(&config, 0, Some(Shape::Star));
        assert_eq!(dominant[0].shape, Shape::Star);
    }
}
