//! Writes a synthetic shapes dataset to look at or train on.
//! `cargo run --release -p tresnet-data --example synthetic_preview -- OUT_DIR [coco|folder] [N] [SIZE]`
#![allow(clippy::print_stderr)]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or("usage: synthetic_preview OUT_DIR [coco|folder] [N] [SIZE]")?;
    let kind = args.get(2).map_or("coco", String::as_str);
    let n: usize = args.get(3).map_or(Ok(8), |s| s.parse())?;
    let size: u32 = args.get(4).map_or(Ok(128), |s| s.parse())?;
    let max_objects: usize = args.get(5).map_or(Ok(4), |s| s.parse())?;
    let max_frac: u32 = args.get(6).map_or(Ok(3), |s| s.parse())?;
    let config = tresnet_data::SyntheticConfig {
        num_images: n,
        width: size,
        height: size,
        min_size: size / 8,
        max_size: size * max_frac / 8,
        min_objects: 1,
        max_objects,
        ..Default::default()
    };
    let dir = std::path::Path::new(dir);
    if kind == "folder" {
        tresnet_data::write_synthetic_image_folder(dir, &config)?;
    } else {
        tresnet_data::write_synthetic_coco(dir, &config)?;
    }
    eprintln!("wrote {n} images to {}", dir.display());
    Ok(())
}
