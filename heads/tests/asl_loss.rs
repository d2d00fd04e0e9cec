//! The asymmetric loss against the ASL repository's formula (`tests/fixtures/asl.safetensors`):
//! value and gradient for every setting, multi- and single-label, and the gradient reaching
//! candle's autograd.

use candle_core::{DType, Device, Tensor, Var};
use serde_json::Value;
use tresnet_heads::losses::{
    AsymmetricLoss, AsymmetricSingleLabelLoss, Reduction, asymmetric_loss, single_label_loss,
};
use tresnet_tests::load_fixture;

fn settings() -> Value {
    let bytes = std::fs::read(tresnet_tests::fixture_path("asl.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    serde_json::from_str(&meta.metadata().as_ref().unwrap()["settings"]).unwrap()
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `|a - b| <= rtol * max(|b|, floor)` element-wise.
fn assert_rel(actual: &[f64], expected: &[f64], rtol: f64, floor: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= rtol * e.abs().max(floor),
            "{what}[{i}]: {a} vs {e}"
        );
    }
}

#[test]
fn multi_label_value_and_gradient_match_every_setting() {
    let t = load_fixture("asl.safetensors");
    let meta = settings();
    let x = f64s(&t["logits"]);
    let y = f64s(&t["targets"]);
    for setting in ["default", "bce", "g2", "train_coco"] {
        for mode in ["nograd_focal", "grad_focal"] {
            let key = format!("{setting}.{mode}");
            let s = &meta[&key];
            let loss = AsymmetricLoss {
                gamma_neg: s["gamma_neg"].as_f64().unwrap(),
                gamma_pos: s["gamma_pos"].as_f64().unwrap(),
                clip: s["clip"].as_f64().unwrap(),
                eps: s["eps"].as_f64().unwrap(),
                focal_weight_without_grad: s["disable_torch_grad_focal_loss"].as_bool().unwrap(),
            };
            let (value, grad) = loss.value_and_grad(&x, &y).unwrap();
            let want = f64s(&t[&format!("{key}.loss_f64")])[0];
            assert_rel(
                &[value],
                &[want],
                1e-9,
                1.0,
                &format!("{key} loss (f64 reference)"),
            );
            let want32 = f64s(&t[&format!("{key}.loss")])[0];
            assert_rel(
                &[value],
                &[want32],
                1e-5,
                1.0,
                &format!("{key} loss (f32 reference)"),
            );
            assert_rel(
                &grad,
                &f64s(&t[&format!("{key}.grad_f64")]),
                1e-9,
                1e-6,
                &format!("{key} grad (f64)"),
            );
            // f32 reference: rel 1e-5 of the largest gradient (~1); timm f32 vs f64 differ by 1.7e-6.
            assert_rel(
                &grad,
                &f64s(&t[&format!("{key}.grad")]),
                1e-5,
                1.0,
                &format!("{key} grad (f32)"),
            );
        }
    }
}

#[test]
fn single_label_value_and_gradient_match_every_setting() {
    let t = load_fixture("asl.safetensors");
    let meta = settings();
    let x = f64s(&t["logits"]);
    let targets: Vec<usize> = t["single.targets"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as usize)
        .collect();
    let classes = x.len() / targets.len();
    for setting in ["default", "gp1", "ce", "default_none"] {
        let s = &meta[&format!("single.{setting}")];
        let loss = AsymmetricSingleLabelLoss {
            gamma_pos: s["gamma_pos"].as_f64().unwrap(),
            gamma_neg: s["gamma_neg"].as_f64().unwrap(),
            smoothing: s["eps"].as_f64().unwrap(),
            reduction: if s["reduction"] == "none" {
                Reduction::None
            } else {
                Reduction::Mean
            },
        };
        let (values, grad) = loss.value_and_grad(&x, classes, &targets).unwrap();
        assert_rel(
            &values,
            &f64s(&t[&format!("single.{setting}.loss_f64")]),
            1e-9,
            1.0,
            &format!("single.{setting} loss"),
        );
        assert_rel(
            &values,
            &f64s(&t[&format!("single.{setting}.loss")]),
            1e-5,
            1.0,
            &format!("single.{setting} loss f32"),
        );
        assert_rel(
            &grad,
            &f64s(&t[&format!("single.{setting}.grad_f64")]),
            1e-9,
            1e-6,
            &format!("single.{setting} grad"),
        );
    }
}

#[test]
fn losses_backpropagate_their_exact_gradient_through_candle() {
    let t = load_fixture("asl.safetensors");
    let logits = Var::from_tensor(&t["logits"].to_dtype(DType::F32).unwrap()).unwrap();
    // A function of the logits before the loss, to check the chain rule: z = 2·logits.
    let doubled = (logits.as_tensor() * 2.0).unwrap();
    let loss = asymmetric_loss(&AsymmetricLoss::coco_training(), &doubled, &t["targets"]).unwrap();
    let expected_value = AsymmetricLoss::coco_training()
        .value_and_grad(&f64s(&doubled), &f64s(&t["targets"]))
        .unwrap();
    assert!((f64::from(loss.to_scalar::<f32>().unwrap()) - expected_value.0).abs() < 1e-3);
    let grads = loss.backward().unwrap();
    let g = f64s(grads.get(&logits).unwrap());
    let want: Vec<f64> = expected_value.1.iter().map(|v| 2.0 * v).collect();
    assert_rel(&g, &want, 1e-5, 1e-3, "d loss / d logits through autograd");

    let targets = vec![3usize, 0];
    let x = Var::from_tensor(
        &Tensor::new(
            &[[0.5f32, -1.0, 2.0, 0.1], [1.0, 1.0, 1.0, 1.0]],
            &Device::Cpu,
        )
        .unwrap(),
    )
    .unwrap();
    let ce = single_label_loss(
        &AsymmetricSingleLabelLoss::cross_entropy(0.0),
        x.as_tensor(),
        &targets,
    )
    .unwrap();
    let g = f64s(ce.backward().unwrap().get(&x).unwrap());
    // Cross-entropy gradient: (softmax − onehot) / B.
    let p0: Vec<f64> = {
        let v = [0.5f64, -1.0, 2.0, 0.1];
        let z: f64 = v.iter().map(|a| a.exp()).sum();
        v.iter().map(|a| a.exp() / z).collect()
    };
    let want = [
        p0[0] / 2.0,
        p0[1] / 2.0,
        p0[2] / 2.0,
        (p0[3] - 1.0) / 2.0,
        -0.375,
        0.125,
        0.125,
        0.125,
    ];
    assert_rel(&g, &want, 1e-5, 1e-6, "cross-entropy gradient");
}

#[test]
fn nan_losses_are_refused() {
    let err = AsymmetricLoss::default()
        .value_and_grad(&[f64::NAN, 1.0], &[1.0, 0.0])
        .unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");
}
