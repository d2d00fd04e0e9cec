//! Behaviour of the built network beyond parity: BN folding, input checks, classifier reset,
//! half-precision on the CPU, pooling variants.
#![allow(clippy::print_stderr)] // reports measured differences

use candle_core::{D, DType, Device, Tensor};
use tresnet::weights::{StateDict, random_state_dict};
use tresnet::{BuildOptions, Error, GlobalPool, HubConfig, Layout, TResNet, TResNetConfig};
use tresnet_tests::{assert_close, fixture_state_dict, fixture_text, load_fixture};

/// Random weights where no batch norm is an identity and no residual branch is zeroed (timm's init
/// zeroes the last gamma of each block, which would hide errors in the branches).
fn randomized_state(config: &TResNetConfig, seed: u64) -> StateDict {
    let layout = Layout::new(config).unwrap();
    let mut state = random_state_dict(&layout, seed).unwrap();
    let keys: Vec<String> = state
        .keys()
        .filter(|k| k.contains(".bn."))
        .map(str::to_string)
        .collect();
    for (i, key) in keys.iter().enumerate() {
        let t = state.get(key).unwrap();
        if t.dtype() != DType::F32 {
            continue;
        }
        let u = Tensor::rand(0f32, 1f32, t.dims(), &Device::Cpu).unwrap();
        let value = if key.ends_with("weight") {
            (u + 0.5).unwrap()
        } else if key.ends_with("running_var") {
            u.affine(0.5, 0.75).unwrap()
        } else {
            ((u - 0.5).unwrap() * (0.2 + (i % 3) as f64 * 0.1)).unwrap()
        };
        state.insert(key.clone(), value);
    }
    state
}

#[test]
fn folded_equals_unfolded_on_full_tresnet_m() {
    let config = TResNetConfig::variant("tresnet_m").unwrap();
    let state = randomized_state(&config, 11);
    let folded = TResNet::new(&config, &state, &BuildOptions::default()).unwrap();
    let unfolded = TResNet::new(
        &config,
        &state,
        &BuildOptions {
            fold_batch_norm: false,
            ..BuildOptions::default()
        },
    )
    .unwrap();
    assert!(folded.is_folded() && !unfolded.is_folded());
    let x = Tensor::rand(0f32, 1f32, (2, 3, 96, 64), &Device::Cpu).unwrap();
    let a = folded.forward_all(&x).unwrap();
    let b = unfolded.forward_all(&x).unwrap();
    for (fa, fb) in a.features.all().zip(b.features.all()) {
        assert_close(&fa.tensor, &fb.tensor, 1e-4, 1e-4, &fa.name);
    }
    let d = assert_close(
        a.logits.as_ref().unwrap(),
        b.logits.as_ref().unwrap(),
        1e-4,
        0.0,
        "logits",
    );
    eprintln!("folded vs unfolded tresnet_m logits: max |diff| {d:.2e}");
}

#[test]
fn bf16_products_on_the_cpu_stay_close_to_f32_on_full_tresnet_m() {
    let config = TResNetConfig::variant("tresnet_m").unwrap();
    let state = randomized_state(&config, 12);
    let f32_model = TResNet::new(&config, &state, &BuildOptions::default()).unwrap();
    let bf16_model = TResNet::new(
        &config,
        &state,
        &BuildOptions::new(Device::Cpu, DType::BF16),
    )
    .unwrap();
    if !tresnet::native_cpu_bf16() {
        // The request falls back to plain f32: the same numbers.
        assert!(!bf16_model.multiplies_in_bf16());
        eprintln!("skipped the bf16 comparison: this CPU has no AVX-512 BF16");
        return;
    }
    assert!(bf16_model.multiplies_in_bf16());
    // Three images share the small maps' tiles; one wider image takes the row-tile path.
    for shape in [(3, 3, 64, 64), (1, 3, 96, 160)] {
        let x = Tensor::rand(0f32, 1f32, shape, &Device::Cpu).unwrap();
        let a = f32_model.forward_all(&x).unwrap();
        let b = bf16_model.forward_all(&x).unwrap();
        let reference = a.logits.as_ref().unwrap();
        let scale = reference
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        // bf16 keeps 8 bits of mantissa: each product's operands are off by up to 2⁻⁹
        // relative, and the errors of 5.7 GMAC of products partly cancel.
        let d = assert_close(
            b.logits.as_ref().unwrap(),
            reference,
            1e-2 * scale,
            0.0,
            "bf16-product logits",
        );
        eprintln!("{shape:?}: bf16 products, max |diff| {d:.3e} on logits of magnitude {scale:.2}");
        assert_eq!(b.logits.unwrap().dtype(), DType::F32);
    }
}

#[test]
fn feature_geometry_follows_the_input() {
    let config = TResNetConfig::variant("tresnet_l")
        .unwrap()
        .with_num_classes(0);
    let model = TResNet::random(&config, 1, &BuildOptions::default()).unwrap();
    let x = Tensor::rand(0f32, 1f32, (1, 3, 72, 88), &Device::Cpu).unwrap();
    let features = model.forward_features(&x).unwrap();
    let shapes: Vec<(String, Vec<usize>, usize)> = features
        .all()
        .map(|f| (f.name.clone(), f.tensor.dims().to_vec(), f.stride))
        .collect();
    assert_eq!(
        shapes,
        vec![
            ("stem".to_string(), vec![1, 76, 18, 22], 4),
            ("layer1".to_string(), vec![1, 76, 18, 22], 4),
            ("layer2".to_string(), vec![1, 152, 9, 11], 8),
            ("layer3".to_string(), vec![1, 1216, 5, 6], 16),
            ("layer4".to_string(), vec![1, 2432, 3, 3], 32),
        ]
    );
    let info: Vec<(String, usize, usize)> = model
        .feature_info()
        .into_iter()
        .map(|f| (f.name, f.channels, f.stride))
        .collect();
    assert_eq!(info[4], ("layer4".to_string(), 2432, 32));
    // No classifier: forward returns the pooled features.
    assert_eq!(model.forward(&x).unwrap().dims(), &[1, 2432]);
}

#[test]
fn bad_input_shapes_are_rejected_with_a_reason() {
    let config = TResNetConfig {
        layers: [1, 1, 1, 1],
        width_factor: 0.125,
        ..TResNetConfig::variant("tresnet_m").unwrap()
    };
    let model = TResNet::random(&config, 3, &BuildOptions::default()).unwrap();
    let cases: [(&[usize], &str); 5] = [
        (&[1, 3, 66, 64], "multiples of 4"),
        (&[1, 3, 16, 64], "at least 20"),
        (&[1, 1, 64, 64], "3 channels"),
        (&[3, 64, 64], "(N, C, H, W)"),
        (&[0, 3, 64, 64], "empty"),
    ];
    for (shape, reason) in cases {
        let x = Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
        let err = model.forward(&x).unwrap_err();
        assert!(matches!(err, Error::InputShape { .. }), "{shape:?}: {err}");
        assert!(err.to_string().contains(reason), "{shape:?}: {err}");
    }
    // The smallest accepted side works end to end.
    let x = Tensor::zeros((1, 3, 20, 24), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.forward(&x).unwrap().dims(), &[1, 1000]);
}

#[test]
fn reset_classifier_changes_or_removes_the_head() {
    let tensors = load_fixture("tiny_v1.safetensors");
    let config = HubConfig::parse(&fixture_text("tiny_v1.config.json"))
        .unwrap()
        .to_tresnet_config()
        .unwrap();
    let mut model = TResNet::new(
        &config,
        &fixture_state_dict(&tensors),
        &BuildOptions::default(),
    )
    .unwrap();
    let x = &tensors["input0"];
    let before = model.forward_all(x).unwrap();
    model.reset_classifier(5, 42).unwrap();
    let after = model.forward_all(x).unwrap();
    assert_eq!(model.num_classes(), 5);
    assert_eq!(after.logits.as_ref().unwrap().dims(), &[2, 5]);
    // The body is untouched.
    assert_close(
        &after.pre_logits,
        &before.pre_logits,
        0.0,
        0.0,
        "pre_logits",
    );
    // timm's init: weight N(0, 0.01) gives small logits.
    let max = after
        .logits
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(max < 1.0, "{max}");
    model.reset_classifier(0, 0).unwrap();
    assert_eq!(model.forward(x).unwrap().dims(), &[2, 256]);
}

#[test]
fn half_precision_on_cpu_stays_close_to_f32() {
    let tensors = load_fixture("tiny_v1.safetensors");
    let config = HubConfig::parse(&fixture_text("tiny_v1.config.json"))
        .unwrap()
        .to_tresnet_config()
        .unwrap();
    let state = fixture_state_dict(&tensors);
    let reference = &tensors["out0.logits"];
    let scale = reference
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    for dtype in [DType::F16, DType::BF16] {
        let model = TResNet::new(&config, &state, &BuildOptions::new(Device::Cpu, dtype)).unwrap();
        let logits = model.forward(&tensors["input0"]).unwrap();
        // A CPU network in bf16 keeps f32 activations and multiplies in bf16 where it can.
        let expected = if dtype == DType::BF16 {
            assert_eq!(model.multiplies_in_bf16(), tresnet::native_cpu_bf16());
            DType::F32
        } else {
            dtype
        };
        assert_eq!(logits.dtype(), expected);
        let tol = if dtype == DType::F16 { 1e-2 } else { 5e-2 };
        let d = assert_close(
            &logits,
            reference,
            tol * scale,
            0.0,
            &format!("{dtype:?} logits"),
        );
        eprintln!("{dtype:?}: max |diff| {d:.3e} on logits of magnitude {scale:.2}");
    }
}

#[test]
fn pooling_variants_follow_their_definitions() {
    let base = TResNetConfig {
        layers: [1, 1, 1, 1],
        width_factor: 0.125,
        num_classes: 4,
        ..TResNetConfig::variant("tresnet_m").unwrap()
    };
    let x = Tensor::rand(0f32, 1f32, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let mut pooled = Vec::new();
    for pool in [GlobalPool::Fast, GlobalPool::Max, GlobalPool::CatAvgMax] {
        let config = TResNetConfig {
            global_pool: pool,
            ..base.clone()
        };
        let model = TResNet::random(&config, 5, &BuildOptions::default()).unwrap();
        let out = model.forward_all(&x).unwrap();
        assert_eq!(out.logits.unwrap().dims(), &[2, 4]);
        pooled.push((out.features.last().clone(), out.pre_logits));
    }
    let (last, mean) = &pooled[0];
    let flat = last.flatten_from(2).unwrap();
    assert_close(
        mean,
        &flat.mean(D::Minus1).unwrap(),
        1e-6,
        0.0,
        "fast = mean",
    );
    assert_close(&pooled[1].1, &flat.max(D::Minus1).unwrap(), 0.0, 0.0, "max");
    assert_eq!(pooled[2].1.dims(), &[2, 512]);
}

#[test]
fn random_weights_are_reproducible() {
    let config = TResNetConfig {
        layers: [1, 1, 2, 1],
        width_factor: 0.25,
        ..TResNetConfig::variant("tresnet_m").unwrap()
    };
    let layout = Layout::new(&config).unwrap();
    let a = random_state_dict(&layout, 9).unwrap();
    let b = random_state_dict(&layout, 9).unwrap();
    let c = random_state_dict(&layout, 10).unwrap();
    let key = "body.layer3.0.conv2.conv.weight";
    assert_close(a.get(key).unwrap(), b.get(key).unwrap(), 0.0, 0.0, key);
    assert!(tresnet_tests::max_abs_diff(a.get(key).unwrap(), c.get(key).unwrap()) > 0.0);
    // Kaiming fan-out: std = sqrt(2 / (out * 3 * 3)).
    let w = a.get(key).unwrap();
    let std = w
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt();
    let want = (2.0f32 / (w.dims()[0] * 9) as f32).sqrt();
    assert!((std - want).abs() < 0.1 * want, "std {std} vs {want}");
    // The last batch norm of each block starts at zero.
    assert_eq!(
        a.vec_f32("body.layer3.0.conv3.bn.weight")
            .unwrap()
            .iter()
            .sum::<f32>(),
        0.0
    );
}
