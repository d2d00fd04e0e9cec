//! Multi-label AP against the ASL repository's helper and scikit-learn
//! (`tests/fixtures/map.safetensors`, `map_expected.json`), and the multi-label table.

use serde_json::Value;
use tresnet_heads::metrics::{
    Decision, ScoreTable, asl_average_precision, asl_mean_average_precision,
    micro_average_precision, multilabel_table, tie_aware_average_precision,
};
use tresnet_tests::{fixture_text, load_fixture};

struct MapFixture {
    scores: Vec<f32>,
    targets: Vec<f32>,
    classes: usize,
    expected: Value,
}

fn fixture() -> MapFixture {
    let t = load_fixture("map.safetensors");
    let (_, classes) = t["scores"].dims2().unwrap();
    MapFixture {
        scores: t["scores"].flatten_all().unwrap().to_vec1().unwrap(),
        targets: t["targets"]
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap(),
        classes,
        expected: serde_json::from_str(&fixture_text("map_expected.json")).unwrap(),
    }
}

#[test]
fn asl_style_ap_matches_the_repository_and_our_tie_rule() {
    let f = fixture();
    let table = ScoreTable::new(&f.scores, &f.targets, f.classes).unwrap();
    let ours = table.per_class(asl_average_precision);
    for (k, row) in f.expected["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let want = if row["has_ties"].as_bool().unwrap() {
            // Ties: our documented rule (stable descending, lower row first).
            row["asl_stable_desc"].as_f64().unwrap()
        } else {
            row["asl_repo"].as_f64().unwrap()
        };
        assert!(
            (ours[k] - want).abs() <= 1e-6,
            "class {k} ({}): {} vs {want}",
            row["role"],
            ours[k]
        );
    }
    let map = asl_mean_average_precision(&table);
    let want = f.expected["asl_mAP_x100_stable_desc"].as_f64().unwrap();
    assert!((map - want).abs() <= 1e-6, "mAP {map} vs {want}");
}

#[test]
fn tie_aware_ap_matches_scikit_learn() {
    let f = fixture();
    let table = ScoreTable::new(&f.scores, &f.targets, f.classes).unwrap();
    let ours = table.per_class(tie_aware_average_precision);
    for (k, row) in f.expected["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let want = row["sklearn"].as_f64().unwrap();
        assert!(
            (ours[k] - want).abs() <= 1e-6,
            "class {k} ({}): {} vs {want}",
            row["role"],
            ours[k]
        );
    }
    let mean_all = ours.iter().sum::<f64>() / ours.len() as f64;
    assert!((mean_all - f.expected["sklearn_mAP_all_classes"].as_f64().unwrap()).abs() <= 1e-6);
    let with_pos: Vec<f64> = f.expected["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&ours)
        .filter(|(row, _)| row["positives"].as_u64().unwrap() > 0)
        .map(|(_, ap)| *ap)
        .collect();
    let mean_pos = with_pos.iter().sum::<f64>() / with_pos.len() as f64;
    assert!(
        (mean_pos
            - f.expected["sklearn_mAP_classes_with_positives"]
                .as_f64()
                .unwrap())
        .abs()
            <= 1e-6
    );
    let micro = micro_average_precision(&table);
    assert!(
        (micro - f.expected["sklearn_micro_2d_call"].as_f64().unwrap()).abs() <= 1e-6,
        "micro {micro}"
    );
}

#[test]
fn multilabel_table_on_a_hand_made_case() {
    // 3 images × 3 classes.
    let scores = [
        0.9, 0.2, 0.6, /**/ 0.4, 0.8, 0.7, /**/ 0.1, 0.3, 0.95,
    ];
    let targets = [
        1.0, 0.0, 0.0, /**/ 1.0, 1.0, 0.0, /**/ 0.0, 0.0, 1.0,
    ];
    let table = ScoreTable::new(&scores, &targets, 3).unwrap();
    // Threshold 0.5: class 0 tp1 fn1; class 1 tp1; class 2 tp1 fp2.
    let t = multilabel_table(&table, &Decision::Threshold(0.5));
    assert_eq!(t.precision, vec![1.0, 1.0, 1.0 / 3.0]);
    assert_eq!(t.recall, vec![0.5, 1.0, 1.0]);
    assert!((t.cp - 100.0 * (7.0 / 3.0) / 3.0).abs() < 1e-9);
    assert!((t.op - 60.0).abs() < 1e-9, "3 tp of 5 predicted");
    assert!((t.or - 75.0).abs() < 1e-9, "3 tp of 4 positives");
    assert!((t.of1 - 2.0 * 60.0 * 75.0 / 135.0).abs() < 1e-9);
    let f1_2 = 2.0 * (1.0 / 3.0) / (4.0 / 3.0);
    assert!((t.cf1 - 100.0 * (2.0 / 3.0 + 1.0 + f1_2) / 3.0).abs() < 1e-9);
    // Top-1 per image: classes 0, 1, 2 → all correct, recall 3/4.
    let top1 = multilabel_table(&table, &Decision::TopK(1));
    assert_eq!((top1.op, top1.or), (100.0, 75.0));
}

/// A saved score file (CSV and JSONL) scores the same as the scores in memory.
#[test]
fn saved_score_files_give_the_same_map() {
    use tresnet_heads::predictions::ScoreFile;
    let f = fixture();
    let rows: Vec<(String, Vec<f32>)> = f
        .scores
        .chunks(f.classes)
        .enumerate()
        .map(|(i, r)| (format!("img_{i}.jpg"), r.to_vec()))
        .collect();
    let file = ScoreFile {
        class_names: Some((0..f.classes).map(|k| format!("c{k}")).collect()),
        rows,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scores.csv");
    let mut bytes = Vec::new();
    file.write_csv(&mut bytes).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let read = ScoreFile::read(&path).unwrap();
    let scores: Vec<f32> = read.rows.iter().flat_map(|r| r.1.clone()).collect();
    let from_file =
        asl_mean_average_precision(&ScoreTable::new(&scores, &f.targets, f.classes).unwrap());
    let in_memory =
        asl_mean_average_precision(&ScoreTable::new(&f.scores, &f.targets, f.classes).unwrap());
    assert_eq!(from_file, in_memory);
}
