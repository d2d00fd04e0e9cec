//! Detection end to end: `coco-eval --task detection` on the embedded detector and generated
//! data (the 12 statistics, per-class AP, drawn boxes), its saved results scored through
//! `--predictions` to the same numbers, `--limit` scoring only the evaluated images, and clear
//! refusals (a classifier given to the detection path, a detector given to `tag`).

mod common;

use std::path::Path;

use common::{run, succeeded as ok};
use serde_json::Value;
use tresnet_heads::metrics::evaluate_box_results_file;

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn stats(report: &Value) -> Vec<f64> {
    report["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[test]
fn the_embedded_detector_finds_the_shapes_and_its_results_score_the_same_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = ok(&run(
        env!("CARGO_BIN_EXE_coco-eval"),
        &[
            "--task",
            "detection",
            "-o",
            "report.json",
            "--save-predictions",
            "dets.json",
            "--draw",
            "drawn",
        ],
        dir.path(),
    ));
    assert!(stdout.contains("IoU=0.50      |"), "{stdout}");
    let report = read_json(&dir.path().join("report.json"));
    let model_stats = stats(&report);
    assert_eq!(model_stats.len(), 12);
    assert!(
        model_stats[1] >= 0.9,
        "embedded detector AP50 {}",
        model_stats[1]
    );
    assert_eq!(report["per_category"].as_array().unwrap().len(), 6);
    // One drawn PNG per image, enlarged ×4 from 64 px.
    let drawn: Vec<_> = std::fs::read_dir(dir.path().join("drawn"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(drawn.len(), 500);
    let first = image::open(&drawn[0]).unwrap();
    assert_eq!((first.width(), first.height()), (256, 256));

    // The results file, written atomically, scores to the same statistics through
    // --predictions and through the library.
    let from_file = ok(&run(
        env!("CARGO_BIN_EXE_coco-eval"),
        &[
            "--task",
            "detection",
            "--predictions",
            "dets.json",
            "-o",
            "again.json",
        ],
        dir.path(),
    ));
    assert!(from_file.contains("maxDets=100"));
    let again = stats(&read_json(&dir.path().join("again.json")));
    for (a, b) in model_stats.iter().zip(&again) {
        assert!((a - b).abs() < 1e-12, "{model_stats:?} vs {again:?}");
    }
    let rows = read_json(&dir.path().join("dets.json"));
    let first = &rows.as_array().unwrap()[0];
    for key in ["image_id", "category_id", "bbox", "score"] {
        assert!(first.get(key).is_some(), "{first}");
    }
}

#[test]
fn limit_scores_only_the_evaluated_images_and_wrong_models_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    ok(&run(
        env!("CARGO_BIN_EXE_make-shapes"),
        &["data", "-n", "40", "--seed", "91"],
        dir.path(),
    ));
    ok(&run(
        env!("CARGO_BIN_EXE_coco-eval"),
        &[
            "--task",
            "detection",
            "--annotations",
            "data/annotations.json",
            "--images",
            "data/images",
            "--limit",
            "10",
            "--save-predictions",
            "ten.json",
            "-o",
            "ten_report.json",
        ],
        dir.path(),
    ));
    let report = stats(&read_json(&dir.path().join("ten_report.json")));
    // Scored against the whole file, the same detections would miss 30 images' objects.
    let whole = evaluate_box_results_file(
        &dir.path().join("data/annotations.json"),
        &dir.path().join("ten.json"),
    )
    .unwrap();
    assert!(
        report[8] > whole.stats[8] + 0.2,
        "AR100 on the 10 images {} vs on all 40 {}",
        report[8],
        whole.stats[8]
    );
    let images: Vec<u64> = read_json(&dir.path().join("ten.json"))
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image_id"].as_u64().unwrap())
        .collect();
    assert!(images.iter().all(|&id| id <= 10));

    // The multi-label embedded model has no boxes to give.
    let bundle_dir = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle_dir).unwrap();
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/assets");
    for f in ["model.safetensors", "config.json"] {
        std::fs::copy(assets.join("shapes_multilabel").join(f), bundle_dir.join(f)).unwrap();
    }
    let out = run(
        env!("CARGO_BIN_EXE_coco-eval"),
        &[
            "--task",
            "detection",
            "--weights",
            "bundle",
            "--annotations",
            "data/annotations.json",
        ],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a detection model"),
        "{err}"
    );

    // And a detector given to `tag` says what it is.
    let det_dir = dir.path().join("detector");
    std::fs::create_dir_all(&det_dir).unwrap();
    for f in ["model.safetensors", "config.json"] {
        std::fs::copy(assets.join("shapes_detection").join(f), det_dir.join(f)).unwrap();
    }
    let out = run(
        env!("CARGO_BIN_EXE_tag"),
        &["data/images", "--weights", "detector", "-o", "tags.jsonl"],
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("detection model"),
        "{err}"
    );
}
