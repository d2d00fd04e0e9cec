//! The synthetic shapes dataset written to disk is a valid COCO dataset (read back by our own COCO
//! reader, boxes matching the drawn pixels) and a valid ImageFolder.

use image::Rgb;
use tresnet_data::coco::{CocoDataset, CocoOptions};
use tresnet_data::{
    DecodeLimits, ImageFolder, SHAPES, SyntheticConfig, SyntheticFormat, decode_rgb8,
    write_synthetic_coco, write_synthetic_image_folder,
};

#[test]
fn coco_output_reads_back_with_exact_boxes() {
    let dir = tempfile::tempdir().unwrap();
    let config = SyntheticConfig {
        num_images: 12,
        seed: 42,
        ..SyntheticConfig::default()
    };
    let written = write_synthetic_coco(dir.path(), &config).unwrap();
    let ds = CocoDataset::from_file(&written.annotations, CocoOptions::default()).unwrap();
    assert_eq!(ds.len(), 12);
    assert_eq!(
        ds.class_names(),
        SHAPES
            .iter()
            .map(|s| s.name().to_string())
            .collect::<Vec<_>>()
    );
    assert!(ds.missing_images(&written.images).is_empty());
    assert!(ds.warnings.is_empty());
    let mut objects = 0;
    for i in 0..ds.len() {
        let image =
            decode_rgb8(&ds.image_path(&written.images, i), &DecodeLimits::default()).unwrap();
        assert_eq!(image.dimensions(), (128, 128));
        for o in &ds.objects[i] {
            objects += 1;
            // Every box edge touches the shape's colour: the pixel rows/columns just inside differ
            // from those just outside somewhere along the edge.
            let [x1, y1, x2, y2] = o.bbox_xyxy.map(|v| v as u32);
            let inside: Vec<Rgb<u8>> = (y1..y2).map(|y| *image.get_pixel(x1, y)).collect();
            assert!(
                inside
                    .iter()
                    .any(|p| p[0] >= 200 || p[1] >= 200 || p[2] >= 200),
                "left edge of image {i} box {:?}",
                o.bbox_xyxy
            );
            assert!(x2 > x1 && y2 > y1);
        }
    }
    assert!(objects >= 12);
    // Same seed, same bytes.
    let again = tempfile::tempdir().unwrap();
    write_synthetic_coco(again.path(), &config).unwrap();
    assert_eq!(
        std::fs::read(&written.annotations).unwrap(),
        std::fs::read(again.path().join("annotations.json")).unwrap()
    );
}

#[test]
fn image_folder_output_has_one_class_per_shape() {
    let dir = tempfile::tempdir().unwrap();
    let config = SyntheticConfig {
        num_images: 18,
        format: SyntheticFormat::Jpeg,
        seed: 1,
        ..SyntheticConfig::default()
    };
    write_synthetic_image_folder(dir.path(), &config).unwrap();
    let folder = ImageFolder::open(dir.path()).unwrap();
    assert_eq!(folder.classes.len(), 6);
    assert_eq!(folder.len(), 18);
    for class in 0..6 {
        assert_eq!(folder.samples.iter().filter(|s| s.1 == class).count(), 3);
    }
}
