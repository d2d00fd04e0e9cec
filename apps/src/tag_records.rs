//! The records `tag` writes (one per photo) in JSONL, CSV or JSON, read back for resuming.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
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
    /// The photo's size in bytes when it was tagged (absent in records of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The photo's modification time when it was tagged, in nanoseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<i128>,
}

/// What a photo looked like on disk: a changed size or modification time means it was edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhotoStamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch (negative before it).
    pub modified: i128,
}

impl PhotoStamp {
    /// The stamp of the file at `path`, if it can be read.
    pub fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        let modified = meta.modified().ok()?;
        let nanos = match modified.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        Some(Self {
            size: meta.len(),
            modified: nanos,
        })
    }
}

/// Output formats (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line (appended and flushed as the run goes; the default).
    Jsonl,
    /// `file,model,labels,error,size,modified` with labels as `name:score;name:score` (appended
    /// likewise; four-column files of older versions are read too).
    Csv,
    /// One JSON array, written atomically at the end.
    Json,
}

impl Format {
    /// The file extension (and the flag's spelling).
    pub fn extension(self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
            Self::Json => "json",
        }
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

use tresnet_io::{csv_field, csv_records};

/// Label names in the CSV labels field escape `%`, `;` and `:` (`%25`, `%3B`, `%3A`) so that
/// `name:score;name:score` splits back exactly.
fn escape_label(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            ';' => out.push_str("%3B"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    out
}

fn unescape_label(text: &str) -> String {
    text.replace("%3B", ";")
        .replace("%3A", ":")
        .replace("%25", "%")
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
                    .map(|l| format!("{}:{:.4}", escape_label(&l.label), l.score))
                    .collect();
                let number = |v: Option<String>| v.unwrap_or_default();
                format!(
                    "{},{},{},{},{},{}\n",
                    csv_field(&self.file),
                    csv_field(&self.model),
                    csv_field(&labels.join(";")),
                    csv_field(self.error.as_deref().unwrap_or("")),
                    number(self.size.map(|v| v.to_string())),
                    number(self.modified.map(|v| v.to_string())),
                )
            }
        })
    }

    /// The attachment of the record to its photo: its stamp when the record has one.
    pub fn stamp(&self) -> Option<PhotoStamp> {
        Some(PhotoStamp {
            size: self.size?,
            modified: self.modified?,
        })
    }

    /// Records `stamp` as the photo's state when it was tagged.
    pub fn stamped(self, stamp: Option<PhotoStamp>) -> Self {
        Self {
            size: stamp.map(|s| s.size),
            modified: stamp.map(|s| s.modified),
            ..self
        }
    }

    fn from_csv_fields(fields: &[String]) -> Option<Self> {
        let (file, model, labels, error, size, modified) = match fields {
            [file, model, labels, error] => (file, model, labels, error, None, None),
            [file, model, labels, error, size, modified] => (
                file,
                model,
                labels,
                error,
                Some(size.as_str()),
                Some(modified.as_str()),
            ),
            _ => return None,
        };
        let size = match size {
            None | Some("") => None,
            Some(t) => Some(t.parse::<u64>().ok()?),
        };
        let modified = match modified {
            None | Some("") => None,
            Some(t) => Some(t.parse::<i128>().ok()?),
        };
        let labels = labels
            .split(';')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (l, v) = s.rsplit_once(':')?;
                Some(Label {
                    label: unescape_label(l),
                    score: v.parse().ok()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            file: file.clone(),
            model: model.clone(),
            labels,
            error: (!error.is_empty()).then(|| error.clone()),
            size,
            modified,
        })
    }
}

/// The header line of the CSV format.
pub const CSV_HEADER: &str = "file,model,labels,error,size,modified\n";
/// The header of CSV files written before records carried the photo's stamp.
const OLD_CSV_HEADER: &str = "file,model,labels,error";

/// Records already in an output file, read as the writer wrote them.
///
/// The file is read as bytes: a killed run may have cut its last record anywhere, even inside a
/// multi-byte character. For the appended formats that cut record is dropped and the file rewritten
/// without it (atomically), so appending resumes cleanly; a damaged record before the end is an
/// error naming its line.
pub fn read_existing(path: &Path, format: Format) -> Result<Vec<TagRecord>> {
    let bytes = match tresnet_io::read_limited(path, MAX_RECORDS_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if format == Format::Json {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        return serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a tag JSON array", path.display()));
    }
    // Everything up to the last newline was written whole; what follows is the cut record.
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let text = std::str::from_utf8(&bytes[..whole]).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        anyhow::anyhow!("{}: line {line} is not UTF-8", path.display())
    })?;
    let unreadable = |line: usize, body: &str| {
        anyhow::anyhow!(
            "{}: unreadable record on line {line}: `{}`",
            path.display(),
            body.chars().take(80).collect::<String>()
        )
    };
    let mut records = Vec::new();
    let mut good_bytes = whole;
    match format {
        Format::Jsonl => {
            for (n, line) in text.split_terminator('\n').enumerate() {
                let record =
                    serde_json::from_str::<TagRecord>(line).map_err(|_| unreadable(n + 1, line))?;
                records.push(record);
            }
        }
        _ => {
            let mut start = 0;
            for (i, (fields, end)) in csv_records(text).into_iter().enumerate() {
                let body = &text[start..end];
                let line = 1 + text[..start].matches('\n').count();
                start = end;
                if i == 0 && [CSV_HEADER.trim_end(), OLD_CSV_HEADER].contains(&body.trim_end()) {
                    continue;
                }
                records.push(
                    TagRecord::from_csv_fields(&fields).ok_or_else(|| unreadable(line, body))?,
                );
            }
            // After the last complete record: a quoted field left open by a killed run.
            good_bytes = start;
        }
    }
    if good_bytes < bytes.len() {
        tresnet_io::atomic_write(path, tresnet_io::Durability::Durable, |w| {
            w.write_all(&bytes[..good_bytes])
        })
        .with_context(|| format!("repairing {}", path.display()))?;
    }
    Ok(records)
}

/// Largest records file read back (4 GiB: some 20 million photos).
const MAX_RECORDS_BYTES: u64 = 4 << 30;

/// One record per photo: for each file (compared by `key`), the last record written, which
/// supersedes earlier ones (a retry of a broken photo, a re-tag with another model). Files keep
/// the order of their first record.
pub fn latest_per_file(records: Vec<TagRecord>, key: impl Fn(&str) -> String) -> Vec<TagRecord> {
    let mut slot: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out: Vec<TagRecord> = Vec::new();
    for record in records {
        match slot.entry(key(&record.file)) {
            std::collections::hash_map::Entry::Occupied(e) => out[*e.get()] = record,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(record);
            }
        }
    }
    out
}

/// Rewrites `path` atomically and durably with exactly `records` in `format` (CSV with its
/// header).
pub fn rewrite(path: &Path, records: &[TagRecord], format: Format) -> Result<()> {
    let mut text = String::new();
    match format {
        Format::Json => text = serde_json::to_string_pretty(records)?,
        Format::Csv | Format::Jsonl => {
            if format == Format::Csv {
                text.push_str(CSV_HEADER);
            }
            for r in records {
                text.push_str(&r.to_line(format)?);
            }
        }
    }
    tresnet_io::atomic_write(path, tresnet_io::Durability::Durable, |w| {
        w.write_all(text.as_bytes())
    })
    .with_context(|| format!("writing {}", path.display()))
}

/// Files already tagged by `model` and not changed since (photos that failed are tried again;
/// a photo whose size or modification time differs from its record's, per `stamp_now`, is
/// tagged again; records without a stamp, from older versions, count as current).
pub fn done_by(
    records: &[TagRecord],
    model: &str,
    stamp_now: impl Fn(&str) -> Option<PhotoStamp>,
) -> HashSet<String> {
    records
        .iter()
        .filter(|r| r.model == model && r.error.is_none())
        .filter(|r| match r.stamp() {
            Some(then) => stamp_now(&r.file) == Some(then),
            None => true,
        })
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
                size: Some(1234),
                modified: Some(1_764_000_000_123_456_789),
            },
            TagRecord {
                file: "c.jpg".into(),
                model: "m".into(),
                labels: vec![],
                error: Some("truncated, bad".into()),
                size: None,
                modified: None,
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
            let unchanged = |_: &str| {
                Some(PhotoStamp {
                    size: 1234,
                    modified: 1_764_000_000_123_456_789,
                })
            };
            assert_eq!(
                done_by(&read, "m", unchanged).len(),
                1,
                "the failed photo is retried"
            );
            let edited = |_: &str| {
                Some(PhotoStamp {
                    size: 1234,
                    modified: 1_764_000_000_123_456_790,
                })
            };
            assert!(
                done_by(&read, "m", edited).is_empty(),
                "an edited photo is redone"
            );
            assert!(
                done_by(&read, "m", |_| None).is_empty(),
                "a vanished photo is redone"
            );
        }
    }

    #[test]
    fn four_column_files_of_older_versions_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.csv");
        std::fs::write(&path, "file,model,labels,error\na.jpg,m,cat:0.5000,\n").unwrap();
        let read = read_existing(&path, Format::Csv).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].stamp(), None);
        // Without a stamp the record counts as current: no mass re-tag after an upgrade.
        assert_eq!(done_by(&read, "m", |_| None).len(), 1);
    }
}
