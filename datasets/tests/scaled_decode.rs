//! Model-sized JPEG decoding (`DecodeMode::ReducedForModel`, `tag`'s default) against the exact
//! Pillow-matched path on real photos: after the model's resize both give nearly the same pixels,
//! orientation and colour conversions agree, formats it does not handle fall back to the exact
//! path bit for bit, and broken or mutated files are errors, never panics.
#![allow(clippy::print_stderr)] // reports measured differences

use std::path::Path;

use image::RgbImage;
use tresnet_data::{
    DataError, DecodeLimits, PreprocessConfig, decode_rgb8, decode_rgb8_for_model, resize_for_model,
};
use tresnet_tests::fixture_path;

/// Mean and largest absolute difference, in levels of 255.
fn differences(a: &RgbImage, b: &RgbImage) -> (f64, u8) {
    assert_eq!(a.dimensions(), b.dimensions());
    let diffs: Vec<u8> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .collect();
    let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
    (mean, diffs.into_iter().max().unwrap_or(0))
}

/// The exact path's model input and the reduced path's, for `bytes` under `cfg`.
fn both(bytes: &[u8], name: &str, cfg: &PreprocessConfig) -> (RgbImage, RgbImage) {
    let path = Path::new(name);
    let limits = DecodeLimits::default();
    let exact = tresnet_data::decode_rgb8_bytes(bytes, path, &limits).unwrap();
    let reduced = decode_rgb8_for_model(bytes, path, &limits, cfg).unwrap();
    (
        resize_for_model(&exact, cfg).unwrap(),
        resize_for_model(&reduced, cfg).unwrap(),
    )
}

#[test]
fn real_jpegs_give_nearly_the_exact_model_input() {
    // (photo, input size, largest mean difference allowed, in levels). Measured: astronaut @64
    // 1.56 squished (decoded at 1/4, exactly twice the input: the worst case), 0.40 cropped;
    // rocket @64 0.49 / 0.45, progressive @16 0.50 / 0.44. The rotated photo checks that the EXIF orientation is applied (a
    // wrong one differs by tens of levels). At 224 these small photos have no scale to spare
    // and take the exact path.
    let cases = [
        ("photos/astronaut.jpg", 224, 0.0),
        ("photos/astronaut.jpg", 64, 2.0),
        ("photos/rocket_exif_rot90.jpg", 64, 1.0),
        ("photos/rocket_exif_rot90.jpg", 224, 0.0),
        ("photos/encodings/progressive.jpg", 16, 1.0),
    ];
    for (name, size, allowed) in cases {
        for cfg in [
            PreprocessConfig::multilabel(size),
            PreprocessConfig::imagenet_eval(size),
        ] {
            let bytes = std::fs::read(fixture_path(name)).unwrap();
            let (exact, reduced) = both(&bytes, name, &cfg);
            let (mean, max) = differences(&exact, &reduced);
            eprintln!(
                "{name} @{size} {:?}: mean {mean:.3}, max {max}",
                cfg.resize_mode
            );
            assert!(
                mean <= allowed,
                "{name} @{size}: mean difference {mean} above {allowed}"
            );
        }
    }
}

#[test]
fn a_camera_sized_jpeg_decodes_at_a_quarter() {
    // A 12-megapixel JPEG made by a real encoder from the astronaut photo.
    let small = decode_rgb8(
        &fixture_path("photos/astronaut.jpg"),
        &DecodeLimits::default(),
    )
    .unwrap();
    let big = image::imageops::resize(&small, 4032, 3024, image::imageops::FilterType::Triangle);
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 92)
        .encode_image(&big)
        .unwrap();
    let cfg = PreprocessConfig::multilabel(224);
    let reduced =
        decode_rgb8_for_model(&bytes, Path::new("big.jpg"), &DecodeLimits::default(), &cfg)
            .unwrap();
    assert_eq!(reduced.dimensions(), (1008, 756), "decoded at 1/4");
    let (exact, reduced) = both(&bytes, "big.jpg", &cfg);
    let (mean, max) = differences(&exact, &reduced);
    eprintln!("12 MP @224: mean {mean:.3}, max {max}");
    // Measured 0.13.
    assert!(mean <= 0.5, "mean difference {mean}");
}

#[test]
fn grayscale_jpegs_become_grey_rgb() {
    let gray = image::GrayImage::from_fn(1600, 1200, |x, y| image::Luma([((x ^ y) & 0xFF) as u8]));
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode_image(&gray)
        .unwrap();
    let cfg = PreprocessConfig::multilabel(64);
    let reduced = decode_rgb8_for_model(
        &bytes,
        Path::new("gray.jpg"),
        &DecodeLimits::default(),
        &cfg,
    )
    .unwrap();
    assert_eq!(reduced.dimensions(), (200, 150));
    assert!(reduced.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
}

#[test]
fn formats_it_does_not_convert_take_the_exact_path() {
    // CMYK JPEG (Pillow's inversion rules live in the exact path), PNG, WebP: identical pixels.
    let limits = DecodeLimits::default();
    let cfg = PreprocessConfig::multilabel(64);
    for name in [
        "photos/hubble_deep_field_cmyk.jpg",
        "photos/chelsea.png",
        "photos/logo_rgba.webp",
    ] {
        let path = fixture_path(name);
        let bytes = std::fs::read(&path).unwrap();
        let reduced = decode_rgb8_for_model(&bytes, &path, &limits, &cfg).unwrap();
        assert_eq!(reduced, decode_rgb8(&path, &limits).unwrap(), "{name}");
    }
}

#[test]
fn broken_files_are_errors_that_name_the_file() {
    let cfg = PreprocessConfig::multilabel(64);
    for name in [
        "photos/broken/truncated.jpg",
        "photos/broken/empty.jpg",
        "photos/broken/notes.jpg",
    ] {
        let path = fixture_path(name);
        let bytes = std::fs::read(&path).unwrap();
        let err =
            decode_rgb8_for_model(&bytes, &path, &DecodeLimits::default(), &cfg).expect_err(name);
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
    // The pixel limit is checked on the header's size, before any pixel is decoded.
    let path = fixture_path("photos/astronaut.jpg");
    let bytes = std::fs::read(&path).unwrap();
    let tight = DecodeLimits {
        max_pixels: 1000,
        ..DecodeLimits::default()
    };
    assert!(matches!(
        decode_rgb8_for_model(&bytes, &path, &tight, &cfg),
        Err(DataError::TooLarge { .. })
    ));
}

#[test]
fn mutated_jpegs_never_panic() {
    let path = fixture_path("photos/astronaut.jpg");
    let original = std::fs::read(&path).unwrap();
    let cfg = PreprocessConfig::multilabel(64);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut failures = 0;
    for _ in 0..400 {
        let mut bytes = original.clone();
        // A few random bytes changed, mostly in the headers where sizes and tables live.
        for _ in 0..1 + next() % 4 {
            let span = if next() % 2 == 0 { 700 } else { bytes.len() };
            let at = (next() as usize) % span;
            bytes[at] = next() as u8;
        }
        if next() % 4 == 0 {
            let keep = (next() as usize) % bytes.len();
            bytes.truncate(keep.max(4));
            bytes.extend_from_slice(&[0xFF, 0xD9]);
        }
        let outcome = std::panic::catch_unwind(|| {
            decode_rgb8_for_model(&bytes, &path, &DecodeLimits::default(), &cfg)
        });
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => failures += 1,
            Err(_) => panic!("the decoder panicked on a mutated JPEG"),
        }
    }
    eprintln!("mutated JPEGs refused: {failures} of 400");
}
