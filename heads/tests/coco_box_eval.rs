//! COCO box evaluation against pycocotools (`tests/fixtures/coco_det_*`): the 12 stats and
//! per-category AP/AR within 1e-6, from the results file and from detections in memory.

use serde_json::Value;
use tresnet_heads::metrics::{
    COCO_STAT_NAMES, Detection, evaluate_box_results_file, evaluate_boxes,
};
use tresnet_tests::{fixture_path, fixture_text};

fn expected() -> Value {
    serde_json::from_str(&fixture_text("coco_det_expected.json")).unwrap()
}

fn check(result: &tresnet_heads::metrics::BoxEvaluation) {
    let want = expected();
    for (i, name) in COCO_STAT_NAMES.iter().enumerate() {
        let e = want["stats"][i].as_f64().unwrap();
        assert!(
            (result.stats[i] - e).abs() <= 1e-6,
            "{name}: {} vs {e}",
            result.stats[i]
        );
    }
    for cat in &result.per_category {
        let e = &want["per_category"][cat.category_id.to_string()];
        for (field, ours) in [
            ("AP", cat.ap),
            ("AP50", cat.ap50),
            ("AP75", cat.ap75),
            ("AR100", cat.ar100),
        ] {
            let e = e[field].as_f64().unwrap();
            assert!(
                (ours - e).abs() <= 1e-6,
                "category {} {field}: {ours} vs {e}",
                cat.category_id
            );
        }
    }
    assert_eq!(
        result.per_category.len(),
        want["per_category"].as_object().unwrap().len()
    );
    assert_eq!(result.summary.len(), 12);
}

#[test]
fn results_file_matches_pycocotools() {
    let result = evaluate_box_results_file(
        &fixture_path("coco_det_gt.json"),
        &fixture_path("coco_det_dets.json"),
    )
    .unwrap();
    check(&result);
}

#[test]
fn in_memory_detections_match_pycocotools() {
    let dets: Vec<Value> = serde_json::from_str(&fixture_text("coco_det_dets.json")).unwrap();
    let detections: Vec<Detection> = dets
        .iter()
        .map(|d| Detection {
            image_id: d["image_id"].as_u64().unwrap(),
            category_id: d["category_id"].as_u64().unwrap(),
            bbox_xywh: [0, 1, 2, 3].map(|i| d["bbox"][i].as_f64().unwrap()),
            score: d["score"].as_f64().unwrap(),
        })
        .collect();
    check(&evaluate_boxes(&fixture_path("coco_det_gt.json"), &detections).unwrap());
}

#[test]
fn bad_results_files_name_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("results.json");
    std::fs::write(
        &bad,
        "[{\"image_id\": 1, \"category_id\": 1, \"bbox\": [0, 0, 1,",
    )
    .unwrap();
    let err = evaluate_box_results_file(&fixture_path("coco_det_gt.json"), &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("results.json"), "{err}");
}
