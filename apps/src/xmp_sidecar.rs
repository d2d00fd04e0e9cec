//! XMP sidecars (`photo.jpg.xmp`) carrying keywords in `dc:subject`, the field photo managers
//! (darktable, digiKam, Lightroom) read. An existing sidecar is merged, never clobbered.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The sidecar of `photo`: `photo.jpg` → `photo.jpg.xmp`.
pub fn sidecar_path(photo: &Path) -> PathBuf {
    let mut name = photo.as_os_str().to_owned();
    name.push(".xmp");
    PathBuf::from(name)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// A new sidecar document with `keywords`.
pub fn new_document(keywords: &[String]) -> String {
    let items: String = keywords
        .iter()
        .map(|k| format!("     <rdf:li>{}</rdf:li>\n", escape(k)))
        .collect();
    format!(
        "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n\
         <x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\n\
         \x20<rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\n\
         \x20 <rdf:Description rdf:about=\"\" xmlns:dc=\"http://purl.org/dc/elements/1.1/\">\n\
         \x20  <dc:subject>\n\
         \x20   <rdf:Bag>\n{items}\x20   </rdf:Bag>\n\
         \x20  </dc:subject>\n\
         \x20 </rdf:Description>\n\
         \x20</rdf:RDF>\n\
         </x:xmpmeta>\n\
         <?xpacket end=\"w\"?>\n"
    )
}

/// The keywords already in a document's `dc:subject` bag.
pub fn existing_keywords(doc: &str) -> Vec<String> {
    let Some(start) = doc.find("<dc:subject") else {
        return Vec::new();
    };
    let end = doc[start..]
        .find("</dc:subject>")
        .map_or(doc.len(), |e| start + e);
    let mut out = Vec::new();
    let mut rest = &doc[start..end];
    while let Some(i) = rest.find("<rdf:li") {
        let after = &rest[i..];
        let Some(open_end) = after.find('>') else {
            break;
        };
        let Some(close) = after.find("</rdf:li>") else {
            break;
        };
        if open_end < close {
            out.push(unescape(after[open_end + 1..close].trim()));
        }
        rest = &after[close + "</rdf:li>".len()..];
    }
    out
}

/// `doc` with `keywords` added to its `dc:subject` bag (created if absent); existing content and
/// keywords are kept. Fails (leaving the decision to the caller) when the document has no
/// `rdf:Description` to extend.
pub fn merge_keywords(doc: &str, keywords: &[String]) -> Result<String> {
    let have = existing_keywords(doc);
    let new: Vec<&String> = keywords.iter().filter(|k| !have.contains(k)).collect();
    if new.is_empty() {
        return Ok(doc.to_string());
    }
    let items: String = new
        .iter()
        .map(|k| format!("<rdf:li>{}</rdf:li>", escape(k)))
        .collect();
    if let Some(start) = doc.find("<dc:subject") {
        let bag_end = doc[start..].find("</rdf:Bag>").map(|e| start + e);
        let subject_end = doc[start..].find("</dc:subject>").map(|e| start + e);
        return match (bag_end, subject_end) {
            (Some(b), Some(s)) if b < s => Ok(format!("{}{items}{}", &doc[..b], &doc[b..])),
            (_, Some(s)) => Ok(format!(
                "{}<rdf:Bag>{items}</rdf:Bag>{}",
                &doc[..s],
                &doc[s..]
            )),
            _ => bail!("dc:subject is not closed"),
        };
    }
    let Some(desc) = doc.find("<rdf:Description") else {
        bail!("no rdf:Description element to add keywords to");
    };
    let Some(tag_end) = doc[desc..].find('>').map(|e| desc + e) else {
        bail!("unterminated rdf:Description element");
    };
    let self_closing = doc[..tag_end].ends_with('/');
    let open_tag = &doc[desc..if self_closing { tag_end - 1 } else { tag_end }];
    let ns = if open_tag.contains("xmlns:dc=") {
        ""
    } else {
        " xmlns:dc=\"http://purl.org/dc/elements/1.1/\""
    };
    let subject = format!("<dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>");
    Ok(if self_closing {
        format!(
            "{}{open_tag}{ns}>{subject}</rdf:Description>{}",
            &doc[..desc],
            &doc[tag_end + 1..]
        )
    } else {
        format!(
            "{}{open_tag}{ns}>{subject}{}",
            &doc[..desc],
            &doc[tag_end + 1..]
        )
    })
}

/// Largest sidecar read for merging (16 MiB; real ones are a few KiB).
const MAX_SIDECAR_BYTES: u64 = 16 << 20;

/// Writes or merges the sidecar of `photo` with `keywords` (atomically).
pub fn write_sidecar(photo: &Path, keywords: &[String]) -> Result<PathBuf> {
    let path = sidecar_path(photo);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            bail!(
                "{}: is a symbolic link; refused, left as it is",
                path.display()
            )
        }
        Ok(meta) if meta.permissions().readonly() => {
            bail!("{}: is read-only; left as it is", path.display())
        }
        _ => {}
    }
    let doc = match tresnet_io::read_text_limited(&path, MAX_SIDECAR_BYTES) {
        Ok(existing) => merge_keywords(&existing, keywords)
            .with_context(|| format!("{}: not merged", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => new_document(keywords),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    tresnet_io::atomic_write(&path, tresnet_io::Durability::Durable, |w| {
        std::io::Write::write_all(w, doc.as_bytes())
    })
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_documents_round_trip_and_merges_keep_everything() {
        let doc = new_document(&["cat".into(), "R&D <lab>".into()]);
        assert_eq!(existing_keywords(&doc), vec!["cat", "R&D <lab>"]);
        let merged = merge_keywords(&doc, &["dog".into(), "cat".into()]).unwrap();
        assert_eq!(existing_keywords(&merged), vec!["cat", "R&D <lab>", "dog"]);
        // A sidecar with other metadata and no keywords gains a subject and keeps the rest.
        let foreign = r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4"/></rdf:RDF></x:xmpmeta>"#;
        let merged = merge_keywords(foreign, &["ring".into()]).unwrap();
        assert!(
            merged.contains(r#"xmp:Rating="4""#) && merged.contains("xmlns:dc="),
            "{merged}"
        );
        assert_eq!(existing_keywords(&merged), vec!["ring"]);
        assert!(merge_keywords("not xml at all", &["x".into()]).is_err());
    }
}
