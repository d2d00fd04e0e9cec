//! Writes a small synthetic COCO dataset to the folder given as the first argument, to look at.
//! `cargo run --release -p tresnet-data --example synthetic_preview -- /tmp/shapes`
#![allow(clippy::print_stderr)]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: synthetic_preview OUT_DIR")?;
    let config = tresnet_data::SyntheticConfig {
        num_images: 8,
        ..Default::default()
    };
    let written = tresnet_data::write_synthetic_coco(std::path::Path::new(&dir), &config)?;
    eprintln!(
        "wrote {} and {}",
        written.annotations.display(),
        written.images.display()
    );
    Ok(())
}
