//! Joining dataset-relative file names to a root without ever leaving it.

use std::path::{Component, Path, PathBuf};

/// `root/relative` if `relative` is a plain relative path (no root, no drive prefix, no `..`);
/// `None` for anything that could point outside `root`.
pub fn join_inside(root: &Path, relative: &str) -> Option<PathBuf> {
    let rel = Path::new(relative);
    // Backslashes are separators in files written on Windows: `..` between them escapes too.
    if relative.is_empty() || relative.split(['/', '\\']).any(|part| part == "..") {
        return None;
    }
    let mut out = root.to_path_buf();
    for component in rel.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escapes_and_accepts_plain_names() {
        let root = Path::new("/data/coco/val2014");
        assert_eq!(
            join_inside(root, "COCO_val2014_000000000042.jpg").unwrap(),
            root.join("COCO_val2014_000000000042.jpg")
        );
        assert_eq!(
            join_inside(root, "./sub/a.jpg").unwrap(),
            root.join("sub/a.jpg")
        );
        for bad in [
            "../secret.jpg",
            "sub/../../x.jpg",
            "/etc/passwd",
            "",
            "..\\..\\x.jpg",
        ] {
            assert!(join_inside(root, bad).is_none(), "{bad}");
        }
    }
}
