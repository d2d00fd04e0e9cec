//! Every encoding in `tests/fixtures/photos/encodings/` decodes to what Pillow's
//! `convert('RGB')` gives (made by `tests/fixtures/make_encodings.py`).
#![allow(clippy::print_stderr)] // reports measured differences

use tresnet_data::{DecodeLimits, decode_rgb8};
use tresnet_tests::{fixture_path, load_fixture};

#[test]
fn encodings_decode_like_pillow() {
    let reference = load_fixture("photos/encodings/reference.safetensors");
    for (name, max_mae) in [
        ("rgb16.png", 0.0),
        ("rgba16.png", 0.0),
        ("gray16.png", 0.0),
        ("gray_alpha.png", 0.0),
        ("palette.png", 0.0),
        ("plain.bmp", 0.0),
        ("plain.tiff", 0.0),
        ("animated.gif", 0.0),
        ("progressive.jpg", 0.5),
    ] {
        let ours = decode_rgb8(
            &fixture_path(&format!("photos/encodings/{name}")),
            &DecodeLimits::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let theirs = &reference[&format!("{}.decoded_rgb", name.replace('.', "_"))];
        let (h, w, _) = theirs.dims3().unwrap();
        assert_eq!(
            (ours.height() as usize, ours.width() as usize),
            (h, w),
            "{name}"
        );
        let theirs: Vec<u8> = theirs.flatten_all().unwrap().to_vec1().unwrap();
        let total: u64 = ours
            .as_raw()
            .iter()
            .zip(&theirs)
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum();
        let mae = total as f64 / theirs.len() as f64;
        eprintln!("{name}: MAE {mae:.4}");
        assert!(mae <= max_mae, "{name}: MAE {mae} against Pillow");
    }
}
