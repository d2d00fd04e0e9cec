//! Mixed-precision training on the CPU: f32 variables under f16 activations, or f32 activations
//! under bf16 products (CPUs with AVX-512 BF16). The logits and every parameter's gradient follow
//! the all-f32 network within the half type's precision, the gradients arrive in f32, and the f16
//! path survives through loss scaling.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use tresnet::weights::StateDict;
use tresnet::{TResNetConfig, TrainableTResNet, native_cpu_bf16};
use tresnet_tests::{lively_state, seeded_uniform};
use tresnet_training::{LossScaler, ScaledStep, named_gradients};

fn tiny_config() -> TResNetConfig {
    TResNetConfig {
        layers: [1, 1, 1, 1],
        width_factor: 0.125,
        num_classes: 5,
        ..TResNetConfig::variant("tresnet_m").unwrap()
    }
}

/// Logits (as f32) and unscaled parameter gradients of `Σ logits · probe` for one step.
fn step(
    net: &TrainableTResNet,
    scaler: &mut LossScaler,
    x: &Tensor,
    probe: &Tensor,
) -> (Tensor, HashMap<String, Tensor>) {
    let logits = net.forward(x).unwrap().to_dtype(DType::F32).unwrap();
    let objective = (&logits * probe).unwrap().sum_all().unwrap();
    // An f16 overflow halves the scale; retry as the trainer's next batch would.
    for _ in 0..20 {
        let scaled = scaler.scale_loss(&objective).unwrap();
        let mut grads = named_gradients(net.parameters(), &scaled.backward().unwrap());
        if scaler.unscale(&mut grads).unwrap() == ScaledStep::Apply {
            return (logits, grads);
        }
    }
    panic!("the gradients overflow at every loss scale");
}

/// ‖a − b‖ / ‖b‖ over all elements.
fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    let norm = |t: &Tensor| {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            .sqrt()
    };
    norm(&(&a - &b).unwrap()) / norm(&b).max(1e-30)
}

/// Logits within `tolerance` of the f32 network's, every gradient within a few times the
/// rounding floor, f32 variables and statistics.
fn check(compute: DType, tolerance: f64) {
    let config = tiny_config();
    let state = lively_state(&config, 7, 300);
    let x = seeded_uniform(1, 0.0, 1.0, &[4, 3, 64, 64], DType::F32);
    let probe = seeded_uniform(2, -1.0, 1.0, &[4, 5], DType::F32);
    let reference = TrainableTResNet::new(&config, &state, DType::F32, &Device::Cpu).unwrap();
    let (want_logits, want) = step(&reference, &mut LossScaler::new(false), &x, &probe);

    // The rounding floor: the f32 network fed with weights and input rounded to `compute`.
    let mut rounded_state = StateDict::new();
    for (k, t) in state.iter() {
        let t = if t.dtype() == DType::F32 {
            t.to_dtype(compute).unwrap().to_dtype(DType::F32).unwrap()
        } else {
            t.clone()
        };
        rounded_state.insert(k, t);
    }
    let rounded = TrainableTResNet::new(&config, &rounded_state, DType::F32, &Device::Cpu).unwrap();
    let x_rounded = x.to_dtype(compute).unwrap().to_dtype(DType::F32).unwrap();
    let (_, floor) = step(&rounded, &mut LossScaler::new(false), &x_rounded, &probe);

    let mixed = TrainableTResNet::mixed_precision(&config, &state, compute, &Device::Cpu).unwrap();
    if compute == DType::BF16 {
        // bf16 on the CPU: f32 activations, bf16 products where the CPU has them.
        assert_eq!(mixed.model().dtype(), DType::F32);
        assert_eq!(mixed.model().multiplies_in_bf16(), native_cpu_bf16());
    } else {
        assert_eq!(mixed.model().dtype(), compute);
    }
    let mut scaler = LossScaler::new(compute == DType::F16);
    let (logits, got) = step(&mixed, &mut scaler, &x, &probe);
    let e = relative_error(&logits, &want_logits);
    assert!(e < tolerance, "{compute:?} logits: relative error {e}");

    // A random deep network's gradients are ill-conditioned: rounding its weights and input to
    // the half type alone moves some of them by 10-30 %. Mixed precision rounds every
    // activation too, so each gradient may be a few times further off than that floor.
    let eps = if compute == DType::F16 {
        4.9e-4
    } else {
        3.9e-3
    };
    assert_eq!(got.len(), want.len());
    for (name, g) in &got {
        assert_eq!(g.dtype(), DType::F32, "{name}: gradient of an f32 variable");
        let e = relative_error(g, &want[name]);
        let bound = 4.0 * relative_error(&floor[name], &want[name]) + 8.0 * eps;
        assert!(
            e <= bound,
            "{compute:?} {name}: gradient relative error {e:.3e}, bound {bound:.3e}"
        );
    }
    // Variables, running statistics and the exported state stay f32; the statistics moved.
    for (name, var) in mixed.parameters() {
        assert_eq!(var.as_tensor().dtype(), DType::F32, "{name}");
    }
    let exported = mixed.state_dict().unwrap();
    let mean = exported.get("body.conv1.bn.running_mean").unwrap();
    assert_eq!(mean.dtype(), DType::F32);
    let want_mean = reference.state_dict().unwrap();
    let e = relative_error(mean, want_mean.get("body.conv1.bn.running_mean").unwrap());
    assert!(e < tolerance, "{compute:?} running mean: {e}");
}

#[test]
fn bf16_mixed_precision_follows_f32() {
    // bf16 keeps 8 bits of mantissa: ~0.4 % per rounding.
    check(DType::BF16, 3e-2);
}

#[test]
fn f16_mixed_precision_with_loss_scaling_follows_f32() {
    // f16 keeps 11 bits; the loss scale keeps small gradients from flushing to zero.
    check(DType::F16, 5e-3);
}

#[test]
fn mixed_precision_refuses_a_full_precision_compute_type() {
    let config = tiny_config();
    let state = lively_state(&config, 7, 300);
    let err = TrainableTResNet::mixed_precision(&config, &state, DType::F32, &Device::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("f16 or bf16"), "{err}");
}
