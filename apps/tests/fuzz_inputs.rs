//! Seeded, bounded fuzzing of every reader a hostile file reaches, on the release build's own code
//! paths (stable toolchain, no instrumentation): each target mutates real seed files (the
//! fixtures, and small images in every format made here) and feeds them to the reader the
//! binaries use. A reader may refuse an input; it may not panic. A panicking input is saved under
//! `target/fuzz-crashes/` and fails the test.
//!
//! `FUZZ_ITERS` (default 300) sets the inputs per target, `FUZZ_SEED` the seed, `FUZZ_TARGET` one
//! target by name: `FUZZ_ITERS=1000000 FUZZ_TARGET=pth cargo test --release -p tresnet-apps --test
//! fuzz_inputs -- --nocapture` is the long run.
#![allow(clippy::print_stderr)] // each target reports its count and time

mod common;

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use common::fixtures;
use tresnet_apps::tag_records::{Format, read_existing};
use tresnet_apps::xmp_sidecar::{TaggerKeywords, merge_keywords, new_document};
use tresnet_data::coco::{CocoDataset, CocoOptions};
use tresnet_data::{DecodeLimits, PreprocessConfig, decode_rgb8_bytes, resize_for_model};
use tresnet_heads::predictions::ScoreFile;
use tresnet_tests::crafted_files::{stored_zip, zip_members};

/// SplitMix64: a small, seedable stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that sit on the edges parsers get wrong.
const INTERESTING: [u64; 10] = [
    0,
    1,
    0x7F,
    0xFF,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    0x8000_0000_0000_0000,
    u64::MAX,
    (1 << 58) + 1,
    1 << 32,
];

/// One to four random edits of `input`; `other` supplies bytes to splice in.
fn mutate(input: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len);
                out[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                out[at] = INTERESTING[rng.below(INTERESTING.len())] as u8;
            }
            2 if len >= 8 => {
                let at = rng.below(len - 7);
                let width = [2, 4, 8][rng.below(3)];
                let value = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                out[at..at + width].copy_from_slice(&value[..width]);
            }
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                out.drain(at..at + n);
            }
            5 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let copy = out[at..at + n].to_vec();
                let to = rng.below(len + 1);
                out.splice(to..to, copy);
            }
            6 if len > 0 => out.truncate(rng.below(len)),
            7 if !other.is_empty() => {
                let from = rng.below(other.len());
                let n = 1 + rng.below((other.len() - from).min(256));
                let at = rng.below(len + 1);
                out.splice(at..at, other[from..from + n].iter().copied());
            }
            _ => {}
        }
    }
    out
}

fn iterations() -> usize {
    std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED)
}

fn selected(target: &str) -> bool {
    std::env::var("FUZZ_TARGET").map_or(true, |t| t == target)
}

/// Feeds `iterations()` mutations of `corpus` to `read`; panics are saved and fail the test.
fn fuzz(target: &str, corpus: &[Vec<u8>], mut read: impl FnMut(&[u8])) {
    if !selected(target) {
        return;
    }
    assert!(!corpus.is_empty());
    let mut rng = Rng(seed() ^ target.len() as u64);
    let iters = iterations();
    let started = std::time::Instant::now();
    let mut crashes = Vec::new();
    for i in 0..iters {
        let a = &corpus[rng.below(corpus.len())];
        let b = &corpus[rng.below(corpus.len())];
        let input = mutate(a, b, &mut rng);
        if catch_unwind(AssertUnwindSafe(|| read(&input))).is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-crashes");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{target}-{i}"));
            std::fs::write(&path, &input).unwrap();
            crashes.push(path);
        }
    }
    eprintln!(
        "fuzz {target}: {iters} inputs, {} panics, {:.1} s",
        crashes.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        crashes.is_empty(),
        "{target}: inputs that panic: {crashes:?}"
    );
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

/// A scratch file that each input of a file-based reader is written to.
struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        // In memory where the system has a tmpfs: the inputs are rewritten for every run.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let path = dir.path().join(name);
        Self { _dir: dir, path }
    }
    fn holding(&self, bytes: &[u8]) -> &Path {
        std::fs::write(&self.path, bytes).unwrap();
        &self.path
    }
}

const CHECKPOINTS: [&str; 3] = [
    "tiny_asl_coco.pth",
    "tiny_mld_coco.pth",
    "tiny_v1_official.pth",
];

#[test]
fn checkpoints_whole_files() {
    let corpus: Vec<Vec<u8>> = CHECKPOINTS
        .iter()
        .map(|n| read(n))
        .chain([read("tiny_v1.safetensors")])
        .collect();
    let scratch = Scratch::new("weights.pth");
    fuzz("checkpoint", &corpus, |bytes| {
        let _ = tresnet::weights::read_weights_file(scratch.holding(bytes));
    });
}

#[test]
fn checkpoint_pickles() {
    // Structure-aware: only data.pkl is mutated, the archive around it stays valid, so the
    // unpickler and the tensor rebuild see the input.
    let archives: Vec<Vec<(String, Vec<u8>)>> = CHECKPOINTS
        .iter()
        .map(|n| zip_members(&fixtures().join(n)))
        .collect();
    let pickles: Vec<Vec<u8>> = archives
        .iter()
        .map(|m| {
            m.iter()
                .find(|(n, _)| n.ends_with("data.pkl"))
                .unwrap()
                .1
                .clone()
        })
        .collect();
    let scratch = Scratch::new("weights.pth");
    let mut which = 0usize;
    fuzz("pth", &pickles, |pickle| {
        which = (which + 1) % archives.len();
        let mut members = archives[which].clone();
        for (name, bytes) in &mut members {
            if name.ends_with("data.pkl") {
                *bytes = pickle.to_vec();
            }
        }
        let _ = tresnet::weights::read_weights_file(scratch.holding(&stored_zip(&members)));
    });
}

#[test]
fn safetensors_files() {
    let corpus = vec![
        read("tiny_v1.safetensors"),
        read("tiny_official_heads.safetensors"),
    ];
    let scratch = Scratch::new("model.safetensors");
    fuzz("safetensors", &corpus, |bytes| {
        let _ = tresnet::weights::read_weights_file(scratch.holding(bytes));
    });
}

#[test]
fn coco_annotations() {
    let corpus = vec![read("coco_ml_gt.json"), read("coco_det_gt.json")];
    fuzz("coco", &corpus, |bytes| {
        let _ = CocoDataset::from_json_bytes(bytes, Path::new("fuzz.json"), CocoOptions::default());
    });
}

/// Small images in every decoded format (and the broken fixtures), so one decode is cheap.
fn image_corpus() -> Vec<Vec<u8>> {
    let picture = image::RgbImage::from_fn(23, 17, |x, y| {
        image::Rgb([(x * 11) as u8, (y * 15) as u8, ((x + y) * 5) as u8])
    });
    let mut corpus = Vec::new();
    for format in [
        image::ImageFormat::Png,
        image::ImageFormat::Jpeg,
        image::ImageFormat::Gif,
        image::ImageFormat::Bmp,
        image::ImageFormat::Tiff,
        image::ImageFormat::WebP,
    ] {
        let mut bytes = Vec::new();
        image::DynamicImage::ImageRgb8(picture.clone())
            .write_to(&mut Cursor::new(&mut bytes), format)
            .unwrap();
        corpus.push(bytes);
    }
    let broken = fixtures().join("photos/broken");
    for entry in std::fs::read_dir(broken).unwrap() {
        let path = entry.unwrap().path();
        if std::fs::metadata(&path).unwrap().len() < 64 << 10 {
            corpus.push(std::fs::read(path).unwrap());
        }
    }
    corpus
}

#[test]
fn image_decoding_and_resizing() {
    let limits = DecodeLimits {
        max_pixels: 1 << 22,
        max_file_bytes: 1 << 20,
    };
    let mut crop = PreprocessConfig::imagenet_eval(32);
    crop.crop_pct = 0.875;
    let mut squish = PreprocessConfig::imagenet_eval(32);
    squish.resize_mode = tresnet_data::ResizeMode::Squish;
    fuzz("image", &image_corpus(), |bytes| {
        if let Ok(image) = decode_rgb8_bytes(bytes, Path::new("fuzz.img"), &limits) {
            let _ = resize_for_model(&image, &crop);
            let _ = resize_for_model(&image, &squish);
        }
    });
}

#[test]
fn xmp_merging() {
    let corpus: Vec<Vec<u8>> = [
        new_document(&TaggerKeywords {
            root: "auto".into(),
            model: "m".into(),
            labels: vec!["cat".into(), "R&D <lab>".into()],
        }),
        r#"<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4"><dc:subject><rdf:Seq><rdf:li>holiday</rdf:li><rdf:li>grandma &amp; me</rdf:li></rdf:Seq></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>"#.to_string(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    let keywords = TaggerKeywords {
        root: "auto".into(),
        model: "other".into(),
        labels: vec!["dog".to_string(), "a;b:c".to_string()],
    };
    fuzz("xmp", &corpus, |bytes| {
        if let Ok(text) = std::str::from_utf8(bytes) {
            let _ = merge_keywords(text, &keywords);
        }
    });
}

#[test]
fn tag_records_and_score_files() {
    let corpus: Vec<Vec<u8>> = vec![
        b"{\"file\":\"a.jpg\",\"model\":\"m\",\"labels\":[{\"label\":\"cat\",\"score\":0.5}],\"error\":null}\n{\"file\":\"b.jpg\",\"model\":\"m\",\"labels\":[],\"error\":\"bad\"}\n".to_vec(),
        b"file,model,labels,error\n\"a, \"\"b\"\".jpg\",m,cat:0.5000;d%3Bog:0.2500,\n\"line\nbreak.jpg\",m,,\"truncated, bad\"\n".to_vec(),
        b"image,cat,\"dog, wild\"\n1,0.25,0.5\n\"a, b.jpg\",1,0\n".to_vec(),
    ];
    let jsonl = Scratch::new("tags.jsonl");
    let csv = Scratch::new("tags.csv");
    let scores = Scratch::new("scores.csv");
    fuzz("records", &corpus, |bytes| {
        let _ = read_existing(jsonl.holding(bytes), Format::Jsonl);
        let _ = read_existing(csv.holding(bytes), Format::Csv);
        let _ = ScoreFile::read(scores.holding(bytes));
    });
}

#[test]
fn bundle_configs() {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/assets");
    let corpus: Vec<Vec<u8>> = [
        fixtures().join("tiny_v1.config.json"),
        fixtures().join("tiny_v2.config.json"),
        assets.join("shapes_multilabel/config.json"),
        assets.join("shapes_detection/config.json"),
    ]
    .iter()
    .map(|p| std::fs::read(p).unwrap())
    .collect();
    fuzz("bundle", &corpus, |bytes| {
        if let Ok(text) = std::str::from_utf8(bytes)
            && let Ok(hub) = tresnet::HubConfig::parse(text)
        {
            let _ = hub.to_tresnet_config();
            if let Some(cfg) = &hub.pretrained_cfg {
                let _ = PreprocessConfig::from_pretrained_cfg(cfg);
            }
        }
    });
}
