//! Official `.pth` checkpoints through the apps: an ASL-style COCO model (linear head, class names
//! stored beside the weights) and an ML-Decoder-style one (v2 body, ML-Decoder head) give timm's
//! logits, the COCO protocol's preprocessing and COCO's label names (`configs/`).

#![allow(clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use common::{fixtures, max_abs_diff};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn embed(weights: &str, extra: &[&str], dir: &Path) -> (Value, Tensor) {
    let out = Command::new(env!("CARGO_BIN_EXE_embed"))
        .args(["--weights", fixture(weights).to_str().unwrap()])
        .args([
            "--input",
            fixture("tiny_official_heads.safetensors").to_str().unwrap(),
            "-o",
            "e.safetensors",
        ])
        .args(extra)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut tensors =
        candle_core::safetensors::load(dir.join("e.safetensors"), &Device::Cpu).unwrap();
    (summary, tensors.remove("logits").unwrap())
}

#[test]
fn official_coco_checkpoints_give_timm_logits_and_the_coco_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let reference =
        candle_core::safetensors::load(fixture("tiny_official_heads.safetensors"), &Device::Cpu)
            .unwrap();
    for (file, key, head, layers) in [
        ("tiny_asl_coco.pth", "asl_logits", "linear", [1, 1, 1, 1]),
        (
            "tiny_mld_coco.pth",
            "mld_logits",
            "ml_decoder",
            [1, 1, 2, 1],
        ),
    ] {
        let (summary, logits) = embed(file, &[], dir.path());
        let d = max_abs_diff(&logits, &reference[key]);
        eprintln!("{file}: max |logits - timm| = {d:.2e}");
        assert!(d <= 1e-4, "{file}: {d}");
        assert_eq!(summary["head"], head);
        assert_eq!(summary["num_classes"], 80);
        assert_eq!(summary["architecture"]["layers"], serde_json::json!(layers));
        // No config.json: the multi-label COCO protocol (squish, bilinear, [0, 1]); a body without
        // a timm name takes the protocol's `other` size.
        assert_eq!(summary["preprocess"]["crop_mode"], "squish");
        assert_eq!(
            summary["preprocess"]["input_size"],
            serde_json::json!([3, 640, 640])
        );
        assert_eq!(
            summary["preprocess"]["mean"],
            serde_json::json!([0.0, 0.0, 0.0])
        );
        // The unfolded network gives the same logits.
        let (_, unfolded) = embed(file, &["--no-fold"], dir.path());
        assert!(max_abs_diff(&unfolded, &reference[key]) <= 1e-4);
    }
}

#[test]
fn tagging_with_official_checkpoints_uses_coco_names() {
    let dir = tempfile::tempdir().unwrap();
    let coco: Vec<String> = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/labels/coco80.txt"),
    )
    .unwrap()
    .lines()
    .map(String::from)
    .collect();
    for file in ["tiny_asl_coco.pth", "tiny_mld_coco.pth"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tag"))
            .args([
                fixture("photos").to_str().unwrap(),
                "--weights",
                fixture(file).to_str().unwrap(),
            ])
            .args([
                "--input-size",
                "64",
                "--threshold",
                "0",
                "--top-k",
                "5",
                "-o",
                "t.jsonl",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.path().join("t.jsonl")).unwrap();
        let records: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let tagged: Vec<&Value> = records.iter().filter(|r| r["error"].is_null()).collect();
        assert!(tagged.len() >= 6, "{file}: {text}");
        for r in tagged {
            let labels = r["labels"].as_array().unwrap();
            assert_eq!(labels.len(), 5);
            for l in labels {
                assert!(
                    coco.contains(&l["label"].as_str().unwrap().to_string()),
                    "{file}: {l}"
                );
            }
        }
        std::fs::remove_file(dir.path().join("t.jsonl")).unwrap();
    }
}

#[test]
fn a_backbone_that_contradicts_the_weights_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_embed"))
        .args([
            "--backbone",
            "tresnet_m",
            "--weights",
            fixture("tiny_asl_coco.pth").to_str().unwrap(),
        ])
        .args([
            "--input",
            fixture("tiny_official_heads.safetensors").to_str().unwrap(),
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tiny_asl_coco.pth")
            && err.contains("[3, 4, 11, 3]")
            && err.contains("[1, 1, 1, 1]"),
        "{err}"
    );

    // The ML-Decoder repository's own name for its v2 bodies is accepted: the weights decide.
    let (summary, _) = embed(
        "tiny_mld_coco.pth",
        &["--backbone", "tresnet_l"],
        dir.path(),
    );
    assert_eq!(summary["architecture"]["v2"], true);
    assert_eq!(
        summary["architecture"]["layers"],
        serde_json::json!([1, 1, 2, 1])
    );
}
