//! Layer-wise learning-rate decay against timm's `param_groups_layer_decay` on two small
//! TResNets (fixture: tests/fixtures/layer_decay_reference.json, made by
//! make_layer_decay_reference.py), and its effect on an optimiser step.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use tresnet::TResNetConfig;
use tresnet::layout::Layout;
use tresnet::manifest::{EntryKind, Manifest};
use tresnet_tests::fixture_text;
use tresnet_training::{Optimizer, OptimizerKind, layer_decay_scales};

#[test]
fn every_parameter_gets_timms_learning_rate_scale() {
    let fixture: serde_json::Value =
        serde_json::from_str(&fixture_text("layer_decay_reference.json")).unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let layers: Vec<usize> = serde_json::from_value(case["layers"].clone()).unwrap();
        let layers: [usize; 4] = layers.try_into().unwrap();
        let config = TResNetConfig {
            layers,
            width_factor: 0.125,
            v2: case["v2"].as_bool().unwrap(),
            num_classes: 5,
            ..TResNetConfig::variant("tresnet_m").unwrap()
        };
        let manifest = Manifest::of(&Layout::new(&config).unwrap());
        let names: Vec<&str> = manifest
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Parameter)
            .map(|e| e.key.as_str())
            .collect();
        let decay = case["layer_decay"].as_f64().unwrap();
        let ours = layer_decay_scales(names.iter().copied(), layers, decay);
        let timm: HashMap<String, f64> = serde_json::from_value(case["lr_scale"].clone()).unwrap();
        assert_eq!(ours.len(), timm.len(), "{layers:?}: parameter sets differ");
        for (name, want) in &timm {
            let got = ours.get(name).unwrap_or_else(|| panic!("{name} missing"));
            assert!((got - want).abs() < 1e-12, "{name}: {got} vs timm {want}");
        }
    }
}

#[test]
fn a_decayed_parameter_moves_by_its_share_of_the_rate() {
    let var = |v: f32| Var::from_tensor(&Tensor::new(&[v], &Device::Cpu).unwrap()).unwrap();
    let params = vec![
        ("body.conv1.conv.weight".to_string(), var(1.0)),
        ("head.fc.weight".to_string(), var(1.0)),
    ];
    let scales = layer_decay_scales(params.iter().map(|(n, _)| n.as_str()), [1, 1, 1, 1], 0.5);
    let mut opt = Optimizer::new(
        OptimizerKind::Sgd {
            momentum: 0.0,
            nesterov: false,
        },
        0.0,
        &params,
    )
    .with_lr_scales(&scales);
    let grads: HashMap<String, Tensor> = params
        .iter()
        .map(|(n, _)| (n.clone(), Tensor::new(&[1f32], &Device::Cpu).unwrap()))
        .collect();
    opt.step(&grads, 0.1, &[]).unwrap();
    let value = |i: usize| params[i].1.as_tensor().to_vec1::<f32>().unwrap()[0];
    // Four blocks: the stem is 5 layers below the head, 0.5⁵ of the rate.
    assert!(
        (value(0) - (1.0 - 0.1 / 32.0)).abs() < 1e-7,
        "stem {}",
        value(0)
    );
    assert!((value(1) - 0.9).abs() < 1e-7, "head {}", value(1));
}
