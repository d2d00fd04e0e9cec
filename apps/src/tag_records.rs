//! The records `tag` writes (one per photo) in JSONL, CSV or JSON, read back for resuming.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// One label with its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// Class name.
    pub label: String,
    /// Score (sigmoid or softmax).
    pub score: f32,
}

/// The outcome for one photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagRecord {
    /// The photo.
    pub file: String,
    /// Identifier of the model that tagged it.
    pub model: String,
    /// Labels kept, best first.
    pub labels: Vec<Label>,
    /// Why the photo could not be tagged.
    pub error: Option<String>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (appended and flushed as the run goes; the default).
    Jsonl,
    /// `file,model,labels,error` with labels as `name:score;name:score` (appended likewise).
    Csv,
    /// One JSON array, written atomically at the end.
    Json,
}

impl Format {
    /// Parses `jsonl`, `csv` or `json`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "jsonl" => Self::Jsonl,
            "csv" => Self::Csv,
            "json" => Self::Json,
            other => bail!("--format {other}: expected jsonl, csv or json"),
        })
    }
}

/// A 64-bit FNV-1a digest as hex: a short, stable model identifier.
pub fn short_id(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn parse_csv_line(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return None;
    }
    fields.push(cur);
    Some(fields)
}

impl TagRecord {
    /// The record as one line of `format` (JSONL or CSV), newline included.
    pub fn to_line(&self, format: Format) -> Result<String> {
        Ok(match format {
            Format::Jsonl | Format::Json => format!("{}\n", serde_json::to_string(self)?),
            Format::Csv => {
                let labels: Vec<String> = self
                    .labels
                    .iter()
                    .map(|l| format!("{}:{:.4}", l.label, l.score))
                    .collect();
                format!(
                    "{},{},{},{}\n",
                    csv_field(&self.file),
                    csv_field(&self.model),
                    csv_field(&labels.join(";")),
                    csv_field(self.error.as_deref().unwrap_or(""))
                )
            }
        })
    }

    fn from_csv_fields(fields: &[String]) -> Option<Self> {
        let [file, model, labels, error] = fields else {
            return None;
        };
        let labels = labels
            .split(';')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (l, v) = s.rsplit_once(':')?;
                Some(Label {
                    label: l.to_string(),
                    score: v.parse().ok()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            file: file.clone(),
            model: model.clone(),
            labels,
            error: (!error.is_empty()).then(|| error.clone()),
        })
    }
}

/// The header line of the CSV format.
pub const CSV_HEADER: &str = "file,model,labels,error\n";

/// Records already in an output file. For the appended formats a last line cut short by a killed
/// run is dropped and the file rewritten without it (atomically), so appending resumes cleanly.
pub fn read_existing(path: &Path, format: Format) -> Result<Vec<TagRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if format == Format::Json {
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        return serde_json::from_str(&text)
            .with_context(|| format!("{}: not a tag JSON array", path.display()));
    }
    let mut records = Vec::new();
    let mut good_bytes = 0usize;
    for line in text.split_inclusive('\n') {
        let complete = line.ends_with('\n');
        let body = line.trim_end_matches('\n');
        if format == Format::Csv && good_bytes == 0 && body == CSV_HEADER.trim_end() {
            good_bytes += line.len();
            continue;
        }
        let parsed = match format {
            Format::Jsonl => serde_json::from_str::<TagRecord>(body).ok(),
            _ => parse_csv_line(body).and_then(|f| TagRecord::from_csv_fields(&f)),
        };
        match parsed {
            Some(r) if complete => {
                records.push(r);
                good_bytes += line.len();
            }
            _ if !complete => break, // the line a killed run was writing
            _ => bail!(
                "{}: unreadable record `{}`",
                path.display(),
                body.chars().take(80).collect::<String>()
            ),
        }
    }
    if good_bytes < text.len() {
        let tmp = tresnet::weights::temporary_sibling(path);
        std::fs::write(&tmp, &text.as_bytes()[..good_bytes])
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("repairing {}", path.display()))?;
    }
    Ok(records)
}

/// Files already tagged by `model` (photos that failed are tried again).
pub fn done_by(records: &[TagRecord], model: &str) -> HashSet<String> {
    records
        .iter()
        .filter(|r| r.model == model && r.error.is_none())
        .map(|r| r.file.clone())
        .collect()
}

/// Appends whole records to an open output and flushes them.
pub fn append(out: &mut impl Write, records: &[TagRecord], format: Format) -> Result<()> {
    let mut text = String::new();
    for r in records {
        text.push_str(&r.to_line(format)?);
    }
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_cut_lines_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let records = vec![
            TagRecord {
                file: "a, \"b\".jpg".into(),
                model: "m".into(),
                labels: vec![Label {
                    label: "cat".into(),
                    score: 0.5,
                }],
                error: None,
            },
            TagRecord {
                file: "c.jpg".into(),
                model: "m".into(),
                labels: vec![],
                error: Some("truncated, bad".into()),
            },
        ];
        for format in [Format::Jsonl, Format::Csv] {
            let path = dir.path().join("out");
            let mut text = if format == Format::Csv {
                CSV_HEADER.to_string()
            } else {
                String::new()
            };
            for r in &records {
                text.push_str(&r.to_line(format).unwrap());
            }
            text.push_str("{\"file\": \"half"); // a killed writer
            std::fs::write(&path, &text).unwrap();
            let read = read_existing(&path, format).unwrap();
            assert_eq!(read, records, "{format:?}");
            assert!(
                std::fs::read_to_string(&path).unwrap().ends_with('\n'),
                "repaired"
            );
            assert_eq!(done_by(&read, "m").len(), 1, "the failed photo is retried");
        }
    }
}
