//! ImageFolder: one subfolder per class (torchvision / timm layout), for single-label data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::photo_walk::walk_photos;

/// A single-label dataset laid out as `root/<class>/**/<image>`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFolder {
    /// The root folder.
    pub root: PathBuf,
    /// Class names in index order.
    pub classes: Vec<String>,
    /// `(image path, class index)`, grouped by class, paths sorted within a class.
    pub samples: Vec<(PathBuf, usize)>,
    /// Non-image files found (and ignored) under the class folders.
    pub skipped_non_images: usize,
}

impl ImageFolder {
    /// Classes are the non-hidden subfolders of `root`, sorted by name (torchvision's rule);
    /// images are found recursively under each.
    pub fn open(root: &Path) -> Result<Self> {
        let classes = class_dirs(root)?;
        Self::collect(root, classes)
    }

    /// Like [`ImageFolder::open`], with class indices fixed by a class-map file: `.txt` (one name
    /// per line, index = line) or `.json` (a list of names, or `{"name": index}` with indices
    /// 0..K-1). Every subfolder must be in the map; map entries without a folder have no samples.
    pub fn open_with_class_map(root: &Path, class_map: &Path) -> Result<Self> {
        let classes = read_class_map(class_map)?;
        let known: HashMap<&str, usize> = classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        let unknown: Vec<String> = class_dirs(root)?
            .into_iter()
            .filter(|d| !known.contains_key(d.as_str()))
            .collect();
        if !unknown.is_empty() {
            return Err(DataError::Annotations {
                path: class_map.to_path_buf(),
                reason: format!(
                    "folders {unknown:?} under {} are not in the class map",
                    root.display()
                ),
            });
        }
        Self::collect(root, classes)
    }

    fn collect(root: &Path, classes: Vec<String>) -> Result<Self> {
        let mut samples = Vec::new();
        let mut skipped_non_images = 0;
        for (index, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            if !dir.is_dir() {
                continue;
            }
            let walk = walk_photos(&dir);
            if let Some((path, reason)) = walk.unreadable.first() {
                return Err(DataError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(reason.clone()),
                });
            }
            skipped_non_images += walk.skipped_non_images;
            samples.extend(walk.images.into_iter().map(|p| (p, index)));
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes,
            samples,
            skipped_non_images,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

fn class_dirs(root: &Path) -> Result<Vec<String>> {
    let io = |source| DataError::Io {
        path: root.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            names.push(name);
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(DataError::Annotations {
            path: root.to_path_buf(),
            reason: "no class subfolders (expected root/<class>/<images>)".into(),
        });
    }
    Ok(names)
}

fn read_class_map(path: &Path) -> Result<Vec<String>> {
    let text = tresnet_io::read_text_limited(
        path,
        tresnet_io::env_limit("TRESNET_MAX_JSON_BYTES", 4 << 30),
    )
    .map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| DataError::Annotations {
        path: path.to_path_buf(),
        reason,
    };
    let names: Vec<String> = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("malformed json: {e}")))?;
        match value {
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("{v} is not a class name")))
                })
                .collect::<Result<_>>()?,
            serde_json::Value::Object(map) => {
                let mut slots = vec![None; map.len()];
                for (name, index) in map {
                    let i = index
                        .as_u64()
                        .map(|i| i as usize)
                        .filter(|i| *i < slots.len())
                        .ok_or_else(|| {
                            bad(format!(
                                "index {index} of `{name}` is not in 0..{}",
                                slots.len()
                            ))
                        })?;
                    if slots[i].replace(name.clone()).is_some() {
                        return Err(bad(format!("index {i} is used twice")));
                    }
                }
                slots
                    .into_iter()
                    .map(|s| s.expect("indices are a permutation"))
                    .collect()
            }
            other => return Err(bad(format!("expected a list or an object, found {other}"))),
        }
    } else {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(bad(format!("class `{dup}` is listed twice")));
    }
    if names.is_empty() {
        return Err(bad("the class map is empty".into()));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(root: &Path) {
        for f in [
            "dog/b.jpg",
            "dog/a.png",
            "cat/x/deep.jpg",
            "cat/readme.txt",
            ".git/obj.jpg",
        ] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
    }

    #[test]
    fn sorted_classes_and_samples() {
        let dir = tempfile::tempdir().unwrap();
        layout(dir.path());
        let folder = ImageFolder::open(dir.path()).unwrap();
        assert_eq!(folder.classes, vec!["cat", "dog"]);
        let rel: Vec<(String, usize)> = folder
            .samples
            .iter()
            .map(|(p, c)| {
                (
                    p.strip_prefix(dir.path()).unwrap().display().to_string(),
                    *c,
                )
            })
            .collect();
        assert_eq!(
            rel,
            vec![
                ("cat/x/deep.jpg".into(), 0),
                ("dog/a.png".into(), 1),
                ("dog/b.jpg".into(), 1)
            ]
        );
        assert_eq!(folder.skipped_non_images, 1);
    }

    #[test]
    fn class_maps_fix_indices_and_reject_unknown_folders() {
        let dir = tempfile::tempdir().unwrap();
        layout(&dir.path().join("data"));
        let txt = dir.path().join("classes.txt");
        std::fs::write(&txt, "dog\ncat\nbird\n").unwrap();
        let folder = ImageFolder::open_with_class_map(&dir.path().join("data"), &txt).unwrap();
        assert_eq!(folder.classes, vec!["dog", "cat", "bird"]);
        assert_eq!(folder.samples[0].1, 0);
        let json = dir.path().join("classes.json");
        std::fs::write(&json, r#"{"cat": 1, "dog": 0}"#).unwrap();
        assert_eq!(
            ImageFolder::open_with_class_map(&dir.path().join("data"), &json)
                .unwrap()
                .classes,
            vec!["dog", "cat"]
        );
        std::fs::write(&txt, "dog\n").unwrap();
        let err = ImageFolder::open_with_class_map(&dir.path().join("data"), &txt)
            .unwrap_err()
            .to_string();
        assert!(err.contains("classes.txt") && err.contains("cat"), "{err}");
    }
}
