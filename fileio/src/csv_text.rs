//! The CSV dialect the workspace writes and reads back: RFC 4180 quoting (fields holding a comma,
//! a quote, a carriage return or a newline are quoted, quotes doubled), one record per line
//! outside quotes.

use std::borrow::Cow;

/// `field` as one CSV field, quoted when it needs to be.
pub fn csv_field(field: &str) -> Cow<'_, str> {
    if field.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", field.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(field)
    }
}

/// Splits CSV text into records as [`csv_field`] writes them: a record ends at a newline outside
/// quotes (a `\r` before it is dropped), so a field with a newline stays in its record. Returns
/// each complete record's fields and the byte offset just past its newline; a trailing record
/// without a newline (cut by a killed writer, or a quote left open) is not returned, so the last
/// offset tells how much of `text` is whole.
pub fn csv_records(text: &str) -> Vec<(Vec<String>, usize)> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek().map(|&(_, c)| c) == Some('"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            (',', false) => {
                fields.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            ('\n', false) => {
                if !was_quoted && cur.ends_with('\r') {
                    cur.pop();
                }
                fields.push(std::mem::take(&mut cur));
                records.push((std::mem::take(&mut fields), at + 1));
                was_quoted = false;
            }
            ('\r', false) if was_quoted => {}
            (c, _) => cur.push(c),
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awkward_fields_round_trip() {
        let rows = [
            vec!["a, \"b\".jpg", "x"],
            vec!["line\nbreak.jpg", ""],
            vec!["plain", "semi;colon"],
        ];
        let mut text = String::new();
        for row in &rows {
            let fields: Vec<Cow<'_, str>> = row.iter().map(|f| csv_field(f)).collect();
            text.push_str(&fields.join(","));
            text.push('\n');
        }
        text.push_str("\"cut, mid-");
        let records = csv_records(&text);
        assert_eq!(records.len(), 3);
        for (row, (fields, _)) in rows.iter().zip(&records) {
            assert_eq!(row, fields);
        }
        assert_eq!(records[2].1, text.rfind('\n').unwrap() + 1);
        assert_eq!(csv_records("a,b\r\nc,d\r\n")[1].0, vec!["c", "d"]);
    }
}
