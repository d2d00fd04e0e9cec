//! Per-image multi-label score files, so any model's saved output can be scored: CSV
//! (`image,<class>,<class>,…` header, then one row per image) or JSONL
//! (`{"image": …, "scores": [...]}` per line). The image field holds a COCO id or a file name.

use std::io::Write;
use std::path::Path;

use crate::error::{HeadsError, Result};

/// Scores of a set of images.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreFile {
    /// Class names from a CSV header (absent in JSONL).
    pub class_names: Option<Vec<String>>,
    /// `(image key, one score per class)` in file order.
    pub rows: Vec<(String, Vec<f32>)>,
}

fn bad(path: &Path, line: usize, reason: impl std::fmt::Display) -> HeadsError {
    HeadsError::File {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    }
}

impl ScoreFile {
    /// Reads a `.csv` or `.jsonl` score file (by extension); every row must have the same number
    /// of finite scores.
    pub fn read(path: &Path) -> Result<Self> {
        let mut text = tresnet_io::read_text_limited(
            path,
            tresnet_io::env_limit("TRESNET_MAX_JSON_BYTES", 4 << 30),
        )
        .map_err(|e| HeadsError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let jsonl = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("json"));
        let mut out = ScoreFile {
            class_names: None,
            rows: Vec::new(),
        };
        // (line number, the line for JSONL, the fields for CSV) of each record.
        let records: Vec<(usize, String, Vec<String>)> = if jsonl {
            text.lines()
                .enumerate()
                .map(|(n, line)| (n + 1, line.to_string(), Vec::new()))
                .collect()
        } else {
            let parsed = tresnet_io::csv_records(&text);
            let whole = parsed.last().map_or(0, |r| r.1);
            if whole < text.len() {
                let line = 1 + text[..whole].matches('\n').count();
                return Err(bad(path, line, "a quoted field is never closed"));
            }
            let mut start = 0;
            parsed
                .into_iter()
                .map(|(fields, end)| {
                    let number = 1 + text[..start].matches('\n').count();
                    start = end;
                    (number, String::new(), fields)
                })
                .collect()
        };
        for (number, line, fields) in records {
            if jsonl && line.trim().is_empty()
                || !jsonl && fields.iter().all(|f| f.trim().is_empty())
            {
                continue;
            }
            let (key, scores) = if jsonl {
                let v: serde_json::Value =
                    serde_json::from_str(&line).map_err(|e| bad(path, number, e))?;
                let key = match &v["image"] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => return Err(bad(path, number, "no `image` field")),
                };
                let scores = v["scores"]
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|x| x.as_f64().map(|x| x as f32))
                            .collect::<Option<Vec<f32>>>()
                    })
                    .ok_or_else(|| bad(path, number, "`scores` is not a list of numbers"))?;
                (key, scores)
            } else {
                let fields: Vec<&str> = fields.iter().map(|f| f.trim()).collect();
                if out.class_names.is_none()
                    && out.rows.is_empty()
                    && fields.iter().skip(1).any(|f| f.parse::<f32>().is_err())
                {
                    out.class_names = Some(fields[1..].iter().map(|s| s.to_string()).collect());
                    continue;
                }
                let scores = fields[1..]
                    .iter()
                    .map(|f| {
                        f.parse::<f32>()
                            .map_err(|_| bad(path, number, format!("`{f}` is not a number")))
                    })
                    .collect::<Result<Vec<f32>>>()?;
                (fields[0].to_string(), scores)
            };
            if scores.iter().any(|s| !s.is_finite()) {
                return Err(bad(path, number, "a score is NaN or infinite"));
            }
            let width = out
                .rows
                .first()
                .map(|r| r.1.len())
                .or(out.class_names.as_ref().map(Vec::len));
            if let Some(w) = width
                && w != scores.len()
            {
                return Err(bad(
                    path,
                    number,
                    format!("{} scores, expected {w}", scores.len()),
                ));
            }
            out.rows.push((key, scores));
        }
        if out.rows.is_empty() {
            return Err(HeadsError::File {
                path: path.to_path_buf(),
                reason: "no score rows".into(),
            });
        }
        Ok(out)
    }

    /// Writes the scores as CSV (header `image,<class names>`) to `writer`.
    pub fn write_csv(&self, writer: &mut impl Write) -> std::io::Result<()> {
        let width = self.rows.first().map_or(0, |r| r.1.len());
        let names: Vec<String> = match &self.class_names {
            Some(n) => n.clone(),
            None => (0..width).map(|i| format!("class_{i}")).collect(),
        };
        let names: Vec<_> = names.iter().map(|n| tresnet_io::csv_field(n)).collect();
        writeln!(writer, "image,{}", names.join(","))?;
        for (key, scores) in &self.rows {
            let values: Vec<String> = scores.iter().map(|s| format!("{s}")).collect();
            writeln!(
                writer,
                "{},{}",
                tresnet_io::csv_field(key),
                values.join(",")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_jsonl_round_trip_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("scores.csv");
        let file = ScoreFile {
            class_names: Some(vec!["cat, wild".into(), "dog \"rex\"".into()]),
            rows: vec![
                ("1".into(), vec![0.25, 0.5]),
                ("img.jpg".into(), vec![1.0, 0.0]),
                ("a, b.jpg".into(), vec![0.5, 0.5]),
            ],
        };
        let mut bytes = Vec::new();
        file.write_csv(&mut bytes).unwrap();
        std::fs::write(&csv, &bytes).unwrap();
        assert_eq!(ScoreFile::read(&csv).unwrap(), file);
        let jsonl = dir.path().join("scores.jsonl");
        std::fs::write(&jsonl, "{\"image\": 1, \"scores\": [0.25, 0.5]}\n{\"image\": \"img.jpg\", \"scores\": [1, 0]}\n").unwrap();
        assert_eq!(ScoreFile::read(&jsonl).unwrap().rows, file.rows[..2]);
        std::fs::write(
            &jsonl,
            "{\"image\": 1, \"scores\": [0.25, 0.5]}\n{\"image\": 2, \"scores\": [1]}\n",
        )
        .unwrap();
        let err = ScoreFile::read(&jsonl).unwrap_err().to_string();
        assert!(
            err.contains("scores.jsonl") && err.contains("line 2"),
            "{err}"
        );
    }
}
