//! The backbone against timm's own outputs on the tiny fixtures (`tests/fixtures/README.md`).
#![allow(clippy::print_stderr)] // reports measured differences

use candle_core::Tensor;
use tresnet::layers::space_to_depth;
use tresnet::{BuildOptions, HubConfig, TResNet};
use tresnet_tests::{assert_close, fixture_state_dict, fixture_text, load_fixture};

/// Stage maps: timm's own float32-vs-float64 gap is 6e-6 (fixtures README); logits 7e-7.
const STAGE_ATOL: f64 = 2e-5;
const LOGIT_ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-5;

fn check_fixture(name: &str, inputs: usize, fold: bool) {
    let tensors = load_fixture(&format!("{name}.safetensors"));
    let config = HubConfig::parse(&fixture_text(&format!("{name}.config.json")))
        .unwrap()
        .to_tresnet_config()
        .unwrap();
    let options = BuildOptions {
        fold_batch_norm: fold,
        ..BuildOptions::default()
    };
    let model = TResNet::new(&config, &fixture_state_dict(&tensors), &options).unwrap();
    for i in 0..inputs {
        let input = &tensors[&format!("input{i}")];
        let reference = |what: &str| -> &Tensor { &tensors[&format!("out{i}.{what}")] };
        let tag = |what: &str| format!("{name} input{i} {:?} fold={fold} {what}", input.dims());
        assert_close(
            &space_to_depth(input).unwrap(),
            reference("body.s2d"),
            0.0,
            0.0,
            &tag("s2d"),
        );
        let out = model.forward_all(input).unwrap();
        assert_close(
            &out.features.stem.tensor,
            reference("body.conv1"),
            STAGE_ATOL,
            RTOL,
            &tag("conv1"),
        );
        for stage in &out.features.stages {
            let d = assert_close(
                &stage.tensor,
                reference(&format!("body.{}", stage.name)),
                STAGE_ATOL,
                RTOL,
                &tag(&stage.name),
            );
            eprintln!("{} {}: max |diff| {d:.2e}", tag(""), stage.name);
        }
        let d = assert_close(
            &out.pre_logits,
            reference("pre_logits"),
            LOGIT_ATOL,
            RTOL,
            &tag("pre_logits"),
        );
        eprintln!("{} pre_logits: {d:.2e}", tag(""));
        let d = assert_close(
            out.logits.as_ref().unwrap(),
            reference("logits"),
            LOGIT_ATOL,
            RTOL,
            &tag("logits"),
        );
        eprintln!("{} logits: {d:.2e}", tag(""));
    }
}

#[test]
fn tiny_v1_matches_timm_square_non_square_and_odd_maps() {
    check_fixture("tiny_v1", 3, true);
}

#[test]
fn tiny_v1_matches_timm_without_folding() {
    check_fixture("tiny_v1", 3, false);
}

#[test]
fn tiny_v2_matches_timm() {
    check_fixture("tiny_v2", 2, true);
}

#[test]
fn tiny_v1_c80_odd_widths_match_timm() {
    check_fixture("tiny_v1_c80", 2, true);
}
