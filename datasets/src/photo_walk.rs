//! Finding the images in a folder tree.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// File extensions treated as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"];

/// What a walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhotoWalk {
    /// Image files in a deterministic order (paths sorted byte-wise within each directory,
    /// directories visited depth-first in the same order).
    pub images: Vec<PathBuf>,
    /// Files skipped because their extension is not an image's.
    pub skipped_non_images: usize,
    /// Hidden files and directories skipped (names starting with `.`).
    pub skipped_hidden: usize,
    /// Directories visited a second time through a symlink (loops) and not re-entered.
    pub skipped_revisits: usize,
    /// Entries that could not be read, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Whether `path` has an image extension.
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Walks `root` recursively (following symlinks, entering each real directory once). A file given
/// as `root` is returned alone if it has an image extension.
pub fn walk_photos(root: &Path) -> PhotoWalk {
    let mut walk = PhotoWalk::default();
    let mut visited = HashSet::new();
    if root.is_file() {
        if has_image_extension(root) {
            walk.images.push(root.to_path_buf());
        } else {
            walk.skipped_non_images += 1;
        }
        return walk;
    }
    visit(root, &mut walk, &mut visited);
    walk
}

fn visit(dir: &Path, walk: &mut PhotoWalk, visited: &mut HashSet<PathBuf>) {
    match dir.canonicalize() {
        Ok(real) => {
            if !visited.insert(real) {
                walk.skipped_revisits += 1;
                return;
            }
        }
        Err(e) => {
            walk.unreadable.push((dir.to_path_buf(), e.to_string()));
            return;
        }
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            walk.unreadable.push((dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => paths.push(entry.path()),
            Err(e) => walk.unreadable.push((dir.to_path_buf(), e.to_string())),
        }
    }
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            walk.skipped_hidden += 1;
        } else if path.is_dir() {
            visit(&path, walk, visited);
        } else if path.is_file() && has_image_extension(&path) {
            walk.images.push(path);
        } else if path.is_file() {
            walk.skipped_non_images += 1;
        } else {
            walk.unreadable
                .push((path, "broken symlink or special file".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_sorted_skips_hidden_and_survives_symlink_loops() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/inner")).unwrap();
        std::fs::create_dir_all(root.join(".cache")).unwrap();
        for f in [
            "z.JPG",
            "a.png",
            "notes.txt",
            ".hidden.jpg",
            "b/inner/c.WebP",
            ".cache/x.jpg",
        ] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(root, root.join("b/loop")).unwrap();
        let walk = walk_photos(root);
        let names: Vec<String> = walk
            .images
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a.png", "b/inner/c.WebP", "z.JPG"]);
        assert_eq!(walk.skipped_non_images, 1);
        assert_eq!(walk.skipped_hidden, 2);
        #[cfg(unix)]
        assert_eq!(walk.skipped_revisits, 1);
    }
}
