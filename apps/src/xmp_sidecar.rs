//! XMP sidecars carrying the tagger's keywords where photo managers read them: `dc:subject`
//! (every XMP reader) and, as the record of what the tagger wrote, `lr:hierarchicalSubject`
//! entries `<root>|<model>|<label>` (Lightroom, darktable, digiKam show them as a keyword tree).
//!
//! An existing sidecar is edited in place through [`XmpDocument`]'s byte spans: the container
//! the file has (`rdf:Bag` or `rdf:Seq`) is kept, its prefixes are used, and everything not
//! edited stays byte for byte. A re-run (another model, other thresholds) removes from
//! `dc:subject` exactly the labels its previous hierarchical entries say the tagger added, never
//! the user's keywords, and adds only labels the user does not already have.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use quick_xml::escape::{escape, unescape};

use crate::xmp_document::{DC_NS, LR_NS, RDF_NS, XmpDocument};

/// How the sidecar of `photo.jpg` is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SidecarNaming {
    /// `photo.jpg.xmp` (darktable, digiKam).
    #[default]
    Append,
    /// `photo.xmp` (Lightroom, Capture One).
    Replace,
}

/// The sidecar of `photo` under `naming`.
pub fn sidecar_path(photo: &Path, naming: SidecarNaming) -> PathBuf {
    match naming {
        SidecarNaming::Append => {
            let mut name = photo.as_os_str().to_owned();
            name.push(".xmp");
            PathBuf::from(name)
        }
        SidecarNaming::Replace => photo.with_extension("xmp"),
    }
}

/// What the tagger writes for one photo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggerKeywords {
    /// Root of the hierarchical keywords (`auto`).
    pub root: String,
    /// The model's name, the second level.
    pub model: String,
    /// The labels, in order.
    pub labels: Vec<String>,
}

impl TaggerKeywords {
    /// `root|model|label` (a `|` inside a name becomes `/`, as it is the level separator).
    fn hierarchical(&self, label: &str) -> String {
        let clean = |s: &str| s.replace('|', "/");
        format!(
            "{}|{}|{}",
            clean(&self.root),
            clean(&self.model),
            clean(label)
        )
    }

    /// The label of a hierarchical entry this tagger wrote (any model), if it is one.
    fn ours<'a>(&self, entry: &'a str) -> Option<&'a str> {
        let rest = entry.strip_prefix(&self.root.replace('|', "/"))?;
        let rest = rest.strip_prefix('|')?;
        rest.split_once('|').map(|(_, label)| label)
    }
}

/// A new sidecar document holding `keywords`.
pub fn new_document(keywords: &TaggerKeywords) -> String {
    let li = |v: &str| format!("\n     <rdf:li>{}</rdf:li>", escape(v));
    let subjects: String = keywords.labels.iter().map(|l| li(l)).collect();
    let tree: String = keywords
        .labels
        .iter()
        .map(|l| li(&keywords.hierarchical(l)))
        .collect();
    format!(
        "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n\
         <x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\n\
         \x20<rdf:RDF xmlns:rdf=\"{RDF_NS}\">\n\
         \x20 <rdf:Description rdf:about=\"\"\n\
         \x20   xmlns:dc=\"{DC_NS}\"\n\
         \x20   xmlns:lr=\"{LR_NS}\">\n\
         \x20  <dc:subject>\n\
         \x20   <rdf:Bag>{subjects}\n\
         \x20   </rdf:Bag>\n\
         \x20  </dc:subject>\n\
         \x20  <lr:hierarchicalSubject>\n\
         \x20   <rdf:Bag>{tree}\n\
         \x20   </rdf:Bag>\n\
         \x20  </lr:hierarchicalSubject>\n\
         \x20 </rdf:Description>\n\
         \x20</rdf:RDF>\n\
         </x:xmpmeta>\n\
         <?xpacket end=\"w\"?>\n"
    )
}

/// One array property (`dc:subject`, `lr:hierarchicalSubject`) as found in the document.
struct ArrayProperty {
    /// Its container element (`rdf:Bag` / `rdf:Seq` / `rdf:Alt`).
    container: usize,
    /// `(element index, unescaped value)` of each `rdf:li`.
    items: Vec<(usize, String)>,
}

/// A splice: replace `start..end` of the original text with `text`.
struct Edit {
    start: usize,
    end: usize,
    text: String,
}

/// The first `{namespace}local` array property under an `rdf:Description` (XMP allows one),
/// with its items; an attribute form or a property without a container is refused.
fn array_property(
    doc: &XmpDocument<'_>,
    namespace: &str,
    local: &str,
) -> Result<Option<ArrayProperty>> {
    let descriptions: Vec<usize> = (0..doc.elements.len())
        .filter(|&i| doc.elements[i].is(RDF_NS, "Description"))
        .collect();
    for &d in &descriptions {
        if doc.elements[d]
            .attributes
            .iter()
            .any(|(ns, l)| ns.as_deref() == Some(namespace) && l == local)
        {
            bail!("{local} is written as an attribute, which cannot hold an XMP array");
        }
        let Some(&property) = doc.children_named(d, namespace, local).first() else {
            continue;
        };
        let container = doc.elements[property].children.iter().copied().find(|&c| {
            ["Bag", "Seq", "Alt"]
                .iter()
                .any(|kind| doc.elements[c].is(RDF_NS, kind))
        });
        let Some(container) = container else {
            bail!("{local} holds no rdf:Bag or rdf:Seq");
        };
        let items = doc
            .children_named(container, RDF_NS, "li")
            .into_iter()
            .map(|li| {
                let value = unescape(doc.inner_text(li).trim())
                    .map(|v| v.into_owned())
                    .map_err(|e| anyhow::anyhow!("{local}: {e}"));
                value.map(|v| (li, v))
            })
            .collect::<Result<_>>()?;
        return Ok(Some(ArrayProperty { container, items }));
    }
    Ok(None)
}

/// Start of the whitespace run that ends at `at`.
fn whitespace_before(text: &str, at: usize) -> usize {
    text[..at]
        .trim_end_matches(|c: char| c.is_ascii_whitespace())
        .len()
}

/// The indentation the items of `container` use (the whitespace before its first item), else a
/// newline and the container's own indentation plus one space.
fn item_indent(doc: &XmpDocument<'_>, container: usize) -> String {
    let element = &doc.elements[container];
    if let Some(&first) = element.children.first() {
        let at = doc.elements[first].open.0;
        return doc.text[whitespace_before(doc.text, at)..at].to_string();
    }
    let own = &doc.text[whitespace_before(doc.text, element.open.0)..element.open.0];
    format!("{own} ")
}

/// Edits that remove `remove` items and append `add` values to an existing array.
fn edit_array(
    doc: &XmpDocument<'_>,
    array: &ArrayProperty,
    remove: &BTreeSet<usize>,
    add: &[String],
    edits: &mut Vec<Edit>,
) {
    for &(li, _) in &array.items {
        if remove.contains(&li) {
            let element = &doc.elements[li];
            let end = element.close.map_or(element.open.1, |(_, e)| e);
            edits.push(Edit {
                start: whitespace_before(doc.text, element.open.0),
                end,
                text: String::new(),
            });
        }
    }
    if add.is_empty() {
        return;
    }
    let container = &doc.elements[array.container];
    let indent = item_indent(doc, array.container);
    let li_name = doc
        .prefix_for(array.container, RDF_NS)
        .map_or_else(|| "rdf:li".to_string(), |p| format!("{p}:li"));
    let items: String = add
        .iter()
        .map(|v| format!("{indent}<{li_name}>{}</{li_name}>", escape(v)))
        .collect();
    match container.close {
        Some((close, _)) => {
            let at = whitespace_before(doc.text, close);
            edits.push(Edit {
                start: at,
                end: at,
                text: items,
            });
        }
        None => {
            // `<rdf:Bag/>`: open it.
            let (start, end) = container.open;
            let tag = doc.text[start..end].trim_end_matches("/>").trim_end();
            edits.push(Edit {
                start,
                end,
                text: format!("{tag}>{items}</{}>", container.qname),
            });
        }
    }
}

/// `doc` with the tagger's keywords for this photo: the labels a previous run added (per the
/// hierarchical entries under `keywords.root`) are taken out of `dc:subject` and those entries
/// dropped; the labels the user does not already have are added to `dc:subject` and recorded
/// as `root|model|label`. Refuses malformed XML and documents without an `rdf:Description`.
pub fn merge_keywords(text: &str, keywords: &TaggerKeywords) -> Result<String> {
    let doc = XmpDocument::parse(text)?;
    let subject = array_property(&doc, DC_NS, "subject")?;
    let tree = array_property(&doc, LR_NS, "hierarchicalSubject")?;

    // What a previous run of the tagger recorded.
    let mut previous_labels: BTreeSet<&str> = BTreeSet::new();
    let mut tree_removed: BTreeSet<usize> = BTreeSet::new();
    if let Some(tree) = &tree {
        for (li, value) in &tree.items {
            if let Some(label) = keywords.ours(value) {
                previous_labels.insert(label);
                tree_removed.insert(*li);
            }
        }
    }
    let mut subject_removed: BTreeSet<usize> = BTreeSet::new();
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    if let Some(subject) = &subject {
        for (li, value) in &subject.items {
            if previous_labels.contains(value.as_str()) {
                subject_removed.insert(*li);
            } else {
                kept.insert(value);
            }
        }
    }
    let mut added: Vec<String> = Vec::new();
    for label in &keywords.labels {
        if !kept.contains(label.as_str()) && !added.contains(label) {
            added.push(label.clone());
        }
    }
    let entries: Vec<String> = added.iter().map(|l| keywords.hierarchical(l)).collect();

    let mut edits = Vec::new();
    let mut missing: Vec<(&str, &str, &str, Vec<String>)> = Vec::new();
    match &subject {
        Some(s) => edit_array(&doc, s, &subject_removed, &added, &mut edits),
        None if !added.is_empty() => missing.push((DC_NS, "dc", "subject", added.clone())),
        None => {}
    }
    match &tree {
        Some(t) => edit_array(&doc, t, &tree_removed, &entries, &mut edits),
        None if !entries.is_empty() => {
            missing.push((LR_NS, "lr", "hierarchicalSubject", entries.clone()))
        }
        None => {}
    }
    if !missing.is_empty() {
        add_properties(&doc, &missing, &mut edits)?;
    }
    if edits.is_empty() {
        return Ok(text.to_string());
    }
    // Splice from the end so earlier offsets stay valid; at one offset, insertions (zero
    // length) go before removals ending there.
    edits.sort_by(|a, b| b.start.cmp(&a.start).then(b.end.cmp(&a.end)));
    let mut out = text.to_string();
    for edit in edits {
        out.replace_range(edit.start..edit.end, &edit.text);
    }
    // The result must still be a document we can read back.
    XmpDocument::parse(&out).context("the merged sidecar would not be well-formed")?;
    Ok(out)
}

/// Edits that create the properties in `missing` — `(namespace, preferred prefix, local name,
/// values)` — as `rdf:Bag`s at the end of the first `rdf:Description`, each declaring its
/// namespace where no prefix for it is in scope.
fn add_properties(
    doc: &XmpDocument<'_>,
    missing: &[(&str, &str, &str, Vec<String>)],
    edits: &mut Vec<Edit>,
) -> Result<()> {
    let Some(target) = (0..doc.elements.len()).find(|&i| doc.elements[i].is(RDF_NS, "Description"))
    else {
        bail!("no rdf:Description element to add keywords to");
    };
    let description = &doc.elements[target];
    let rdf = doc
        .prefix_for(target, RDF_NS)
        .context("the rdf namespace has no prefix")?;
    let own_indent = &doc.text[whitespace_before(doc.text, description.open.0)..description.open.0];
    let indent = match description.children.first() {
        Some(&c) => {
            let at = doc.elements[c].open.0;
            doc.text[whitespace_before(doc.text, at)..at].to_string()
        }
        None => format!("{own_indent} "),
    };
    let inner = format!("{indent} ");
    let item = format!("{inner} ");
    let mut body = String::new();
    for (namespace, preferred, local, values) in missing {
        // A namespace not in scope is declared on the new property element itself, so the
        // description's start tag stays as it was.
        let (prefix, declaration) = match doc.prefix_for(target, namespace) {
            Some(p) => (p, String::new()),
            None => {
                let mut prefix = preferred.to_string();
                while doc.prefix_in_scope(target, &prefix) {
                    prefix.push('x');
                }
                let declaration = format!(" xmlns:{prefix}=\"{namespace}\"");
                (prefix, declaration)
            }
        };
        let items: String = values
            .iter()
            .map(|v| format!("{item}<{rdf}:li>{}</{rdf}:li>", escape(v)))
            .collect();
        body.push_str(&format!(
            "{indent}<{prefix}:{local}{declaration}>{inner}<{rdf}:Bag>{items}{inner}</{rdf}:Bag>{indent}</{prefix}:{local}>"
        ));
    }
    let (start, end) = description.open;
    match description.close {
        Some((close, _)) => {
            let at = whitespace_before(doc.text, close);
            edits.push(Edit {
                start: at,
                end: at,
                text: body,
            });
        }
        None => {
            // `<rdf:Description …/>`: turn the `/>` into `>` + body + an end tag.
            let slash = start + doc.text[start..end].rfind("/>").context("empty element")?;
            edits.push(Edit {
                start: slash,
                end,
                text: format!(">{body}{own_indent}</{}>", description.qname),
            });
        }
    }
    Ok(())
}

/// Largest sidecar read for merging (16 MiB; real ones are a few KiB).
const MAX_SIDECAR_BYTES: u64 = 16 << 20;

/// Writes or merges the sidecar of `photo` (named by `naming`) with `keywords`, atomically. A
/// symbolic link, a read-only file or a malformed document is left exactly as it is and
/// reported as an error naming the sidecar.
pub fn write_sidecar(
    photo: &Path,
    naming: SidecarNaming,
    keywords: &TaggerKeywords,
) -> Result<PathBuf> {
    let path = sidecar_path(photo, naming);
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
        Ok(existing) => {
            let merged = merge_keywords(&existing, keywords)
                .with_context(|| format!("{}: not merged, left as it is", path.display()))?;
            if merged == existing {
                return Ok(path);
            }
            merged
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => new_document(keywords),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    tresnet_io::atomic_write(&path, tresnet_io::Durability::Durable, |w| {
        std::io::Write::write_all(w, doc.as_bytes())
    })
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
