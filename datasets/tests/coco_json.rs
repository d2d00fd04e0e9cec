//! COCO instances json: the `coco_ml_*` fixtures (multi-hot table and the ASL repository's own
//! view), and every kind of bad file.

use std::path::Path;

use serde_json::Value;
use tresnet_data::DataError;
use tresnet_data::coco::{CocoDataset, CocoOptions, ImageSelection};
use tresnet_tests::{fixture_path, fixture_text};

fn expected() -> Value {
    serde_json::from_str(&fixture_text("coco_ml_expected.json")).unwrap()
}

fn as_rows(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn multi_hot_table_matches_the_fixture() {
    let want = expected();
    let ds =
        CocoDataset::from_file(&fixture_path("coco_ml_gt.json"), CocoOptions::default()).unwrap();
    let cat_ids: Vec<u64> = ds.categories.iter().map(|c| c.id).collect();
    assert_eq!(cat_ids, ids(&want["category_ids_sorted"]));
    let names: Vec<String> = want["category_names_sorted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ds.class_names(), names);
    let image_ids: Vec<u64> = ds.images.iter().map(|i| i.id).collect();
    assert_eq!(image_ids, ids(&want["image_ids"]));
    let table: Vec<Vec<f32>> = (0..ds.len()).map(|i| ds.multi_hot(i)).collect();
    assert_eq!(table, as_rows(&want["multi_hot"]));
    let empty: Vec<u64> = (0..ds.len())
        .filter(|&i| ds.objects[i].is_empty())
        .map(|i| ds.images[i].id)
        .collect();
    assert_eq!(empty, ids(&want["images_without_annotations"]));

    let annotated = CocoDataset::from_file(
        &fixture_path("coco_ml_gt.json"),
        CocoOptions {
            images: ImageSelection::Annotated,
            ..CocoOptions::default()
        },
    )
    .unwrap();
    assert_eq!(annotated.len(), ds.len() - empty.len());
}

#[test]
fn asl_repo_view_matches_the_fixture() {
    let want = &expected()["asl_repo_view"];
    let ds =
        CocoDataset::from_file(&fixture_path("coco_ml_gt.json"), CocoOptions::asl_repo()).unwrap();
    let image_ids: Vec<u64> = ds.images.iter().map(|i| i.id).collect();
    assert_eq!(image_ids, ids(&want["image_ids"]));
    let cat_ids: Vec<u64> = ds.categories.iter().map(|c| c.id).collect();
    assert_eq!(cat_ids, ids(&want["category_ids_in_column_order"]));
    let table: Vec<Vec<f32>> = (0..ds.len()).map(|i| ds.multi_hot(i)).collect();
    assert_eq!(table, as_rows(&want["multi_hot"]));
}

fn load_text(text: &str) -> Result<CocoDataset, DataError> {
    CocoDataset::from_json_bytes(
        text.as_bytes(),
        Path::new("instances_test.json"),
        CocoOptions::default(),
    )
}

const CATS: &str = r#""categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]"#;

#[test]
fn bad_files_are_refused_with_the_file_and_the_entry() {
    let cases = [
        (
            format!(
                r#"{{"images": [{{"id": 1, "file_name": "a.jpg"}}], {CATS}, "annotations": [{{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3]"#
            ),
            "line 1 column",
        ),
        (
            format!(
                r#"{{"images": [{{"id": 1, "file_name": "a.jpg"}}], {CATS}, "annotations": [{{"id": 7, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}}]}}"#
            ),
            "annotation 7 refers to image_id 2",
        ),
        (
            format!(
                r#"{{"images": [{{"id": 1, "file_name": "a.jpg"}}], {CATS}, "annotations": [{{"id": 8, "image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1]}}]}}"#
            ),
            "annotation 8 refers to category_id 2",
        ),
        (
            format!(
                r#"{{"images": [{{"id": 1, "file_name": "a.jpg"}}], {CATS}, "annotations": [{{"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, -4, 1]}}]}}"#
            ),
            "negative width",
        ),
        (
            format!(
                r#"{{"images": [{{"id": 1, "file_name": "a.jpg"}}], {CATS}, "annotations": [{{"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1]}}]}}"#
            ),
            "not [x, y, width, height]",
        ),
        (
            format!(r#"{{"images": [{{"id": 1, "file_name": "../../etc/passwd"}}], {CATS}}}"#),
            "escapes the image root",
        ),
        (
            format!(r#"{{"images": [{{"id": 1, "file_name": "/abs/a.jpg"}}], {CATS}}}"#),
            "escapes the image root",
        ),
        (
            format!(
                r#"{{"images": [{{"id": 1, "file_name": "a.jpg"}}, {{"id": 1, "file_name": "b.jpg"}}], {CATS}}}"#
            ),
            "image id 1 appears twice",
        ),
        (
            r#"{"images": []}"#.to_string(),
            "missing field `categories`",
        ),
    ];
    for (text, needle) in cases {
        let err = load_text(&text).unwrap_err().to_string();
        assert!(
            err.contains("instances_test.json") && err.contains(needle),
            "expected `{needle}` in: {err}"
        );
    }
    let err = CocoDataset::from_file(Path::new("/no/such/instances.json"), CocoOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/instances.json"), "{err}");
}

#[test]
fn zero_size_boxes_count_as_labels_with_a_warning() {
    let text = format!(
        r#"{{"images": [{{"id": 5, "file_name": "a.jpg"}}], {CATS}, "annotations": [{{"id": 3, "image_id": 5, "category_id": 3, "bbox": [4, 4, 0, 10], "iscrowd": 1}}]}}"#
    );
    let ds = load_text(&text).unwrap();
    assert_eq!(ds.multi_hot(0), vec![0.0, 1.0]);
    assert!(ds.objects[0][0].degenerate && ds.objects[0][0].iscrowd);
    assert_eq!(ds.warnings.len(), 1);
    assert!(ds.warnings[0].contains("annotation 3"), "{:?}", ds.warnings);
}

#[test]
fn missing_image_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("present.jpg"), b"x").unwrap();
    let text = format!(
        r#"{{"images": [{{"id": 1, "file_name": "present.jpg"}}, {{"id": 2, "file_name": "gone.jpg"}}], {CATS}}}"#
    );
    let ds = load_text(&text).unwrap();
    let missing = ds.missing_images(dir.path());
    assert_eq!(missing, vec![(2, dir.path().join("gone.jpg"))]);
}
