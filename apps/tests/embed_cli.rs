//! `embed` end to end: the real binary on the embedded default, on a safetensors input against
//! timm's outputs, on a folder of real (and broken) photos, and through a Hugging Face cache.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn embed(args: &[&str], cwd: &Path, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_embed"));
    cmd.args(args).current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("embed runs")
}

fn summary(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "embed failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON line on stdout: {stdout}"
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

/// A model directory in timm's hub layout holding tiny_v1's weights.
fn tiny_bundle(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let tensors =
        candle_core::safetensors::load(fixtures().join("tiny_v1.safetensors"), &Device::Cpu)
            .unwrap();
    let state: std::collections::HashMap<String, Tensor> = tensors
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("state.").map(|k| (k.to_string(), v)))
        .collect();
    candle_core::safetensors::save(&state, dir.join("model.safetensors")).unwrap();
    std::fs::copy(
        fixtures().join("tiny_v1.config.json"),
        dir.join("config.json"),
    )
    .unwrap();
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn default_run_embeds_the_embedded_examples() {
    let dir = tempfile::tempdir().unwrap();
    let s = summary(&embed(&[], dir.path(), &[]));
    assert_eq!(s["model"], "embedded:shapes_multilabel");
    assert_eq!(s["count"], 2);
    assert_eq!(s["outputs"]["logits"], serde_json::json!([2, 6]));
    assert_eq!(s["outputs"]["layer4"], serde_json::json!([2, 512, 2, 2]));
    let written =
        candle_core::safetensors::load(dir.path().join("embeddings.safetensors"), &Device::Cpu)
            .unwrap();
    for name in [
        "stem",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "pre_logits",
        "logits",
    ] {
        assert!(written.contains_key(name), "{name} missing");
    }
}

#[test]
fn safetensors_input_reproduces_timm_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("tiny");
    tiny_bundle(&model_dir);
    let fixture =
        candle_core::safetensors::load(fixtures().join("tiny_v1.safetensors"), &Device::Cpu)
            .unwrap();
    let input_path = dir.path().join("input.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("input".to_string(), fixture["input2"].clone())]),
        &input_path,
    )
    .unwrap();
    let out_path = dir.path().join("out.safetensors");
    let s = summary(&embed(
        &[
            "--weights",
            model_dir.to_str().unwrap(),
            "--input",
            input_path.to_str().unwrap(),
            "--output",
            out_path.to_str().unwrap(),
            "-b",
            "1",
        ],
        dir.path(),
        &[],
    ));
    assert_eq!(s["input"], "tensor");
    assert_eq!(s["count"], 2);
    let out = candle_core::safetensors::load(&out_path, &Device::Cpu).unwrap();
    for (ours, theirs, tol) in [
        ("stem", "out2.body.conv1", 2e-5),
        ("layer1", "out2.body.layer1", 2e-5),
        ("layer2", "out2.body.layer2", 2e-5),
        ("layer3", "out2.body.layer3", 2e-5),
        ("layer4", "out2.body.layer4", 2e-5),
        ("pre_logits", "out2.pre_logits", 1e-5),
        ("logits", "out2.logits", 1e-5),
    ] {
        let d = max_diff(&out[ours], &fixture[theirs]);
        assert!(d <= tol, "{ours}: max |diff| {d:e} > {tol:e}");
    }
}

#[test]
fn folder_of_real_photos_reports_broken_files_and_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(photos.join("broken")).unwrap();
    for entry in std::fs::read_dir(fixtures().join("photos"))
        .unwrap()
        .chain(std::fs::read_dir(fixtures().join("photos/broken")).unwrap())
    {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_file() && !name.ends_with(".safetensors") {
            let sub = if path.parent().unwrap().ends_with("broken") {
                "broken"
            } else {
                ""
            };
            std::fs::copy(&path, photos.join(sub).join(&name)).unwrap();
        }
    }
    let out_path = dir.path().join("photos.safetensors");
    let out = embed(
        &[
            "--weights",
            fixtures().join("tiny_v1_official.pth").to_str().unwrap(),
            "--input",
            photos.to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
            "--input-size",
            "64",
        ],
        dir.path(),
        &[],
    );
    let s = summary(&out);
    assert_eq!(s["count"], 6);
    let skipped: Vec<String> = s["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["file"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(skipped.len(), 4, "{skipped:?}");
    for name in [
        "bomb_100000x100000.png",
        "empty.jpg",
        "notes.jpg",
        "truncated.jpg",
    ] {
        assert!(
            skipped.iter().any(|f| f.ends_with(name)),
            "{name} not reported"
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("truncated.jpg") && stderr.contains("truncated JPEG"),
        "{stderr}"
    );
    // Rows are in walk order and named in the metadata.
    let bytes = std::fs::read(&out_path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let files: Vec<String> =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["files"]).unwrap();
    let names: Vec<&str> = files
        .iter()
        .map(|f| f.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "astronaut.jpg",
            "camera_gray.png",
            "chelsea.png",
            "hubble_deep_field_cmyk.jpg",
            "logo_rgba.webp",
            "rocket_exif_rot90.jpg"
        ]
    );
}

#[test]
fn hub_name_resolves_in_the_hugging_face_cache_offline() {
    let dir = tempfile::tempdir().unwrap();
    let hf_home = dir.path().join("hf");
    let repo = hf_home.join("hub/models--timm--tresnet_tiny.fixture");
    tiny_bundle(&repo.join("snapshots/c0ffee"));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "c0ffee\n").unwrap();
    let s = summary(&embed(
        &["--weights", "timm/tresnet_tiny.fixture"],
        dir.path(),
        &[("HF_HOME", &hf_home)],
    ));
    assert!(
        s["model"].as_str().unwrap().contains("snapshots/c0ffee"),
        "{s}"
    );
    let missing = embed(
        &["--weights", "timm/tresnet_absent.x"],
        dir.path(),
        &[("HF_HOME", &hf_home)],
    );
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("timm/tresnet_absent.x") && err.contains("never downloads"),
        "{err}"
    );
}

#[test]
fn failures_name_the_problem_and_leave_existing_outputs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("precious.safetensors");
    std::fs::write(&out_path, b"keep me").unwrap();
    let empty = dir.path().join("empty_folder");
    std::fs::create_dir_all(&empty).unwrap();
    for (args, needle) in [
        (vec!["--weights", "no/such/file.pth"], "no/such/file.pth"),
        (vec!["--input", empty.to_str().unwrap()], "no image files"),
        (vec!["--backbone", "tresnet_q"], "tresnet_q"),
        (vec!["--input-size", "66"], "multiples of 4"),
        (vec!["--dtype", "f8"], "possible values: f32, f16, bf16"),
        (vec!["--device", "cuda:0"], "without CUDA"),
    ] {
        let mut full = args.clone();
        full.extend(["-o", out_path.to_str().unwrap()]);
        let out = embed(&full, dir.path(), &[]);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(
            std::fs::read(&out_path).unwrap(),
            b"keep me",
            "{args:?} touched the output"
        );
    }
}
