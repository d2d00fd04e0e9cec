//! `tag` end to end on real files: the three output formats, labels that match the ground truth,
//! unreadable photos reported without stopping the run, XMP sidecars merged into existing ones,
//! shards that split a collection exactly, resuming after `kill -9`, and the HTML gallery driven
//! in headless Chromium through WebDriver.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{fixtures, run, succeeded};
use serde_json::{Value, json};

const TAG: &str = env!("CARGO_BIN_EXE_tag");

fn ok(out: &Output) -> Value {
    serde_json::from_str(&succeeded(out)).expect("tag prints one json summary")
}

/// A collection under `dir/photos`: `n` generated shapes images (with their ground truth), the
/// real photos in awkward encodings, the broken files, and a text file that is not a photo.
/// Returns ground truth: file name → set of shape names.
fn collection(dir: &Path, n: usize, size: u32) -> BTreeMap<String, BTreeSet<String>> {
    let size = size.to_string();
    let made = run(
        env!("CARGO_BIN_EXE_make-shapes"),
        &[
            "shapes",
            "-n",
            &n.to_string(),
            "--seed",
            "31",
            "--size",
            &size,
        ],
        dir,
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let photos = dir.join("photos");
    std::fs::create_dir_all(photos.join("real/broken")).unwrap();
    std::fs::rename(dir.join("shapes/images"), photos.join("shapes")).unwrap();
    for f in [
        "astronaut.jpg",
        "chelsea.png",
        "rocket_exif_rot90.jpg",
        "hubble_deep_field_cmyk.jpg",
        "camera_gray.png",
        "logo_rgba.webp",
    ] {
        std::fs::copy(
            fixtures().join("photos").join(f),
            photos.join("real").join(f),
        )
        .unwrap();
    }
    for f in BROKEN {
        std::fs::copy(
            fixtures().join("photos/broken").join(f),
            photos.join("real/broken").join(f),
        )
        .unwrap();
    }
    std::fs::write(photos.join("real/notes.txt"), "not a photo").unwrap();

    let coco: Value =
        serde_json::from_slice(&std::fs::read(dir.join("shapes/annotations.json")).unwrap())
            .unwrap();
    let names: HashMap<u64, String> = coco["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_u64().unwrap(),
                c["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let files: HashMap<u64, String> = coco["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_u64().unwrap(),
                i["file_name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut truth: BTreeMap<String, BTreeSet<String>> = files
        .values()
        .map(|f| (f.clone(), BTreeSet::new()))
        .collect();
    for a in coco["annotations"].as_array().unwrap() {
        let file = &files[&a["image_id"].as_u64().unwrap()];
        truth
            .get_mut(file)
            .unwrap()
            .insert(names[&a["category_id"].as_u64().unwrap()].clone());
    }
    truth
}

const BROKEN: [&str; 4] = [
    "truncated.jpg",
    "empty.jpg",
    "notes.jpg",
    "bomb_100000x100000.png",
];
const GOOD_REAL: usize = 6;

#[derive(Debug, Clone, PartialEq)]
struct Row {
    file: String,
    labels: Vec<String>,
    error: Option<String>,
}

fn from_json_record(v: &Value) -> Row {
    Row {
        file: v["file"].as_str().unwrap().to_string(),
        labels: v["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["label"].as_str().unwrap().to_string())
            .collect(),
        error: v["error"].as_str().map(str::to_string),
    }
}

fn read_jsonl(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends mid-record",
        path.display()
    );
    text.lines()
        .map(|l| {
            from_json_record(
                &serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")),
            )
        })
        .collect()
}

/// A minimal CSV reader (quoted fields with doubled quotes), independent of the app's own.
fn read_csv(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut rows = Vec::new();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("file,model,labels,error,size,modified"));
    for line in lines {
        let mut fields = vec![String::new()];
        let (mut quoted, mut chars) = (false, line.chars().peekable());
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    chars.next();
                    fields.last_mut().unwrap().push('"');
                }
                ('"', _) => quoted = !quoted,
                (',', false) => fields.push(String::new()),
                (c, _) => fields.last_mut().unwrap().push(c),
            }
        }
        assert_eq!(fields.len(), 6, "{line}");
        // The photo's size and modification time: numbers for every file on disk.
        assert!(
            fields[4].parse::<u64>().is_ok() && fields[5].parse::<i128>().is_ok(),
            "{line}"
        );
        let labels = fields[2]
            .split(';')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (label, score) = s.rsplit_once(':').unwrap();
                let score: f32 = score.parse().unwrap();
                assert!((0.0..=1.0).contains(&score));
                label.to_string()
            })
            .collect();
        rows.push(Row {
            file: fields[0].clone(),
            labels,
            error: (!fields[3].is_empty()).then(|| fields[3].clone()),
        });
    }
    rows
}

fn short(file: &str) -> String {
    Path::new(file)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// `tag`'s default precision (bf16 products on CPUs with native bf16, AMX included) gives the
/// labels f32 gives, with the embedded model at its calibrated thresholds, on every readable test
/// photo (the condition for defaulting to bf16). On CPUs without native bf16 both runs are f32.
#[test]
fn default_precision_labels_equal_f32_labels_on_the_real_test_photos() {
    let dir = tempfile::tempdir().unwrap();
    let photos = fixtures().join("photos");
    let summary = ok(&run(
        TAG,
        &[photos.to_str().unwrap(), "-o", "default.jsonl"],
        dir.path(),
    ));
    ok(&run(
        TAG,
        &[
            photos.to_str().unwrap(),
            "-o",
            "f32.jsonl",
            "--dtype",
            "f32",
        ],
        dir.path(),
    ));
    let labels = |name: &str| -> BTreeMap<String, BTreeSet<String>> {
        read_jsonl(&dir.path().join(name))
            .into_iter()
            .filter(|r| r.error.is_none())
            .map(|r| (r.file, r.labels.into_iter().collect()))
            .collect()
    };
    let (default, f32) = (labels("default.jsonl"), labels("f32.jsonl"));
    assert!(f32.len() >= 20, "{} readable photos: {summary}", f32.len());
    assert_eq!(
        default.keys().collect::<Vec<_>>(),
        f32.keys().collect::<Vec<_>>()
    );
    for (file, want) in &f32 {
        assert_eq!(
            &default[file], want,
            "{file}: default precision against f32"
        );
    }
}

#[test]
fn formats_agree_labels_match_ground_truth_and_bad_photos_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let truth = collection(dir.path(), 60, 64);
    let summary = ok(&run(TAG, &["photos", "-o", "tags.jsonl"], dir.path()));
    ok(&run(
        TAG,
        &["photos", "--format", "csv", "-o", "tags.csv"],
        dir.path(),
    ));
    ok(&run(
        TAG,
        &["photos", "--format", "json", "-o", "tags.json"],
        dir.path(),
    ));

    let jsonl = read_jsonl(&dir.path().join("tags.jsonl"));
    let csv = read_csv(&dir.path().join("tags.csv"));
    let json: Vec<Row> =
        serde_json::from_slice::<Vec<Value>>(&std::fs::read(dir.path().join("tags.json")).unwrap())
            .unwrap()
            .iter()
            .map(from_json_record)
            .collect();
    let sorted = |mut v: Vec<Row>| {
        v.sort_by(|a, b| a.file.cmp(&b.file));
        v
    };
    let (jsonl, csv, json) = (sorted(jsonl), sorted(csv), sorted(json));
    assert_eq!(
        jsonl.len(),
        60 + GOOD_REAL + BROKEN.len(),
        "every photo once; notes.txt ignored"
    );
    assert_eq!(jsonl, csv);
    assert_eq!(jsonl, json);

    // --exact-decode (every JPEG pixel, as the evaluation apps decode) names the same labels as
    // the default DCT-scaled decode, photo for photo, and fails on the same files.
    ok(&run(
        TAG,
        &["photos", "--exact-decode", "-o", "exact.jsonl"],
        dir.path(),
    ));
    let exact_decode = sorted(read_jsonl(&dir.path().join("exact.jsonl")));
    let label_sets = |rows: &[Row]| -> Vec<(String, BTreeSet<String>, bool)> {
        rows.iter()
            .map(|r| {
                let labels = r.labels.iter().cloned().collect();
                (r.file.clone(), labels, r.error.is_some())
            })
            .collect()
    };
    assert_eq!(label_sets(&exact_decode), label_sets(&jsonl));

    // Broken files: a record with the reason, in the summary too, and the run still succeeded.
    let bad: BTreeSet<String> = jsonl
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| short(&r.file))
        .collect();
    assert_eq!(bad, BROKEN.iter().map(|s| s.to_string()).collect());
    for r in jsonl.iter().filter(|r| r.error.is_some()) {
        assert!(
            r.error.as_ref().unwrap().contains(&short(&r.file)),
            "error names the file: {r:?}"
        );
    }
    assert_eq!(
        summary["unreadable"].as_array().unwrap().len(),
        BROKEN.len()
    );
    assert_eq!(summary["tagged"].as_u64().unwrap() as usize, 60 + GOOD_REAL);

    // The embedded model with its calibrated thresholds names the shapes in the picture.
    let shapes: Vec<&Row> = jsonl
        .iter()
        .filter(|r| r.file.contains("/shapes/"))
        .collect();
    let exact = shapes
        .iter()
        .filter(|r| r.labels.iter().cloned().collect::<BTreeSet<_>>() == truth[&short(&r.file)])
        .count();
    assert!(
        exact * 10 >= shapes.len() * 8,
        "{exact}/{} photos tagged exactly",
        shapes.len()
    );

    // Running again finds everything done (by file, however the folder is spelt).
    let again = ok(&run(TAG, &["./photos/", "-o", "tags.jsonl"], dir.path()));
    assert_eq!(again["tagged"], 0);
    assert_eq!(
        again["already_tagged"].as_u64().unwrap() as usize,
        60 + GOOD_REAL
    );
    // Failed photos are tried again (they may have been fixed since), and fail again.
    assert_eq!(again["unreadable"].as_array().unwrap().len(), BROKEN.len());

    // A missing folder is a clear error.
    let out = run(TAG, &["nowhere"], dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere: no such file or directory"));
}

#[test]
fn xmp_sidecars_keep_what_was_there() {
    let dir = tempfile::tempdir().unwrap();
    collection(dir.path(), 8, 64);
    let shapes = dir.path().join("photos/shapes");
    let first = std::fs::read_dir(&shapes)
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let existing = "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n<x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\n \
         <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\n  <rdf:Description rdf:about=\"\" \
         xmlns:dc=\"http://purl.org/dc/elements/1.1/\" xmlns:xmp=\"http://ns.adobe.com/xap/1.0/\" xmp:Rating=\"4\">\n   \
         <dc:creator><rdf:Seq><rdf:li>Ada</rdf:li></rdf:Seq></dc:creator>\n   <dc:subject>\n    <rdf:Bag>\n     \
         <rdf:li>holiday &amp; beach</rdf:li>\n    </rdf:Bag>\n   </dc:subject>\n  </rdf:Description>\n </rdf:RDF>\n\
         </x:xmpmeta>\n<?xpacket end=\"w\"?>\n";
    let sidecar = PathBuf::from(format!("{}.xmp", first.display()));
    std::fs::write(&sidecar, existing).unwrap();

    ok(&run(TAG, &["photos", "--xmp", "-o", "a.jsonl"], dir.path()));
    let rows = read_jsonl(&dir.path().join("a.jsonl"));
    for r in rows
        .iter()
        .filter(|r| r.error.is_none() && !r.labels.is_empty())
    {
        let doc = std::fs::read_to_string(dir.path().join(format!("{}.xmp", r.file))).unwrap();
        for l in &r.labels {
            assert_eq!(
                doc.matches(&format!("<rdf:li>{l}</rdf:li>")).count(),
                1,
                "{doc}"
            );
        }
    }
    for r in rows.iter().filter(|r| r.error.is_some()) {
        assert!(
            !dir.path().join(format!("{}.xmp", r.file)).exists(),
            "no sidecar for an unreadable file"
        );
    }
    let merged = std::fs::read_to_string(&sidecar).unwrap();
    for kept in [
        "<rdf:li>Ada</rdf:li>",
        "xmp:Rating=\"4\"",
        "<rdf:li>holiday &amp; beach</rdf:li>",
    ] {
        assert!(merged.contains(kept), "lost {kept}: {merged}");
    }
    // Tagging again into a fresh output merges, never duplicates.
    ok(&run(TAG, &["photos", "--xmp", "-o", "b.jsonl"], dir.path()));
    assert_eq!(std::fs::read_to_string(&sidecar).unwrap(), merged);
}

#[test]
fn shards_split_the_collection_exactly() {
    let dir = tempfile::tempdir().unwrap();
    collection(dir.path(), 25, 64);
    ok(&run(
        TAG,
        &["photos", "--shard", "0/2", "-o", "s0.jsonl"],
        dir.path(),
    ));
    ok(&run(
        TAG,
        &["photos", "--shard", "1/2", "-o", "s1.jsonl"],
        dir.path(),
    ));
    ok(&run(TAG, &["photos", "-o", "all.jsonl"], dir.path()));
    let files = |f: &str| -> BTreeSet<String> {
        read_jsonl(&dir.path().join(f))
            .into_iter()
            .map(|r| r.file)
            .collect()
    };
    let (s0, s1, all) = (files("s0.jsonl"), files("s1.jsonl"), files("all.jsonl"));
    assert!(s0.is_disjoint(&s1));
    assert_eq!(&s0 | &s1, all);
    assert!(s0.len().abs_diff(s1.len()) <= 1);
    let out = run(TAG, &["photos", "--shard", "2/2"], dir.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shard 2/2"));
}

#[test]
fn a_killed_run_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let n = 240;
    collection(dir.path(), n, 64);
    let out = dir.path().join("tags.jsonl");
    // Large inputs and small batches make the run long enough to kill part way through.
    let args = [
        "photos",
        "-o",
        "tags.jsonl",
        "--input-size",
        "448",
        "-b",
        "2",
        "-j",
        "1",
    ];
    let mut child = Command::new(TAG)
        .args(args)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&out)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= 20 || start.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = std::fs::read_to_string(&out).unwrap();
    let complete_before = before.lines().filter(|l| l.ends_with('}')).count();
    assert!(
        complete_before < n,
        "the first run finished before it could be killed; the test proves nothing"
    );
    // Whatever the kill left, also leave the half-written record a crash mid-write would.
    let mut f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    f.write_all(b"{\"file\":\"photos/shapes/0000").unwrap();
    drop(f);

    let summary = ok(&run(TAG, &args, dir.path()));
    assert!(summary["already_tagged"].as_u64().unwrap() >= 10);
    let rows = read_jsonl(&out);
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.error.is_none()) {
        *seen.entry(&r.file).or_default() += 1;
    }
    assert_eq!(seen.len(), n + GOOD_REAL, "every readable photo tagged");
    assert!(
        seen.values().all(|&c| c == 1),
        "a photo tagged twice: {seen:?}"
    );
}

/// Runs `tag` with extra environment variables.
fn run_with_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(TAG)
        .args(args)
        .current_dir(cwd)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .envs(env.iter().copied())
        .output()
        .expect("tag runs")
}

#[test]
fn scheduler_shards_name_their_outputs_and_merge_into_one_record_per_photo() {
    let dir = tempfile::tempdir().unwrap();
    collection(dir.path(), 14, 64);
    // A Slurm job array `--array=1-3`: tasks 1, 2, 3 are shards 0, 1, 2 of 3.
    for task in ["1", "2", "3"] {
        let env = [
            ("SLURM_ARRAY_TASK_ID", task),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ];
        ok(&run_with_env(
            &["photos", "--shard", "auto"],
            dir.path(),
            &env,
        ));
    }
    // A Kubernetes Indexed Job pod, writing CSV.
    let k8s = [("JOB_COMPLETION_INDEX", "1"), ("TAG_SHARD_COUNT", "2")];
    ok(&run_with_env(
        &["photos", "--shard", "auto", "--format", "csv"],
        dir.path(),
        &k8s,
    ));
    assert!(dir.path().join("tags.1-of-2.csv").is_file());
    // Neither scheduler: a clear refusal.
    let none = run_with_env(&["photos", "--shard", "auto"], dir.path(), &[]);
    assert!(!none.status.success());
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(err.contains("Slurm") && err.contains("Kubernetes"), "{err}");

    let shard_files: Vec<String> = (0..3).map(|i| format!("tags.{i}-of-3.jsonl")).collect();
    let files = |f: &str| -> BTreeSet<String> {
        read_jsonl(&dir.path().join(f))
            .into_iter()
            .map(|r| r.file)
            .collect()
    };
    for (i, a) in shard_files.iter().enumerate() {
        for b in &shard_files[i + 1..] {
            assert!(files(a).is_disjoint(&files(b)), "{a} and {b} overlap");
        }
    }
    // Merged (and with the gallery) they are the whole collection, one record per photo, the
    // same records a single run writes.
    let mut args = vec!["--merge"];
    args.extend(shard_files.iter().map(String::as_str));
    args.extend(["-o", "merged.jsonl", "--html", "merged.html"]);
    let summary = ok(&run(TAG, &args, dir.path()));
    ok(&run(TAG, &["photos", "-o", "single.jsonl"], dir.path()));
    let sorted = |f: &str| {
        let mut rows = read_jsonl(&dir.path().join(f));
        rows.sort_by(|a, b| a.file.cmp(&b.file));
        rows
    };
    let (merged, single) = (sorted("merged.jsonl"), sorted("single.jsonl"));
    assert_eq!(merged, single);
    assert_eq!(summary["records"].as_u64().unwrap() as usize, single.len());
    assert!(
        std::fs::read_to_string(dir.path().join("merged.html"))
            .unwrap()
            .contains("<html")
    );
    // Merging an output into itself with a newer shard: still one record per photo.
    ok(&run(
        TAG,
        &[
            "--merge",
            "merged.jsonl",
            "tags.0-of-3.jsonl",
            "-o",
            "merged.jsonl",
        ],
        dir.path(),
    ));
    assert_eq!(sorted("merged.jsonl"), single);
    // A name without a known extension is refused, naming the file.
    std::fs::write(dir.path().join("tags.txt"), "").unwrap();
    let bad = run(TAG, &["--merge", "tags.txt"], dir.path());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("tags.txt"));
}

#[test]
fn edited_photos_are_tagged_again_and_prune_drops_removed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for f in ["astronaut.jpg", "chelsea.png", "camera_gray.png"] {
        std::fs::copy(fixtures().join("photos").join(f), photos.join(f)).unwrap();
    }
    for format in ["jsonl", "csv"] {
        let out = format!("tags.{format}");
        let args = ["photos", "--format", format, "-o", out.as_str()];
        let first = ok(&run(TAG, &args, dir.path()));
        assert_eq!(first["tagged"], 3, "{format}");
        let again = ok(&run(TAG, &args, dir.path()));
        assert_eq!(
            (again["tagged"].as_u64(), again["already_tagged"].as_u64()),
            (Some(0), Some(3))
        );

        // An edit: other content (so another size), written now (another modification time).
        std::fs::copy(
            fixtures().join("photos/chelsea.png"),
            photos.join("astronaut.jpg"),
        )
        .unwrap();
        let after_edit = ok(&run(TAG, &args, dir.path()));
        assert_eq!(
            after_edit["tagged"], 1,
            "{format}: the edited photo is tagged again"
        );
        let rows = if format == "csv" {
            read_csv(&dir.path().join(&out))
        } else {
            read_jsonl(&dir.path().join(&out))
        };
        assert_eq!(rows.len(), 3, "{format}: one record per photo: {rows:?}");
        let edited = rows
            .iter()
            .find(|r| r.file.ends_with("astronaut.jpg"))
            .unwrap();
        let chelsea = rows
            .iter()
            .find(|r| r.file.ends_with("chelsea.png"))
            .unwrap();
        assert_eq!(
            edited.labels, chelsea.labels,
            "{format}: the record is the new content's"
        );

        // A removed photo keeps its record unless --prune is given.
        std::fs::rename(photos.join("camera_gray.png"), dir.path().join("away.png")).unwrap();
        let kept = ok(&run(TAG, &args, dir.path()));
        assert_eq!(kept["pruned"], 0);
        let pruned = ok(&run(TAG, &[&args[..], &["--prune"]].concat(), dir.path()));
        assert_eq!(pruned["pruned"], 1, "{format}");
        let text = std::fs::read_to_string(dir.path().join(&out)).unwrap();
        assert!(!text.contains("camera_gray"), "{format}: {text}");
        assert!(
            text.contains("astronaut") && text.contains("chelsea"),
            "{format}: {text}"
        );
        std::fs::rename(dir.path().join("away.png"), photos.join("camera_gray.png")).unwrap();
        std::fs::copy(
            fixtures().join("photos/astronaut.jpg"),
            photos.join("astronaut.jpg"),
        )
        .unwrap();
    }
}

/// Chromium's binary, or a message saying how to install it.
fn chromium() -> (PathBuf, PathBuf) {
    let find = |names: &[&str]| {
        names.iter().find_map(|n| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join(n))
                .find(|p| p.is_file())
        })
    };
    let browser = find(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = find(&["chromedriver"]);
    match (browser, driver) {
        (Some(b), Some(d)) => (b, d),
        _ => panic!(
            "the gallery test needs Chromium and ChromeDriver on PATH (Debian: apt-get install chromium chromium-driver)"
        ),
    }
}

/// A headless browser session over the WebDriver protocol.
struct Browser {
    driver: Child,
    base: String,
    agent: ureq::Agent,
}

impl Browser {
    fn start() -> Self {
        let (browser, driver_bin) = chromium();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let root = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while agent.get(&format!("{root}/status")).call().is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": browser, "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]},
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let mut me = Self {
            driver,
            base: root,
            agent,
        };
        let session = me.post("session", &caps);
        me.base = format!(
            "{}/session/{}",
            me.base,
            session["sessionId"].as_str().expect("a session id")
        );
        me
    }

    fn post(&mut self, path: &str, body: &Value) -> Value {
        let url = format!("{}/{path}", self.base);
        let mut resp = self.agent.post(&url).send_json(body).unwrap();
        let v: Value = resp.body_mut().read_json().unwrap();
        assert!(resp.status().is_success(), "{url}: {v}");
        v["value"].clone()
    }

    fn script(&mut self, js: &str) -> Value {
        self.post("execute/sync", &json!({"script": js, "args": []}))
    }

    fn click(&mut self, css: &str) {
        let el = self.post("element", &json!({"using": "css selector", "value": css}));
        let id = el
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        self.post(&format!("element/{id}/click"), &json!({}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.base).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_html_gallery_works_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    collection(dir.path(), 30, 64);
    let summary = ok(&run(
        TAG,
        &["photos", "-o", "tags.jsonl", "--html", "gallery.html"],
        dir.path(),
    ));
    let rows = read_jsonl(&dir.path().join("tags.jsonl"));
    let good: Vec<&Row> = rows.iter().filter(|r| r.error.is_none()).collect();
    assert_eq!(summary["tagged"].as_u64().unwrap() as usize, good.len());

    let mut browser = Browser::start();
    let page = dir.path().join("gallery.html").canonicalize().unwrap();
    browser.post("url", &json!({"url": format!("file://{}", page.display())}));
    let cards = browser.script("return document.querySelectorAll('.card').length");
    assert_eq!(cards.as_u64().unwrap() as usize, good.len());
    let broken_images = browser.script(
        "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length",
    );
    assert_eq!(broken_images, 0, "every thumbnail decodes");
    let listed_bad = browser.script("return document.querySelectorAll('#bad li').length");
    assert_eq!(listed_bad.as_u64().unwrap() as usize, BROKEN.len());

    // Pick each label in the filter as a user would; the visible cards are the photos with it.
    let mut per_label: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &good {
        for l in &r.labels {
            *per_label.entry(l).or_default() += 1;
        }
    }
    assert!(per_label.len() >= 3, "{per_label:?}");
    let visible = "return [...document.querySelectorAll('.card')].filter(c => c.offsetParent !== null).length";
    for (label, count) in &per_label {
        browser.click(&format!("#filter option[value='{label}']"));
        assert_eq!(
            browser.script(visible).as_u64().unwrap() as usize,
            *count,
            "filter {label}"
        );
        let shown = browser.script("return document.getElementById('shown').textContent");
        assert_eq!(shown, format!("{count} shown"));
    }
    browser.click("#filter option[value='']");
    assert_eq!(
        browser.script(visible).as_u64().unwrap() as usize,
        good.len()
    );

    let logs = browser.post("se/log", &json!({"type": "browser"}));
    let errors: Vec<&Value> = logs
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
}
