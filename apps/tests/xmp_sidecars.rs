//! XMP sidecars merged with a real XML reader and checked with the real other program: sidecars
//! in darktable's form (`dc:subject` as an `rdf:Seq`) and as exiftool writes them (one
//! `rdf:Description` per namespace) are tagged twice with different models, and exiftool reads
//! back the user's keywords plus the second model's labels, the title and rating intact, with
//! no warning. Read-only and symlinked sidecars are left as they are; malformed ones are
//! refused, never rewritten; `--xmp-naming replace` writes `photo.xmp`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixtures, run, succeeded};
use serde_json::Value;
use tresnet_apps::xmp_sidecar::{TaggerKeywords, merge_keywords, new_document};

const TAG: &str = env!("CARGO_BIN_EXE_tag");

fn keywords(model: &str, labels: &[&str]) -> TaggerKeywords {
    TaggerKeywords {
        root: "auto".into(),
        model: model.into(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
    }
}

/// darktable's sidecar form: attributes on the description, `dc:subject` as an `rdf:Seq`.
const DARKTABLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:darktable="http://darktable.sf.net/"
    xmp:Rating="4"
    darktable:xmp_version="5">
   <dc:title>
    <rdf:Alt>
     <rdf:li xml:lang="x-default">Walk by the sea</rdf:li>
    </rdf:Alt>
   </dc:title>
   <dc:subject>
    <rdf:Seq>
     <rdf:li>holiday</rdf:li>
     <rdf:li>grandma &amp; me</rdf:li>
     <rdf:li>ring</rdf:li>
    </rdf:Seq>
   </dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"#;

fn subjects(doc: &str) -> Vec<String> {
    // Every rdf:li inside dc:subject, by plain text search (independent of the merger).
    let start = doc.find("<dc:subject>").expect("dc:subject");
    let end = doc.find("</dc:subject>").expect("closed");
    doc[start..end]
        .split("<rdf:li>")
        .skip(1)
        .map(|s| s.split("</rdf:li>").next().unwrap().replace("&amp;", "&"))
        .collect()
}

#[test]
fn a_second_model_replaces_the_first_ones_keywords_and_never_the_users() {
    let first = merge_keywords(
        DARKTABLE,
        &keywords("model_a", &["circle", "ring", "cross"]),
    )
    .unwrap();
    // The Seq stays a Seq, the user's keywords first and unchanged, `ring` not doubled.
    assert_eq!(
        subjects(&first),
        ["holiday", "grandma & me", "ring", "circle", "cross"]
    );
    assert!(
        !first.contains("<rdf:Bag><rdf:li>circle"),
        "no Bag inside the Seq"
    );
    assert_eq!(first.matches("<rdf:Seq>").count(), 1);
    assert!(first.contains("auto|model_a|circle") && first.contains("auto|model_a|cross"));
    assert!(
        !first.contains("auto|model_a|ring"),
        "the user's ring is not recorded as ours"
    );
    // Everything else byte for byte: every original line is still there, in order.
    let mut rest = first.as_str();
    for line in DARKTABLE.lines() {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("lost line {line:?}:\n{first}"));
        rest = &rest[at + line.len()..];
    }

    let second = merge_keywords(&first, &keywords("model_b", &["ring", "square"])).unwrap();
    assert_eq!(
        subjects(&second),
        ["holiday", "grandma & me", "ring", "square"]
    );
    assert!(!second.contains("model_a"), "{second}");
    assert!(second.contains("auto|model_b|square"));
    // The same keywords again change nothing.
    assert_eq!(
        merge_keywords(&second, &keywords("model_b", &["ring", "square"])).unwrap(),
        second
    );
    // A model with no labels for the photo takes its keywords back out.
    let cleared = merge_keywords(&second, &keywords("model_c", &[])).unwrap();
    assert_eq!(subjects(&cleared), ["holiday", "grandma & me", "ring"]);
}

#[test]
fn descriptions_prefixes_entities_and_empty_elements() {
    // exiftool's form: one Description per namespace, other prefixes, single quotes.
    let exiftool = "<?xpacket begin='\u{feff}' id='W5M0MpCehiHzreSzNTczkc9d'?>\n<x:xmpmeta xmlns:x='adobe:ns:meta/'>\n<r:RDF xmlns:r='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>\n <r:Description r:about=''\n  xmlns:xmp='http://ns.adobe.com/xap/1.0/'>\n  <xmp:Rating>3</xmp:Rating>\n </r:Description>\n <r:Description r:about=''\n  xmlns:d='http://purl.org/dc/elements/1.1/'>\n  <d:subject>\n   <r:Bag>\n    <r:li>caf&#233;</r:li>\n   </r:Bag>\n  </d:subject>\n </r:Description>\n</r:RDF>\n</x:xmpmeta>\n<?xpacket end='w'?>";
    let merged = merge_keywords(exiftool, &keywords("m", &["café", "dog"])).unwrap();
    assert!(merged.contains("<r:li>dog</r:li>"), "{merged}");
    assert!(
        !merged.contains("<r:li>café</r:li>"),
        "the entity form counts as the same keyword"
    );
    assert!(merged.contains("<xmp:Rating>3</xmp:Rating>"));
    assert!(
        merged.starts_with("<?xpacket begin='\u{feff}'") && merged.ends_with("<?xpacket end='w'?>")
    );
    assert!(
        merged.contains("xmlns:lr=\"http://ns.adobe.com/lightroom/1.0/\""),
        "{merged}"
    );

    // A self-closing description without keywords gains both properties and keeps its rating.
    let bare = r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4"/></rdf:RDF></x:xmpmeta>"#;
    let merged = merge_keywords(bare, &keywords("m", &["R&D <lab>"])).unwrap();
    assert!(merged.contains(r#"xmp:Rating="4""#), "{merged}");
    assert!(
        merged.contains("<dc:subject") && merged.contains("R&amp;D &lt;lab&gt;"),
        "{merged}"
    );
    assert!(merged.contains("</rdf:Description>"));

    // A fresh document round-trips through the merger unchanged.
    let fresh = new_document(&keywords("m", &["cat"]));
    assert_eq!(
        merge_keywords(&fresh, &keywords("m", &["cat"])).unwrap(),
        fresh
    );
}

#[test]
fn malformed_documents_are_refused() {
    for bad in [
        "not xml at all",
        "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF>",
        "<a><b></a></b>",
        r#"<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:subject="one"/></rdf:RDF>"#,
        r#"<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject>plain</dc:subject></rdf:Description></rdf:RDF>"#,
        "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"/>",
    ] {
        assert!(
            merge_keywords(bad, &keywords("m", &["dog"])).is_err(),
            "accepted {bad}"
        );
    }
    // Nesting deeper than any real sidecar is refused without recursion.
    let deep = format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000));
    assert!(merge_keywords(&deep, &keywords("m", &["dog"])).is_err());
}

fn exiftool() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("exiftool"))
        .find(|p| p.is_file())
        .expect("the XMP tests need exiftool on PATH (Debian: apt-get install libimage-exiftool-perl; scripts/test installs it)")
}

/// What exiftool reads from `sidecar`: subjects, hierarchical subjects, title, rating, and
/// whether it warned.
fn read_back(sidecar: &Path) -> Value {
    let out = Command::new(exiftool())
        .args(["-j", "-struct", "-XMP:all", "-Warning", "-Error"])
        .arg(sidecar)
        .output()
        .unwrap();
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    all[0].clone()
}

fn as_list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| i.to_string().trim_matches('"').to_string())
            .collect(),
        Value::Null => Vec::new(),
        other => vec![other.to_string().trim_matches('"').to_string()],
    }
}

#[test]
fn exiftool_reads_the_users_keywords_and_the_second_models_labels() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(
        fixtures().join("photos/astronaut.jpg"),
        photos.join("astronaut.jpg"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("photos/chelsea.png"),
        photos.join("chelsea.png"),
    )
    .unwrap();
    // astronaut: darktable's form; chelsea: written by exiftool itself.
    std::fs::write(photos.join("astronaut.jpg.xmp"), DARKTABLE).unwrap();
    let made = Command::new(exiftool())
        .args([
            "-q",
            "-XMP-dc:Subject=holiday",
            "-XMP-dc:Subject=grandma & me",
            "-XMP-dc:Title=Walk by the sea",
            "-XMP-xmp:Rating=4",
        ])
        .arg(photos.join("chelsea.png.xmp"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // A second model: the embedded bundle under another name.
    let second = dir.path().join("shapes_second");
    std::fs::create_dir_all(&second).unwrap();
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/assets/shapes_multilabel");
    for f in ["model.safetensors", "config.json"] {
        std::fs::copy(assets.join(f), second.join(f)).unwrap();
    }

    // First model at a low threshold (many labels), then the second at its calibrated ones.
    let a: Value = serde_json::from_str(&succeeded(&run(
        TAG,
        &["photos", "--xmp", "--threshold", "0.01", "-o", "a.jsonl"],
        dir.path(),
    )))
    .unwrap();
    assert!(a["sidecar_failures"].as_array().unwrap().is_empty(), "{a}");
    let first_labels: Vec<Vec<String>> = ["astronaut.jpg.xmp", "chelsea.png.xmp"]
        .iter()
        .map(|s| as_list(&read_back(&photos.join(s))["Subject"]))
        .collect();
    let b: Value = serde_json::from_str(&succeeded(&run(
        TAG,
        &[
            "photos",
            "--xmp",
            "--weights",
            second.to_str().unwrap(),
            "-o",
            "b.jsonl",
        ],
        dir.path(),
    )))
    .unwrap();
    assert!(b["sidecar_failures"].as_array().unwrap().is_empty(), "{b}");
    let records: Vec<Value> = std::fs::read_to_string(dir.path().join("b.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, sidecar) in ["astronaut.jpg.xmp", "chelsea.png.xmp"].iter().enumerate() {
        let photo = sidecar.trim_end_matches(".xmp");
        let record = records
            .iter()
            .find(|r| r["file"].as_str().unwrap().ends_with(photo))
            .unwrap();
        let labels: Vec<String> = record["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["label"].as_str().unwrap().to_string())
            .collect();
        let back = read_back(&photos.join(sidecar));
        assert!(
            back.get("Warning").is_none() && back.get("Error").is_none(),
            "{back}"
        );
        let mut want: Vec<String> = vec!["holiday".into(), "grandma & me".into()];
        if i == 0 {
            want.push("ring".into()); // the user's own, in the darktable sidecar
        }
        for l in &labels {
            if !want.contains(l) {
                want.push(l.clone());
            }
        }
        let got = as_list(&back["Subject"]);
        assert_eq!(
            got.iter().collect::<std::collections::BTreeSet<_>>(),
            want.iter().collect::<std::collections::BTreeSet<_>>(),
            "{sidecar}: {back}"
        );
        assert!(
            first_labels[i].len() > got.len(),
            "the first model's extra labels are gone: {:?} then {got:?}",
            first_labels[i]
        );
        assert_eq!(back["Title"], "Walk by the sea", "{back}");
        assert_eq!(back["Rating"], 4, "{back}");
        for entry in as_list(&back["HierarchicalSubject"]) {
            assert!(entry.starts_with("auto|shapes_second|"), "{entry}");
        }
    }
}

#[test]
fn read_only_symlinked_and_malformed_sidecars_are_left_and_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["a.jpg", "b.jpg", "c.jpg", "d.jpg"] {
        std::fs::copy(fixtures().join("photos/astronaut.jpg"), photos.join(name)).unwrap();
    }
    let read_only = photos.join("a.jpg.xmp");
    std::fs::write(&read_only, DARKTABLE).unwrap();
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o444)).unwrap();
    let target = dir.path().join("elsewhere.xmp");
    std::fs::write(&target, DARKTABLE).unwrap();
    std::os::unix::fs::symlink(&target, photos.join("b.jpg.xmp")).unwrap();
    let malformed = "<x:xmpmeta><rdf:RDF></x:xmpmeta>";
    std::fs::write(photos.join("c.jpg.xmp"), malformed).unwrap();

    let summary: Value = serde_json::from_str(&succeeded(&run(
        TAG,
        &["photos", "--xmp", "-o", "t.jsonl"],
        dir.path(),
    )))
    .unwrap();
    let failures = summary["sidecar_failures"].to_string();
    for name in ["a.jpg.xmp", "b.jpg.xmp", "c.jpg.xmp"] {
        assert!(failures.contains(name), "{name} not reported: {failures}");
    }
    assert_eq!(std::fs::read_to_string(&read_only).unwrap(), DARKTABLE);
    assert!(
        std::fs::symlink_metadata(photos.join("b.jpg.xmp"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), DARKTABLE);
    assert_eq!(
        std::fs::read_to_string(photos.join("c.jpg.xmp")).unwrap(),
        malformed
    );
    // The photo without a sidecar got a new one that exiftool reads.
    let fresh = read_back(&photos.join("d.jpg.xmp"));
    assert!(!as_list(&fresh["Subject"]).is_empty(), "{fresh}");
    assert!(fresh.get("Warning").is_none(), "{fresh}");
}

#[test]
fn replace_naming_writes_photo_dot_xmp() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(
        fixtures().join("photos/astronaut.jpg"),
        photos.join("astronaut.jpg"),
    )
    .unwrap();
    succeeded(&run(
        TAG,
        &[
            "photos",
            "--xmp",
            "--xmp-naming",
            "replace",
            "-o",
            "t.jsonl",
        ],
        dir.path(),
    ));
    assert!(photos.join("astronaut.xmp").is_file());
    assert!(!photos.join("astronaut.jpg.xmp").exists());
    let back = read_back(&photos.join("astronaut.xmp"));
    assert!(!as_list(&back["Subject"]).is_empty(), "{back}");
}
