//! An XMP document read with `quick-xml` into the byte spans of its elements, so that edits can be
//! spliced into the original text and everything not edited stays byte for byte.

use anyhow::{Result, bail};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// The RDF namespace.
pub const RDF_NS: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#";
/// Dublin Core (`dc:subject`).
pub const DC_NS: &str = "http://purl.org/dc/elements/1.1/";
/// Lightroom's namespace (`lr:hierarchicalSubject`), read by darktable and digiKam too.
pub const LR_NS: &str = "http://ns.adobe.com/lightroom/1.0/";

/// Deepest element nesting accepted (real XMP nests about 6 deep); deeper files are refused.
const MAX_DEPTH: usize = 256;

/// One element of the document.
#[derive(Debug, Clone)]
pub struct Element {
    /// Namespace URI the element's name resolves to (`None` when unbound).
    pub namespace: Option<String>,
    /// Local name (`Description`, `subject`, `li`, …).
    pub local: String,
    /// The qualified name as written (`rdf:Description`).
    pub qname: String,
    /// Byte range of the start tag (the whole tag when the element is empty: `<a/>`).
    pub open: (usize, usize),
    /// Byte range of the end tag; `None` for an empty element.
    pub close: Option<(usize, usize)>,
    /// Index of the parent element.
    pub parent: Option<usize>,
    /// Indices of the child elements, in order.
    pub children: Vec<usize>,
    /// `xmlns:prefix="uri"` declarations on this element (`""` for a default namespace).
    pub declarations: Vec<(String, String)>,
    /// Attributes other than declarations: (namespace, local name).
    pub attributes: Vec<(Option<String>, String)>,
}

impl Element {
    /// Whether the element is `{namespace}local`.
    pub fn is(&self, namespace: &str, local: &str) -> bool {
        self.namespace.as_deref() == Some(namespace) && self.local == local
    }
}

/// A parsed document: the text and its elements in document order.
#[derive(Debug)]
pub struct XmpDocument<'a> {
    /// The original text.
    pub text: &'a str,
    /// Every element, in the order their start tags appear.
    pub elements: Vec<Element>,
}

impl<'a> XmpDocument<'a> {
    /// Parses `text`, refusing anything that is not well-formed XML (unclosed or mismatched
    /// tags, bad attributes, nesting deeper than 256).
    pub fn parse(text: &'a str) -> Result<Self> {
        let mut reader = NsReader::from_str(text);
        reader.config_mut().check_end_names = true;
        let mut elements: Vec<Element> = Vec::new();
        let mut stack: Vec<usize> = Vec::new();
        loop {
            let start = reader.buffer_position() as usize;
            let event = match reader.read_event() {
                Ok(event) => event,
                Err(e) => bail!("malformed XML at byte {}: {e}", reader.error_position()),
            };
            let end = reader.buffer_position() as usize;
            let (tag, empty) = match event {
                Event::Start(tag) => (tag, false),
                Event::Empty(tag) => (tag, true),
                Event::End(_) => {
                    let Some(index) = stack.pop() else {
                        bail!("malformed XML at byte {start}: an end tag without a start tag");
                    };
                    elements[index].close = Some((start, end));
                    continue;
                }
                Event::Eof => break,
                _ => continue,
            };
            let element = describe(&reader, &tag, (start, end), stack.last().copied())?;
            let index = elements.len();
            if let Some(&parent) = stack.last() {
                elements[parent].children.push(index);
            }
            elements.push(element);
            if !empty {
                if stack.len() >= MAX_DEPTH {
                    bail!("elements nested deeper than {MAX_DEPTH}");
                }
                stack.push(index);
            }
        }
        if let Some(&open) = stack.last() {
            bail!("malformed XML: <{}> is never closed", elements[open].qname);
        }
        if elements.is_empty() {
            bail!("no XML elements");
        }
        Ok(Self { text, elements })
    }

    /// The text between an element's start and end tags (`""` for an empty element).
    pub fn inner_text(&self, index: usize) -> &'a str {
        let element = &self.elements[index];
        match element.close {
            Some((close, _)) => &self.text[element.open.1..close],
            None => "",
        }
    }

    /// Children of `index` that are `{namespace}local`.
    pub fn children_named(&self, index: usize, namespace: &str, local: &str) -> Vec<usize> {
        self.elements[index]
            .children
            .iter()
            .copied()
            .filter(|&c| self.elements[c].is(namespace, local))
            .collect()
    }

    /// The prefix bound to `namespace` where `index` is (its own declarations first, then its
    /// ancestors'), unless an inner declaration rebinds that prefix to something else.
    pub fn prefix_for(&self, index: usize, namespace: &str) -> Option<String> {
        let mut rebound: Vec<&str> = Vec::new();
        let mut at = Some(index);
        while let Some(i) = at {
            for (prefix, uri) in &self.elements[i].declarations {
                if uri == namespace && !prefix.is_empty() && !rebound.contains(&prefix.as_str()) {
                    return Some(prefix.clone());
                }
                rebound.push(prefix);
            }
            at = self.elements[i].parent;
        }
        None
    }

    /// Whether `prefix` is bound (to anything) where `index` is.
    pub fn prefix_in_scope(&self, index: usize, prefix: &str) -> bool {
        let mut at = Some(index);
        while let Some(i) = at {
            if self.elements[i]
                .declarations
                .iter()
                .any(|(p, _)| p == prefix)
            {
                return true;
            }
            at = self.elements[i].parent;
        }
        false
    }
}

fn describe(
    reader: &NsReader<&[u8]>,
    tag: &BytesStart<'_>,
    open: (usize, usize),
    parent: Option<usize>,
) -> Result<Element> {
    let namespace_of = |result: ResolveResult<'_>| match result {
        ResolveResult::Bound(ns) => Some(String::from_utf8_lossy(ns.as_ref()).into_owned()),
        _ => None,
    };
    let (ns, local) = reader.resolver().resolve_element(tag.name());
    let mut declarations = Vec::new();
    let mut attributes = Vec::new();
    for attribute in tag.attributes() {
        let attribute = attribute.map_err(|e| anyhow::anyhow!("malformed attribute: {e}"))?;
        let key = String::from_utf8_lossy(attribute.key.as_ref()).into_owned();
        let value = String::from_utf8_lossy(&attribute.value).into_owned();
        if let Some(prefix) = key.strip_prefix("xmlns:") {
            declarations.push((prefix.to_string(), value));
        } else if key == "xmlns" {
            declarations.push((String::new(), value));
        } else {
            let (ns, local) = reader.resolver().resolve_attribute(attribute.key);
            attributes.push((
                namespace_of(ns),
                String::from_utf8_lossy(local.as_ref()).into_owned(),
            ));
        }
    }
    Ok(Element {
        namespace: namespace_of(ns),
        local: String::from_utf8_lossy(local.as_ref()).into_owned(),
        qname: String::from_utf8_lossy(tag.name().as_ref()).into_owned(),
        open,
        close: None,
        parent,
        children: Vec::new(),
        declarations,
        attributes,
    })
}
