//! Crafted and unlucky inputs through the binaries, as a user meets them: each must end with exit
//! code 1 (or carry on, reporting the bad item) and a message naming the file and the problem,
//! within bounded memory (every run here is under `ulimit -v`), never with a signal or a hang.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{fixtures, run, succeeded};
use tresnet_tests::crafted_files::{
    memo_bomb_pickle, nested_lists_pickle, pth_with_first_dim, pth_with_pickle,
};

const COCO_EVAL: &str = env!("CARGO_BIN_EXE_coco-eval");
const EMBED: &str = env!("CARGO_BIN_EXE_embed");
const TAG: &str = env!("CARGO_BIN_EXE_tag");
const FINETUNE: &str = env!("CARGO_BIN_EXE_finetune");
const MAKE_SHAPES: &str = env!("CARGO_BIN_EXE_make-shapes");

/// Address-space cap for every run (KiB): far below what the attacks asked for (15 GB
/// intermediates, an exponential pickle), with room for the runtime's thread stacks.
const ADDRESS_SPACE_KIB: u64 = 6 << 20;

/// Runs `bin` under the address-space cap and a 120 s deadline.
fn run_capped(bin: &str, args: &[&str], cwd: &Path) -> Output {
    let started = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KIB}; exec timeout 120 \"$0\" \"$@\""
        ))
        .arg(bin)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("bash runs");
    assert!(
        started.elapsed() < Duration::from_secs(115),
        "{bin} {args:?} ran into the deadline"
    );
    out
}

/// The run failed cleanly: exit code 1 (not a signal, not a panic's 101), and its last stderr
/// line names `file` and contains `needle`.
fn refused(out: &Output, file: &str, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit code 1, got {:?}\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(file) && last.contains(needle),
        "the message must name {file} and say {needle:?}: {last}"
    );
    stderr
}

/// `dir/photos` holding copies of fixture photos: `(fixture name, name in the folder)`.
fn photo_folder(dir: &Path, photos: &[(&str, &str)]) -> PathBuf {
    let folder = dir.join("photos");
    std::fs::create_dir_all(&folder).unwrap();
    for (fixture, name) in photos {
        std::fs::copy(fixtures().join("photos").join(fixture), folder.join(name)).unwrap();
    }
    folder
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_tensor_larger_than_its_storage_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // ML-Decoder's query embedding claims (2^58 + 1, 64) elements over 80 × 64 floats: the size
    // product wraps to 64 in 64 bits.
    let crafted = pth_with_first_dim(
        &fixtures().join("tiny_mld_coco.pth"),
        "query_embed.weight",
        (1 << 58) + 1,
    );
    let path = write(dir.path(), "crafted.pth", &crafted);
    let out = run_capped(EMBED, &["--weights", path.to_str().unwrap()], dir.path());
    refused(&out, "crafted.pth", "query_embed.weight");
    // A view that needs more storage than the file has, without overflowing.
    let oversized = pth_with_first_dim(
        &fixtures().join("tiny_mld_coco.pth"),
        "query_embed.weight",
        81,
    );
    let path = write(dir.path(), "oversized.pth", &oversized);
    let out = run_capped(EMBED, &["--weights", path.to_str().unwrap()], dir.path());
    let stderr = refused(&out, "oversized.pth", "query_embed.weight");
    assert!(stderr.contains("storage"), "{stderr}");
}

#[test]
fn pickle_bombs_end_in_a_clear_error_within_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixtures().join("tiny_asl_coco.pth");
    let bomb = memo_bomb_pickle(60);
    assert!(bomb.len() < 600, "a {}-byte pickle", bomb.len());
    for (name, pickle) in [
        ("memo_bomb.pth", bomb),
        ("nested.pth", nested_lists_pickle(1_000_000)),
    ] {
        let path = write(dir.path(), name, &pth_with_pickle(&base, pickle));
        let started = Instant::now();
        let out = run_capped(EMBED, &["--weights", path.to_str().unwrap()], dir.path());
        refused(&out, name, "no state dict found");
        assert!(started.elapsed() < Duration::from_secs(30), "{name}");
    }
    // A pickle past the size cap is refused before it is decoded.
    let path = write(
        dir.path(),
        "big_pickle.pth",
        &pth_with_pickle(&base, nested_lists_pickle(2_000_000)),
    );
    let out = Command::new(EMBED)
        .args(["--weights", path.to_str().unwrap()])
        .env("TRESNET_MAX_PICKLE_BYTES", "1M")
        .output()
        .unwrap();
    refused(&out, "big_pickle.pth", "TRESNET_MAX_PICKLE_BYTES");
}

/// A 1 × 100000 PNG (a few kilobytes).
fn strip_png(dir: &Path) -> PathBuf {
    let path = dir.join("strip.png");
    let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let encoder = image::codecs::png::PngEncoder::new_with_quality(
        file,
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::NoFilter,
    );
    image::GrayImage::new(1, 100_000)
        .write_with_encoder(encoder)
        .unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 16 << 10);
    path
}

#[test]
fn a_hostile_aspect_ratio_is_cropped_before_it_is_resized() {
    let dir = tempfile::tempdir().unwrap();
    let strip = strip_png(dir.path());
    let out = run_capped(
        EMBED,
        &[
            "--input",
            strip.to_str().unwrap(),
            "--resize",
            "crop",
            "--input-size",
            "224",
            "-o",
            "features.safetensors",
        ],
        dir.path(),
    );
    succeeded(&out);
    assert!(dir.path().join("features.safetensors").is_file());
}

#[test]
fn special_files_named_as_photos_are_reported_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    succeeded(&run(
        MAKE_SHAPES,
        &["shapes", "-n", "3", "--seed", "5"],
        dir.path(),
    ));
    let images = dir.path().join("shapes/images");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    // One image becomes a FIFO (opening it for reading would block for ever), one a link to an
    // endless device.
    std::fs::remove_file(&names[0]).unwrap();
    assert_eq!(
        Command::new("mkfifo")
            .arg(&names[0])
            .status()
            .unwrap()
            .code(),
        Some(0)
    );
    std::fs::remove_file(&names[1]).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &names[1]).unwrap();
    let out = run_capped(
        COCO_EVAL,
        &[
            "--annotations",
            "shapes/annotations.json",
            "--images",
            "shapes/images",
        ],
        dir.path(),
    );
    let stdout = succeeded(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("FIFO"), "{all}");
    assert!(all.contains("character device"), "{all}");
}

#[test]
fn a_bundle_whose_labels_disagree_with_its_classifier_is_refused_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/assets/shapes_multilabel");
    std::fs::copy(
        assets.join("model.safetensors"),
        bundle.join("model.safetensors"),
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(assets.join("config.json")).unwrap())
            .unwrap();
    let names = config["label_names"].as_array_mut().unwrap();
    names.pop();
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    photo_folder(dir.path(), &[("chelsea.png", "chelsea.png")]);
    let out = run_capped(TAG, &["photos", "--weights", "bundle"], dir.path());
    refused(&out, "bundle", "label names for a model of");
}

#[test]
fn training_settings_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, key) in [
        (vec!["-b", "0"], "batch_size"),
        (vec!["--clip-grad", "0"], "clip_grad"),
        (vec!["--lr", "NaN"], "lr"),
        (vec!["--ema-decay", "1.5"], "ema_decay"),
        (vec!["--epochs", "0"], "epochs"),
        (vec!["--mixup=-0.5"], "mixup"),
        (vec!["--cutmix", "inf"], "cutmix"),
        (vec!["--mixup-prob", "1.5"], "mixup_prob"),
        (vec!["--patience", "0"], "patience"),
        (vec!["--layer-decay", "1.5"], "layer_decay"),
        (vec!["--drop-path", "1"], "drop_path"),
        (vec!["--mixup-switch-prob=-1"], "mixup_switch_prob"),
    ] {
        let mut args = vec!["--data", "no-such-folder"];
        args.extend(flags.iter().copied());
        let out = run_capped(FINETUNE, &args, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")), "{flags:?}: {stderr}");
    }
}

#[test]
fn a_symlink_planted_as_a_sidecar_redirects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photo_folder(
        dir.path(),
        &[
            ("chelsea.png", "chelsea.png"),
            ("astronaut.jpg", "astronaut.jpg"),
        ],
    );
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, photos.join("chelsea.png.xmp")).unwrap();
    // A read-only sidecar stays exactly as it is.
    let readonly = photos.join("astronaut.jpg.xmp");
    std::fs::write(&readonly, "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"/>").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&readonly, std::fs::Permissions::from_mode(0o444)).unwrap();
    let out = run_capped(
        TAG,
        &["photos", "--xmp", "--threshold", "0.0", "-o", "tags.jsonl"],
        dir.path(),
    );
    let summary: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(
        std::fs::symlink_metadata(photos.join("chelsea.png.xmp"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_to_string(&readonly).unwrap(),
        "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"/>"
    );
    let failures = summary["sidecar_failures"].to_string();
    assert!(failures.contains("symbolic link"), "{failures}");
    assert!(failures.contains("read-only"), "{failures}");
}

#[test]
fn two_runs_cannot_write_one_output() {
    let dir = tempfile::tempdir().unwrap();
    photo_folder(dir.path(), &[("chelsea.png", "chelsea.png")]);
    let output = dir.path().join("tags.jsonl");
    let held = tresnet_io::OutputLock::acquire(&output).unwrap();
    let out = run_capped(TAG, &["photos", "-o", "tags.jsonl"], dir.path());
    refused(&out, "tags.jsonl", "another run is writing");
    drop(held);
    succeeded(&run(TAG, &["photos", "-o", "tags.jsonl"], dir.path()));
}

fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn resume_survives_what_a_kill_leaves_and_keeps_one_record_per_photo() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photo_folder(dir.path(), &[("chelsea.png", "chelsea.png")]);
    std::fs::copy(
        fixtures().join("photos/chelsea.png"),
        photos.join("line\nbreak, \"quoted\".png"),
    )
    .unwrap();
    std::fs::write(photos.join("broken.jpg"), b"\xff\xd8\xff not really").unwrap();
    // JSONL: a record cut inside a multi-byte character.
    let jsonl = dir.path().join("tags.jsonl");
    std::fs::write(&jsonl, &"{\"file\": \"photos/caf\u{e9}".as_bytes()[..21]).unwrap();
    for _ in 0..3 {
        succeeded(&run(TAG, &["photos", "-o", "tags.jsonl"], dir.path()));
    }
    let recs = records(&jsonl);
    assert_eq!(recs.len(), 3, "one record per photo: {recs:?}");
    let broken: Vec<_> = recs.iter().filter(|r| !r["error"].is_null()).collect();
    assert_eq!(broken.len(), 1, "{recs:?}");
    // CSV: a name with a newline, a comma and quotes is read back as written, run after run.
    for _ in 0..3 {
        succeeded(&run(
            TAG,
            &["photos", "--format", "csv", "-o", "tags.csv"],
            dir.path(),
        ));
    }
    let text = std::fs::read_to_string(dir.path().join("tags.csv")).unwrap();
    let rows = tresnet_io::csv_records(&text);
    assert_eq!(rows.len(), 4, "header + one row per photo: {text}");
    assert!(
        rows.iter()
            .any(|(f, _)| f[0].ends_with("line\nbreak, \"quoted\".png"))
    );
    // Nothing but the outputs and their lock files is left beside them.
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            ".tags.csv.lock",
            ".tags.jsonl.lock",
            "photos",
            "tags.csv",
            "tags.jsonl"
        ]
    );
}

#[test]
fn predictions_keyed_ambiguously_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gt = serde_json::json!({
        "images": [
            {"id": 1, "file_name": "2", "width": 8, "height": 8},
            {"id": 2, "file_name": "b.jpg", "width": 8, "height": 8},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 4, 4], "area": 16},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    });
    std::fs::write(dir.path().join("gt.json"), gt.to_string()).unwrap();
    std::fs::write(
        dir.path().join("scores.csv"),
        "image,a,b\n2,0.9,0.1\nb.jpg,0.2,0.8\n",
    )
    .unwrap();
    let out = run_capped(
        COCO_EVAL,
        &["--annotations", "gt.json", "--predictions", "scores.csv"],
        dir.path(),
    );
    refused(&out, "scores.csv", "ambiguous");
    // Boxes finite as f64 but not as f32 are refused by name.
    let mut huge = gt.clone();
    huge["annotations"][0]["bbox"] = serde_json::json!([1e39, 0, 4, 4]);
    std::fs::write(dir.path().join("huge.json"), huge.to_string()).unwrap();
    let out = run_capped(
        COCO_EVAL,
        &["--annotations", "huge.json", "--predictions", "scores.csv"],
        dir.path(),
    );
    refused(&out, "huge.json", "32-bit");
}
