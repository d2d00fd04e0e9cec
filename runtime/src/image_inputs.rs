//! Where apps find their images: the embedded examples, or a walk of the user's folder.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, bail};
use tresnet_data::{ImageSource, PhotoWalk, walk_photos};

/// Example photos compiled into the binary, used when an app is run without inputs.
pub fn embedded_examples() -> Vec<ImageSource> {
    let example = |name: &str, bytes: &'static [u8]| ImageSource::Bytes {
        name: format!("embedded:{name}"),
        bytes: Arc::from(bytes),
    };
    vec![
        example(
            "astronaut.jpg",
            include_bytes!("../assets/examples/astronaut.jpg"),
        ),
        example(
            "chelsea.png",
            include_bytes!("../assets/examples/chelsea.png"),
        ),
    ]
}

/// The images under `root` (a folder searched recursively, or one file), with the walk's counts
/// of what was left out; an error when there is nothing to process.
pub fn images_under(root: &Path) -> Result<(Vec<ImageSource>, PhotoWalk)> {
    if !root.exists() {
        bail!("{}: no such file or directory", root.display());
    }
    let mut walk = walk_photos(root);
    if walk.images.is_empty() {
        bail!("{}: no image files found", root.display());
    }
    let images = std::mem::take(&mut walk.images)
        .into_iter()
        .map(ImageSource::File)
        .collect();
    Ok((images, walk))
}
