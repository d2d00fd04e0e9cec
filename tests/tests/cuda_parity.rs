//! Every CUDA path against the CPU path, so that the first run on a GPU checks everything at
//! once: the tiny timm fixtures in f32 / f16 / bf16, TResNet-M in f16, the detection head, a
//! training step's gradients (f32 and mixed precision), and the blur kernel both ways. Built
//! only with `--features cuda`; on a machine without a usable GPU each test prints why it
//! skipped and passes.
#![cfg(feature = "cuda")]
#![allow(clippy::print_stderr)]

use candle_core::{DType, Device, Tensor, Var};
use tresnet::layers::BlurPool;
use tresnet::weights::random_state_dict;
use tresnet::{BuildOptions, HubConfig, Layout, TResNet, TResNetConfig, TrainableTResNet};
use tresnet_heads::detection::{
    DetectionHead, DetectorConfig, pyramid_channels, random_detector_state,
};
use tresnet_tests::{fixture_state_dict, fixture_text, load_fixture, seeded_uniform};

/// The first CUDA device, or `None` with the reason printed.
fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipped: no usable CUDA device ({e})");
            None
        }
    }
}

/// `max |a − b| / max |b|` over all elements (both moved to the CPU in f64).
fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    let to64 = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    };
    let (a, b) = (to64(a), to64(b));
    let diff: f64 = (&a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    let scale: f64 = b.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    diff / scale.max(1e-12)
}

#[test]
fn tiny_fixtures_match_the_cpu_in_every_dtype() {
    let Some(device) = gpu() else { return };
    for name in ["tiny_v1", "tiny_v2"] {
        let tensors = load_fixture(&format!("{name}.safetensors"));
        let config = HubConfig::parse(&fixture_text(&format!("{name}.config.json")))
            .unwrap()
            .to_tresnet_config()
            .unwrap();
        let state = fixture_state_dict(&tensors);
        let cpu = TResNet::new(&config, &state, &BuildOptions::default()).unwrap();
        let input = &tensors["input0"];
        let reference = cpu.forward(input).unwrap();
        for (dtype, tolerance) in [(DType::F32, 1e-4), (DType::F16, 1e-2), (DType::BF16, 3e-2)] {
            let gpu_model =
                TResNet::new(&config, &state, &BuildOptions::new(device.clone(), dtype)).unwrap();
            let x = input.to_device(&device).unwrap().to_dtype(dtype).unwrap();
            let logits = gpu_model.forward(&x).unwrap();
            let err = relative_error(&logits, &reference);
            eprintln!("{name} {dtype:?}: relative error {err:.2e}");
            assert!(err < tolerance, "{name} {dtype:?}: {err}");
        }
    }
}

#[test]
fn tresnet_m_in_f16_matches_the_cpu() {
    let Some(device) = gpu() else { return };
    let config = TResNetConfig::variant("tresnet_m").unwrap();
    let state = random_state_dict(&Layout::new(&config).unwrap(), 2).unwrap();
    let cpu = TResNet::new(&config, &state, &BuildOptions::default()).unwrap();
    let x = seeded_uniform(4, 0.0, 1.0, &[2, 3, 224, 224], DType::F32);
    let reference = cpu.forward(&x).unwrap();
    let gpu_model = TResNet::new(
        &config,
        &state,
        &BuildOptions::new(device.clone(), DType::F16),
    )
    .unwrap();
    let logits = gpu_model
        .forward(&x.to_device(&device).unwrap().to_dtype(DType::F16).unwrap())
        .unwrap();
    let err = relative_error(&logits, &reference);
    eprintln!("tresnet_m f16: relative error {err:.2e}");
    assert!(err < 1e-2, "{err}");
}

#[test]
fn the_detection_head_matches_the_cpu() {
    let Some(device) = gpu() else { return };
    let config = TResNetConfig {
        layers: [1, 1, 1, 1],
        width_factor: 0.25,
        num_classes: 0,
        ..TResNetConfig::variant("tresnet_m").unwrap()
    };
    let state = random_state_dict(&Layout::new(&config).unwrap(), 3).unwrap();
    let detector = DetectorConfig::small(6, 32, 2);
    let cpu = TResNet::new(&config, &state, &BuildOptions::default()).unwrap();
    let channels = pyramid_channels(&cpu.feature_info()).unwrap();
    let head_state = random_detector_state(&detector, channels, 5).unwrap();
    let x = seeded_uniform(6, 0.0, 1.0, &[2, 3, 96, 128], DType::F32);
    let cpu_head =
        DetectionHead::load(&detector, channels, &head_state, DType::F32, &Device::Cpu).unwrap();
    let reference = cpu_head
        .forward(&cpu.forward_features(&x).unwrap())
        .unwrap();
    let gpu_backbone = TResNet::new(
        &config,
        &state,
        &BuildOptions::new(device.clone(), DType::F32),
    )
    .unwrap();
    let gpu_head =
        DetectionHead::load(&detector, channels, &head_state, DType::F32, &device).unwrap();
    let out = gpu_head
        .forward(
            &gpu_backbone
                .forward_features(&x.to_device(&device).unwrap())
                .unwrap(),
        )
        .unwrap();
    for (a, b) in out.levels.iter().zip(&reference.levels) {
        for (what, ta, tb) in [
            ("class logits", &a.class_logits, &b.class_logits),
            ("distances", &a.ltrb, &b.ltrb),
            ("centerness", &a.centerness_logits, &b.centerness_logits),
        ] {
            let err = relative_error(ta, tb);
            assert!(err < 1e-4, "stride {} {what}: {err}", a.shape.stride);
        }
    }
}

#[test]
fn a_training_step_gives_the_cpu_gradients() {
    let Some(device) = gpu() else { return };
    let config = TResNetConfig {
        layers: [1, 1, 1, 1],
        width_factor: 0.25,
        num_classes: 4,
        ..TResNetConfig::variant("tresnet_m").unwrap()
    };
    let state = random_state_dict(&Layout::new(&config).unwrap(), 7).unwrap();
    let x = seeded_uniform(8, 0.0, 1.0, &[4, 3, 64, 64], DType::F32);
    let probe = seeded_uniform(9, -1.0, 1.0, &[4, 4], DType::F32);
    let grads_on = |device: &Device| {
        let net = TrainableTResNet::new(&config, &state, DType::F32, device).unwrap();
        let loss = (net.forward(&x.to_device(device).unwrap()).unwrap()
            * probe.to_device(device).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
        let store = loss.backward().unwrap();
        net.parameters()
            .iter()
            .map(|(name, var)| (name.clone(), store.get(var).unwrap().clone()))
            .collect::<Vec<_>>()
    };
    let cpu = grads_on(&Device::Cpu);
    let gpu = grads_on(&device);
    for ((name, a), (_, b)) in gpu.iter().zip(&cpu) {
        let err = relative_error(a, b);
        assert!(err < 1e-3, "{name}: {err}");
    }
}

#[test]
fn a_mixed_precision_training_step_follows_the_cpu_f32_gradients() {
    let Some(device) = gpu() else { return };
    let config = TResNetConfig {
        layers: [1, 1, 1, 1],
        width_factor: 0.25,
        num_classes: 4,
        ..TResNetConfig::variant("tresnet_m").unwrap()
    };
    let state = random_state_dict(&Layout::new(&config).unwrap(), 11).unwrap();
    let x = seeded_uniform(12, 0.0, 1.0, &[4, 3, 64, 64], DType::F32);
    let probe = seeded_uniform(13, -1.0, 1.0, &[4, 4], DType::F32);
    // A fixed loss scale, as the trainer's scaler would apply, keeps f16 gradients representable.
    let scale = 1024.0;
    let grads = |net: &TrainableTResNet, device: &Device| {
        let logits = net
            .forward(&x.to_device(device).unwrap())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let loss = ((logits * probe.to_device(device).unwrap()).unwrap() * scale)
            .unwrap()
            .sum_all()
            .unwrap();
        let store = loss.backward().unwrap();
        net.parameters()
            .iter()
            .map(|(name, var)| {
                let g = store.get(var).unwrap();
                assert_eq!(g.dtype(), DType::F32, "{name}");
                (name.clone(), (g / scale).unwrap())
            })
            .collect::<Vec<_>>()
    };
    let reference = TrainableTResNet::new(&config, &state, DType::F32, &Device::Cpu).unwrap();
    let cpu = grads(&reference, &Device::Cpu);
    for (compute, tolerance) in [(DType::F16, 2e-2), (DType::BF16, 8e-2)] {
        let net = TrainableTResNet::mixed_precision(&config, &state, compute, &device).unwrap();
        let gpu = grads(&net, &device);
        for ((name, a), (_, b)) in gpu.iter().zip(&cpu) {
            let err = relative_error(a, b);
            assert!(err < tolerance, "{compute:?} {name}: {err}");
        }
    }
}

#[test]
fn the_blur_kernel_matches_the_cpu_forward_and_backward_in_every_dtype() {
    let Some(device) = gpu() else { return };
    // Odd and even sides (reflection at the far edge differs), the 2×2 minimum, a model shape.
    for (seed, shape) in [
        (20, [2, 3, 7, 9]),
        (21, [1, 4, 2, 2]),
        (22, [1, 2, 5, 2]),
        (23, [2, 64, 56, 56]),
    ] {
        let x = seeded_uniform(seed, -1.0, 1.0, &shape, DType::F32);
        let (ho, wo) = (shape[2].div_ceil(2), shape[3].div_ceil(2));
        let probe = seeded_uniform(
            seed + 100,
            -1.0,
            1.0,
            &[shape[0], shape[1], ho, wo],
            DType::F32,
        );
        // Gradient of Σ probe · blur(x) with respect to x.
        let forward_backward = |x: &Tensor, probe: &Tensor, generic: bool| {
            let var = Var::from_tensor(x).unwrap();
            let y = if generic {
                BlurPool.forward_generic(var.as_tensor())
            } else {
                BlurPool.forward(var.as_tensor())
            }
            .unwrap();
            let loss = (y.to_dtype(DType::F32).unwrap() * probe)
                .unwrap()
                .sum_all()
                .unwrap();
            let grad = loss.backward().unwrap().get(&var).unwrap().clone();
            (y, grad)
        };
        let (want_y, want_grad) = forward_backward(&x, &probe, false);
        for (dtype, tolerance) in [
            (DType::F32, 1e-5),
            (DType::F16, 2e-3),
            (DType::BF16, 1.6e-2),
        ] {
            let xg = x.to_device(&device).unwrap().to_dtype(dtype).unwrap();
            let pg = probe.to_device(&device).unwrap();
            let (y, grad) = forward_backward(&xg, &pg, false);
            assert_eq!(y.dtype(), dtype);
            assert_eq!(grad.dtype(), dtype);
            let (y_err, grad_err) = (
                relative_error(&y, &want_y),
                relative_error(&grad, &want_grad),
            );
            eprintln!("blur {shape:?} {dtype:?}: forward {y_err:.2e}, gradient {grad_err:.2e}");
            assert!(
                y_err < tolerance,
                "blur {shape:?} {dtype:?} forward: {y_err}"
            );
            assert!(
                grad_err < tolerance,
                "blur {shape:?} {dtype:?} gradient: {grad_err}"
            );
            // The kernel and the generic tensor path on the same device agree as well.
            let (generic_y, generic_grad) = forward_backward(&xg, &pg, true);
            assert!(
                relative_error(&y, &generic_y) < tolerance,
                "{shape:?} {dtype:?}"
            );
            assert!(
                relative_error(&grad, &generic_grad) < tolerance,
                "{shape:?} {dtype:?}"
            );
        }
    }
}
