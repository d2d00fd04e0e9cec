//! ML-Decoder against timm (`tests/fixtures/ml_decoder*.safetensors`), in both namings, and the
//! head plumbing over a tiny backbone.
#![allow(clippy::print_stderr)] // reports measured differences

use candle_core::{DType, Device, Tensor};
use tresnet::weights::StateDict;
use tresnet::{BuildOptions, HubConfig, TResNet};
use tresnet_heads::{ClassificationHead, Classifier, HeadKind, MlDecoder, MlDecoderConfig};
use tresnet_tests::{assert_close, fixture_state_dict, fixture_text, load_fixture};

fn head_state(name: &str) -> (StateDict, std::collections::HashMap<String, Tensor>) {
    let t = load_fixture(name);
    let mut state = fixture_state_dict(&t);
    (state.take_prefix("head."), t)
}

/// The ML-Decoder repository's names: `decoder.` before the non-layer tensors.
fn to_official(state: &StateDict) -> StateDict {
    state
        .iter()
        .map(|(k, v)| {
            let k = if k.starts_with("decoder.") {
                k.to_string()
            } else {
                format!("decoder.{k}")
            };
            (k, v.clone())
        })
        .collect()
}

#[test]
fn full_and_group_decoding_match_timm_in_both_namings() {
    for (name, classes, groups, factor) in [
        ("ml_decoder.safetensors", 80, 80, 1),
        ("ml_decoder_g10.safetensors", 37, 10, 4),
    ] {
        let (state, t) = head_state(name);
        for (naming, s) in [("timm", state.clone()), ("official", to_official(&state))] {
            let head = MlDecoder::load(s, DType::F32, &Device::Cpu).unwrap();
            let cfg = head.config();
            assert_eq!(
                (cfg.num_classes, cfg.num_groups, cfg.duplicate_factor()),
                (classes, groups, factor)
            );
            let logits = head.forward(&t["features"]).unwrap();
            let d = assert_close(
                &logits,
                &t["logits_f64"],
                1e-5,
                1e-5,
                &format!("{name} {naming}"),
            );
            eprintln!("{name} ({naming} names): max |diff| vs float64 {d:.2e}");
            assert_close(
                &logits,
                &t["logits"],
                1e-5,
                1e-5,
                &format!("{name} {naming} vs f32"),
            );
        }
    }
}

#[test]
fn hyper_parameters_follow_the_reference_rules() {
    assert_eq!(MlDecoderConfig::new(80, -1, -1, 2048).num_groups, 80);
    assert_eq!(MlDecoderConfig::new(80, -1, -1, 2048).embed_dim, 768);
    assert_eq!(
        MlDecoderConfig::new(9605, 200, 768, 2048).duplicate_factor(),
        49
    );
    assert_eq!(
        MlDecoderConfig::new(1000, -1, 768, 2048).duplicate_factor(),
        10
    );
    assert_eq!(
        MlDecoderConfig::new(11221, -1, 768, 2048).duplicate_factor(),
        113
    );
}

#[test]
fn wrong_ml_decoder_tensors_are_named() {
    let (mut state, _) = head_state("ml_decoder.safetensors");
    state.remove("decoder.layers.0.norm2.bias");
    let err = MlDecoder::load(state, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("decoder.layers.0.norm2.bias"), "{err}");
}

/// A tiny backbone with an ML-Decoder head on its stride-32 map, and with its own linear head,
/// through the same `Classifier` plumbing: the backbone never knows which head it feeds.
#[test]
fn heads_plug_into_a_backbone() {
    let tiny = load_fixture("tiny_v1.safetensors");
    let config = HubConfig::parse(&fixture_text("tiny_v1.config.json"))
        .unwrap()
        .to_tresnet_config()
        .unwrap();
    // Linear head: the same logits as the full timm model.
    let linear = Classifier::from_state_dict(
        &config,
        fixture_state_dict(&tiny),
        None,
        &BuildOptions::default(),
    )
    .unwrap();
    assert_eq!(linear.head.kind(), HeadKind::Linear);
    assert_close(
        &linear.forward(&tiny["input0"]).unwrap(),
        &tiny["out0.logits"],
        1e-5,
        1e-5,
        "linear head",
    );

    // ML-Decoder head on the 256-channel map: reuse the fixture head with its input projection
    // widened (random weights are fine: the check is plumbing and shapes).
    let (mut head, _) = head_state("ml_decoder.safetensors");
    let e = head.get("embed_standart.weight").unwrap().dims()[0];
    head.insert(
        "embed_standart.weight",
        Tensor::randn(0f32, 0.05, (e, 256), &Device::Cpu).unwrap(),
    );
    let mut state = fixture_state_dict(&tiny);
    state.remove("head.fc.weight");
    state.remove("head.fc.bias");
    for (k, v) in head.iter() {
        state.insert(
            format!("head.decoder.{}", k.trim_start_matches("decoder.")),
            v.clone(),
        );
    }
    let mld = Classifier::from_state_dict(
        &config,
        state,
        Some(HeadKind::MlDecoder),
        &BuildOptions::default(),
    )
    .unwrap();
    let logits = mld.forward(&tiny["input1"]).unwrap();
    assert_eq!(logits.dims(), &[2, 80]);
    // The same as running the backbone alone and the head on its last map.
    let body = TResNet::new(
        &config.clone().with_num_classes(0),
        &{
            let mut s = fixture_state_dict(&tiny);
            s.take_prefix("head.");
            s
        },
        &BuildOptions::default(),
    )
    .unwrap();
    let direct = mld
        .head
        .forward(body.forward_features(&tiny["input1"]).unwrap().last())
        .unwrap();
    assert_close(&logits, &direct, 0.0, 0.0, "plumbing");
    // Asking for the wrong head is refused.
    let err = ClassificationHead::load(
        head_state("ml_decoder.safetensors").0,
        Some(HeadKind::Linear),
        config.global_pool,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(err.to_string().contains("MlDecoder"), "{err}");
}
