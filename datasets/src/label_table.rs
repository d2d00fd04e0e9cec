//! Labels kept as a table beside a flat image folder: a CSV (`file,labels`) or TSV
//! (`file<TAB>labels`) file, one image per line, several labels separated by `;`
//! (multi-label) or one label (single-label). An optional first line starting with `file` is a
//! header. The file name may hold commas (the labels are what follows the last separator).

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::safe_path::join_inside;

/// Separates several labels of one image.
pub const LABEL_DELIMITER: char = ';';

/// One image and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledFile {
    /// The image, inside the root.
    pub path: PathBuf,
    /// Its labels as written (class names or indices), in order, at least one.
    pub labels: Vec<String>,
}

/// A label file read and checked against its image root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelTable {
    /// Every line's image and labels, in file order.
    pub rows: Vec<LabelledFile>,
}

impl LabelTable {
    /// Reads `path`, resolving each file name inside `root`. Refused with the line named: a line
    /// without a separator or without labels, a file name that could escape `root` (`..`,
    /// absolute paths, drive prefixes), a file listed twice; files that do not exist are refused
    /// together, the first few named.
    pub fn read(path: &Path, root: &Path) -> Result<Self> {
        let limit = tresnet_io::env_limit("TRESNET_MAX_JSON_BYTES", 4 << 30);
        let text = tresnet_io::read_text_limited(path, limit).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |line: usize, reason: String| {
            DataError::Config(format!("{}: line {line}: {reason}", path.display()))
        };
        let tab = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
        let mut rows = Vec::new();
        let mut seen: HashSet<PathBuf> = HashSet::new();
        let mut missing = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let number = n + 1;
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || (n == 0 && line.to_ascii_lowercase().starts_with("file")) {
                continue;
            }
            let split = if tab {
                line.rsplit_once('\t')
            } else {
                line.rsplit_once(',')
            };
            let Some((file, labels)) = split else {
                let want = if tab {
                    "file<TAB>labels"
                } else {
                    "file,labels"
                };
                return Err(bad(number, format!("expected `{want}`")));
            };
            let labels: Vec<String> = labels
                .split(LABEL_DELIMITER)
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect();
            if labels.is_empty() {
                return Err(bad(number, "no label".into()));
            }
            let file = file.trim();
            let image = join_inside(root, file).ok_or_else(|| {
                bad(
                    number,
                    format!("`{file}` is not a file inside {}", root.display()),
                )
            })?;
            if !seen.insert(image.clone()) {
                return Err(bad(number, format!("`{file}` is listed twice")));
            }
            if !image.is_file() {
                missing.push(format!("line {number}: {file}"));
            }
            rows.push(LabelledFile {
                path: image,
                labels,
            });
        }
        if !missing.is_empty() {
            return Err(DataError::Config(format!(
                "{}: {} listed images do not exist in {} ({})",
                path.display(),
                missing.len(),
                root.display(),
                missing
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if rows.is_empty() {
            return Err(DataError::Config(format!(
                "{}: no labelled images",
                path.display()
            )));
        }
        Ok(Self { rows })
    }

    /// Whether any image has several labels (the table is then multi-label).
    pub fn is_multi_label(&self) -> bool {
        self.rows.iter().any(|r| r.labels.len() > 1)
    }

    /// Every distinct label, sorted (the class list when the labels are names).
    pub fn label_names(&self) -> Vec<String> {
        let names: BTreeSet<&String> = self.rows.iter().flat_map(|r| &r.labels).collect();
        names.into_iter().cloned().collect()
    }
}
