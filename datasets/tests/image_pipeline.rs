//! Real photos through the real decoders and resizers, against Pillow's output
//! (`tests/fixtures/photos/README.md`): decode, squish 448 bilinear and squish 224 bicubic from the
//! shared PIL reference; timm's own resize + centre crop at 224 and 448 from
//! `timm_eval_reference.safetensors` (made by `tests/fixtures/make_timm_eval_reference.py`; the
//! shared reference's crop rounds the resized side differently from torchvision).
#![allow(clippy::print_stderr)] // reports measured differences

use candle_core::{DType, Tensor};
use image::RgbImage;
use tresnet_data::{
    DataError, DecodeLimits, Interpolation, PreprocessConfig, decode_rgb8, resize_for_model,
};
use tresnet_tests::{fixture_path, load_fixture};

const PHOTOS: &[&str] = &[
    "astronaut.jpg",
    "chelsea.png",
    "rocket_exif_rot90.jpg",
    "hubble_deep_field_cmyk.jpg",
    "camera_gray.png",
    "logo_rgba.webp",
];

/// Mean absolute difference in levels of 255; shapes must agree.
fn mean_abs_diff(ours: &RgbImage, reference: &Tensor, what: &str) -> f64 {
    let (h, w, c) = reference.dims3().unwrap();
    assert_eq!(
        (ours.height() as usize, ours.width() as usize, c),
        (h, w, 3),
        "{what}: shape"
    );
    let reference: Vec<u8> = reference.flatten_all().unwrap().to_vec1().unwrap();
    let total: u64 = ours
        .as_raw()
        .iter()
        .zip(&reference)
        .map(|(a, b)| u64::from(a.abs_diff(*b)))
        .sum();
    total as f64 / reference.len() as f64
}

#[test]
fn decode_and_resize_match_pillow() {
    let reference = load_fixture("photos/pil_reference.safetensors");
    let timm_reference = load_fixture("photos/timm_eval_reference.safetensors");
    let squish448 = PreprocessConfig::multilabel(448);
    let bicubic224 = PreprocessConfig {
        interpolation: Interpolation::Bicubic,
        ..PreprocessConfig::multilabel(224)
    };
    for name in PHOTOS {
        let key = name.replace('.', "_");
        let decoded = decode_rgb8(
            &fixture_path(&format!("photos/{name}")),
            &DecodeLimits::default(),
        )
        .unwrap();
        let mae = mean_abs_diff(&decoded, &reference[&format!("{key}.decoded_rgb")], name);
        eprintln!("{name}: decode MAE {mae:.3}");
        assert!(
            mae < 0.5,
            "{name}: decoded image differs from Pillow's by {mae:.3} on average"
        );
        for (variant, cfg, refs) in [
            ("squish448_bilinear", squish448.clone(), &reference),
            ("squish224_bicubic", bicubic224.clone(), &reference),
            (
                "timm_eval224",
                PreprocessConfig::imagenet_eval(224),
                &timm_reference,
            ),
            (
                "timm_eval448",
                PreprocessConfig::imagenet_eval(448),
                &timm_reference,
            ),
        ] {
            let ours = resize_for_model(&decoded, &cfg).unwrap();
            let mae = mean_abs_diff(&ours, &refs[&format!("{key}.{variant}")], name);
            eprintln!("{name}: {variant} MAE {mae:.3}");
            assert!(
                mae < 0.5,
                "{name} {variant}: differs from Pillow's by {mae:.3} on average"
            );
        }
    }
}

#[test]
fn exif_rotation_is_applied() {
    let decoded = decode_rgb8(
        &fixture_path("photos/rocket_exif_rot90.jpg"),
        &DecodeLimits::default(),
    )
    .unwrap();
    let reference = load_fixture("photos/pil_reference.safetensors");
    let (h, w, _) = reference["rocket_exif_rot90_jpg.decoded_rgb"]
        .dims3()
        .unwrap();
    assert_eq!(
        (decoded.height() as usize, decoded.width() as usize),
        (h, w)
    );
    assert_ne!(h, w, "the rotation must be visible in the shape");
}

#[test]
fn broken_files_fail_with_their_name_and_reason() {
    let limits = DecodeLimits::default();
    for (name, needle) in [
        ("truncated.jpg", "cannot decode"),
        ("empty.jpg", "empty"),
        ("notes.jpg", "not an image"),
        ("bomb_100000x100000.png", "decompression bomb"),
    ] {
        let path = fixture_path(&format!("photos/broken/{name}"));
        let err = decode_rgb8(&path, &limits).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(name) && text.contains(needle),
            "{name}: {text}"
        );
        if name.starts_with("bomb") {
            assert!(matches!(err, DataError::TooLarge { .. }));
        }
    }
    let tiny = DecodeLimits {
        max_file_bytes: 1000,
        ..limits
    };
    let err = decode_rgb8(&fixture_path("photos/astronaut.jpg"), &tiny).unwrap_err();
    assert!(err.to_string().contains("above the limit"), "{err}");
}

#[test]
fn pretrained_cfg_drives_the_transform() {
    let cfg = PreprocessConfig::from_pretrained_cfg(&serde_json::json!({
        "input_size": [3, 448, 448], "interpolation": "bilinear", "crop_pct": 0.875,
        "crop_mode": "center", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]
    }))
    .unwrap();
    assert_eq!(cfg, PreprocessConfig::imagenet_eval(448));
    let squish = PreprocessConfig::from_pretrained_cfg(
        &serde_json::json!({"input_size": [3, 224, 224], "resize_mode": "squish"}),
    )
    .unwrap();
    assert_eq!(squish.resize_mode, tresnet_data::ResizeMode::Squish);
    assert!(
        PreprocessConfig::from_pretrained_cfg(&serde_json::json!({"interpolation": "lanczos9"}))
            .is_err()
    );
    let image = decode_rgb8(
        &fixture_path("photos/chelsea.png"),
        &DecodeLimits::default(),
    )
    .unwrap();
    let floats = tresnet_data::preprocess(&image, &squish).unwrap();
    let t = Tensor::from_vec(floats, (3, 224, 224), &candle_core::Device::Cpu).unwrap();
    let (lo, hi) = (
        t.min_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        t.max_all().unwrap().to_scalar::<f32>().unwrap(),
    );
    assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi) && hi > lo);
}
