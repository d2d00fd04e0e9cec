//! `convert-weights` end to end on real checkpoint files: the written key set and shapes are
//! timm's (the manifest of full TResNet-M, the tiny timm model's own state dict), values survive,
//! an ML-Decoder head gets timm's names and its arguments in config.json, `--dtype f16` halves
//! the file, the output loads back in our apps with the same logits, and what timm cannot hold
//! (a detector) is refused by name. timm itself loading the output is checked by
//! `scripts/check_timm_interop.sh`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::{fixtures, max_abs_diff, run, succeeded};
use serde_json::Value;
use tresnet::weights::random_state_dict;
use tresnet::{Layout, TResNetConfig};
use tresnet_runtime::{ModelSpec, PreprocessOverrides, load_bundle};

const CONVERT: &str = env!("CARGO_BIN_EXE_convert-weights");

fn convert(weights: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "--weights",
        weights.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&succeeded(&run(CONVERT, &args, Path::new(".")))).unwrap()
}

fn tensors(path: &Path) -> BTreeMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect()
}

fn config(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn a_full_tresnet_m_is_written_under_exactly_timms_names_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    // Random TResNet-M weights under timm's names, without the batch counters (as many
    // checkpoints come): the converter adds them.
    let cfg = TResNetConfig::variant("tresnet_m").unwrap();
    let state = random_state_dict(&Layout::new(&cfg).unwrap(), 3).unwrap();
    let stripped: tresnet::weights::StateDict = state
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .collect();
    let input = dir.path().join("in.safetensors");
    stripped.save_safetensors(&input).unwrap();
    let out = dir.path().join("out");
    convert(&input, &out, &[]);

    let manifest: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("manifest_tresnet_m.json")).unwrap())
            .unwrap();
    let expected: BTreeMap<String, Vec<usize>> = manifest["tensors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let shape = v
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (k.clone(), shape)
        })
        .collect();
    let written = tensors(&out.join("model.safetensors"));
    let got: BTreeMap<String, Vec<usize>> = written
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    assert_eq!(got, expected, "key set and shapes of timm's tresnet_m");
    for (key, dtype) in manifest["dtypes"].as_object().unwrap() {
        let want = if dtype == "int64" {
            DType::I64
        } else {
            DType::F32
        };
        assert_eq!(written[key].dtype(), want, "{key}");
    }
    let cfg = config(&out);
    assert_eq!(cfg["architecture"], "tresnet_m");
    assert_eq!(cfg["num_classes"], 1000);
    assert_eq!(
        cfg["model_args"]["layers"],
        serde_json::json!([3, 4, 11, 3])
    );
    assert!(
        cfg["model_args"].get("stem_leaky_slope").is_none(),
        "only arguments timm's TResNet takes"
    );
    assert_eq!(
        cfg["pretrained_cfg"]["input_size"],
        serde_json::json!([3, 224, 224])
    );
}

#[test]
fn an_official_checkpoint_keeps_its_values_under_timms_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let summary = convert(&fixtures().join("tiny_v1_official.pth"), &out, &[]);
    assert_eq!(summary["head"], "linear");
    // The tiny model's state dict as timm holds it (InPlaceABN gammas already |w| + eps there).
    let reference: BTreeMap<String, Tensor> = tensors(&fixtures().join("tiny_v1.safetensors"))
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix("state.").map(|k| (k.to_string(), t)))
        .collect();
    let written = tensors(&out.join("model.safetensors"));
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>()
    );
    for (key, want) in &reference {
        let got = &written[key];
        assert_eq!(got.dims(), want.dims(), "{key}");
        if want.dtype().is_float() {
            let diff = max_abs_diff(
                &got.to_dtype(DType::F32).unwrap(),
                &want.to_dtype(DType::F32).unwrap(),
            );
            assert!(diff <= 1e-6, "{key}: {diff}");
        }
    }
}

#[test]
fn an_ml_decoder_head_gets_timms_names_and_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let summary = convert(&fixtures().join("tiny_mld_coco.pth"), &out, &[]);
    assert_eq!(summary["head"], "ml_decoder");
    let written = tensors(&out.join("model.safetensors"));
    for key in [
        "head.embed_standart.weight",
        "head.query_embed.weight",
        "head.duplicate_pooling",
        "head.duplicate_pooling_bias",
        "head.decoder.layers.0.multihead_attn.in_proj_weight",
    ] {
        assert!(written.contains_key(key), "{key}");
    }
    assert!(
        !written
            .keys()
            .any(|k| k.starts_with("head.decoder.embed_standart")),
        "the ML-Decoder repository's `decoder.` prefix is gone"
    );
    let cfg = config(&out);
    assert_eq!(cfg["head"], "ml_decoder");
    assert_eq!(cfg["ml_decoder"]["decoder_embedding"], 64);
    assert_eq!(cfg["ml_decoder"]["num_of_groups"], 80);
    assert_eq!(cfg["model_args"]["v2"], true);
    assert_eq!(cfg["label_names"].as_array().unwrap().len(), 80);
    assert_eq!(cfg["label_names"][0], "person");
}

/// Logits of the model at `weights` on a fixed input.
fn logits(weights: &Path) -> Tensor {
    let spec = ModelSpec {
        weights: Some(weights.display().to_string()),
        ..ModelSpec::default()
    };
    let bundle = load_bundle(
        &spec,
        &Device::Cpu,
        DType::F32,
        &PreprocessOverrides::default(),
    )
    .unwrap();
    // A fixed ramp in [0, 1): the same input for every call.
    let n = 2 * 3 * 64 * 64;
    let ramp = Tensor::arange(0f32, n as f32, &Device::Cpu)
        .unwrap()
        .affine(1.0 / n as f64, 0.0)
        .unwrap()
        .reshape((2, 3, 64, 64))
        .unwrap();
    bundle.logits(&ramp).unwrap()
}

#[test]
fn the_output_loads_back_with_the_same_logits_in_f32_and_close_in_f16() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["tiny_asl_coco.pth", "tiny_mld_coco.pth"] {
        let original = fixtures().join(name);
        let f32_dir = dir.path().join(format!("{name}.f32"));
        let f16_dir = dir.path().join(format!("{name}.f16"));
        convert(&original, &f32_dir, &[]);
        let summary = convert(&original, &f16_dir, &["--dtype", "f16"]);
        assert_eq!(summary["dtype"], "f16");
        let want = logits(&original);
        let same = max_abs_diff(&logits(&f32_dir), &want);
        assert!(same <= 1e-5, "{name} f32: {same}");
        let half = max_abs_diff(&logits(&f16_dir), &want);
        assert!(half <= 5e-2, "{name} f16: {half}");
        let size = |d: &Path| {
            std::fs::metadata(d.join("model.safetensors"))
                .unwrap()
                .len()
        };
        assert!(
            size(&f16_dir) * 10 < size(&f32_dir) * 6,
            "{name}: f16 file {} vs f32 {}",
            size(&f16_dir),
            size(&f32_dir)
        );
        let stored = tensors(&f16_dir.join("model.safetensors"));
        assert!(stored.iter().all(|(k, t)| t.dtype()
            == if k.ends_with("num_batches_tracked") {
                DType::I64
            } else {
                DType::F16
            }));
    }
}

#[test]
fn what_timm_cannot_hold_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let detector = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/assets/shapes_detection");
    let out = run(
        CONVERT,
        &[
            "--weights",
            detector.to_str().unwrap(),
            "-o",
            dir.path().join("det").to_str().unwrap(),
        ],
        Path::new("."),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shapes_detection") && err.contains("detector"),
        "{err}"
    );
    assert!(!dir.path().join("det/model.safetensors").exists());
    // Not a checkpoint at all.
    let notes = dir.path().join("notes.pth");
    std::fs::write(&notes, "not a checkpoint").unwrap();
    let out = run(
        CONVERT,
        &[
            "--weights",
            notes.to_str().unwrap(),
            "-o",
            dir.path().join("x").to_str().unwrap(),
        ],
        Path::new("."),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("notes.pth"));
}
