//! `coco-eval` and `top1-eval` end to end: the embedded default, reports that equal the metric
//! functions' own numbers, saved predictions scoring the same as the model, box statistics from a
//! results file, plots, and label files.

mod common;

use std::path::Path;

use common::{fixtures, run, succeeded as ok};
use serde_json::Value;
use tresnet_data::coco::{CocoDataset, CocoOptions};
use tresnet_heads::metrics::{ScoreTable, asl_mean_average_precision};
use tresnet_heads::predictions::ScoreFile;

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn coco_eval_embedded_default_prints_a_real_map() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = ok(&run(
        env!("CARGO_BIN_EXE_coco-eval"),
        &["-o", "report.json", "--plots", "plots"],
        dir.path(),
    ));
    assert!(stdout.contains("mAP:"), "{stdout}");
    let report = read_json(&dir.path().join("report.json"));
    let map = report["mAP"].as_f64().unwrap();
    assert!(map > 95.0, "embedded default mAP {map}");
    assert_eq!(report["report"]["per_class"].as_array().unwrap().len(), 6);
    for f in [
        "pr_curves.png",
        "pr_curves.svg",
        "ap_per_class.png",
        "ap_per_class.svg",
    ] {
        let p = dir.path().join("plots").join(f);
        assert!(p.metadata().unwrap().len() > 1000, "{f}");
    }
    image::open(dir.path().join("plots/pr_curves.png")).unwrap();
    let svg = std::fs::read_to_string(dir.path().join("plots/ap_per_class.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("circle"));
}

#[test]
fn saved_predictions_score_like_the_model_and_like_the_metric_functions() {
    let dir = tempfile::tempdir().unwrap();
    ok(&run(
        env!("CARGO_BIN_EXE_make-shapes"),
        &["data", "-n", "120", "--seed", "77"],
        dir.path(),
    ));
    let model_run = ok(&run(
        env!("CARGO_BIN_EXE_coco-eval"),
        &[
            "--annotations",
            "data/annotations.json",
            "--images",
            "data/images",
            "--save-predictions",
            "preds.csv",
            "-o",
            "model.json",
        ],
        dir.path(),
    ));
    let from_model = read_json(&dir.path().join("model.json"));
    ok(&run(
        env!("CARGO_BIN_EXE_coco-eval"),
        &[
            "--annotations",
            "data/annotations.json",
            "--predictions",
            "preds.csv",
            "-o",
            "saved.json",
        ],
        dir.path(),
    ));
    let from_file = read_json(&dir.path().join("saved.json"));
    assert_eq!(from_model["mAP"], from_file["mAP"]);
    // A predictions file carries no calibrated thresholds, so that one table row is the model's alone.
    let uncalibrated = |v: &Value| -> Vec<Value> {
        v["report"]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["decision"] != "calibrated thresholds")
            .cloned()
            .collect()
    };
    assert_eq!(uncalibrated(&from_model), uncalibrated(&from_file));
    assert_eq!(uncalibrated(&from_file).len(), 2);
    // The same number straight from the metric functions.
    let ds = CocoDataset::from_file(
        &dir.path().join("data/annotations.json"),
        CocoOptions::multilabel(),
    )
    .unwrap();
    let file = ScoreFile::read(&dir.path().join("preds.csv")).unwrap();
    let scores: Vec<f32> = file.rows.iter().flat_map(|r| r.1.clone()).collect();
    let targets: Vec<f32> = (0..ds.len()).flat_map(|i| ds.multi_hot(i)).collect();
    let direct = asl_mean_average_precision(&ScoreTable::new(&scores, &targets, 6).unwrap());
    assert_eq!(from_model["mAP"].as_f64().unwrap(), direct, "{model_run}");
}

#[test]
fn detection_results_give_pycocotools_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let gt = fixtures().join("coco_det_gt.json");
    let dets = fixtures().join("coco_det_dets.json");
    let stdout = ok(&run(
        env!("CARGO_BIN_EXE_coco-eval"),
        &[
            "--task",
            "detection",
            "--annotations",
            gt.to_str().unwrap(),
            "--predictions",
            dets.to_str().unwrap(),
            "-o",
            "det.json",
        ],
        dir.path(),
    ));
    assert!(stdout.contains("Average Precision"), "{stdout}");
    let report = read_json(&dir.path().join("det.json"));
    let expected = read_json(&fixtures().join("coco_det_expected.json"));
    for i in 0..12 {
        let (a, b) = (
            report["stats"][i].as_f64().unwrap(),
            expected["stats"][i].as_f64().unwrap(),
        );
        assert!((a - b).abs() <= 1e-6, "stat {i}: {a} vs {b}");
    }
    // Without saved detections the (embedded) detector runs, and this file's images are not on
    // disk: a clear error naming the folder.
    let out = run(
        env!("CARGO_BIN_EXE_coco-eval"),
        &["--task", "detection", "--annotations", gt.to_str().unwrap()],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("none of the 50 images exist under"), "{err}");
}

#[test]
fn coco_eval_reports_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.json"), "{\"images\": [").unwrap();
    let out = run(
        env!("CARGO_BIN_EXE_coco-eval"),
        &["--annotations", "bad.json"],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.json") && err.contains("line 1"), "{err}");
}

#[test]
fn top1_eval_on_a_class_folder_and_a_labelled_flat_folder() {
    let dir = tempfile::tempdir().unwrap();
    // Default: the embedded model on a generated one-shape split.
    let stdout = ok(&run(
        env!("CARGO_BIN_EXE_top1-eval"),
        &["-o", "results.csv"],
        dir.path(),
    ));
    let row: Vec<&str> = stdout.lines().nth(1).unwrap().split(',').collect();
    let top1: f64 = row[1].parse().unwrap();
    assert!(top1 > 90.0, "{stdout}");
    let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
    assert!(csv.starts_with(
        "model,top1,top1_err,top5,top5_err,param_count,img_size,crop_pct,interpolation\n"
    ));

    // The same images as a flat folder with a label file give the same accuracy.
    ok(&run(
        env!("CARGO_BIN_EXE_make-shapes"),
        &["classes", "--layout", "folder", "-n", "60", "--seed", "5"],
        dir.path(),
    ));
    let folder = ok(&run(
        env!("CARGO_BIN_EXE_top1-eval"),
        &["--data", "classes"],
        dir.path(),
    ));
    let mut labels = String::from("file,label\n");
    std::fs::create_dir_all(dir.path().join("flat")).unwrap();
    for class in std::fs::read_dir(dir.path().join("classes")).unwrap() {
        let class = class.unwrap().path();
        let name = class.file_name().unwrap().to_string_lossy().to_string();
        for img in std::fs::read_dir(&class).unwrap() {
            let img = img.unwrap().path();
            let flat = format!("{name}_{}", img.file_name().unwrap().to_string_lossy());
            std::fs::copy(&img, dir.path().join("flat").join(&flat)).unwrap();
            labels.push_str(&format!("{flat},{name}\n"));
        }
    }
    std::fs::write(dir.path().join("labels.csv"), labels).unwrap();
    let flat = ok(&run(
        env!("CARGO_BIN_EXE_top1-eval"),
        &["--data", "flat", "--labels", "labels.csv"],
        dir.path(),
    ));
    let acc = |s: &str| {
        s.lines()
            .nth(1)
            .unwrap()
            .split(',')
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_eq!(acc(&folder), acc(&flat));
}
