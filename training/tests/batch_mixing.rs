//! Mixup, CutMix and the soft-target cross-entropy against timm's `Mixup` and
//! `SoftTargetCrossEntropy` (fixture: tests/fixtures/mixup_reference.safetensors, made by
//! make_mixup_reference.py from fixed draws of the blend weight and box centre).

use candle_core::{DType, Device, Tensor};
use tresnet_heads::losses::soft_target_cross_entropy;
use tresnet_tests::{assert_close, load_fixture};
use tresnet_training::{BatchMix, smoothed_one_hot};

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

#[test]
fn mixed_images_and_targets_equal_timms() {
    let fixture = load_fixture("mixup_reference.safetensors");
    for case in ["mixup", "cutmix", "cutmix_edge", "cutmix_centre"] {
        let get = |name: &str| fixture[&format!("{case}.{name}")].clone();
        let settings = values(&get("settings"));
        let (lam, use_cutmix, smoothing, classes) = (
            settings[0],
            settings[1] == 1.0,
            settings[2],
            settings[3] as usize,
        );
        let x = get("x");
        let (_, _, h, w) = x.dims4().unwrap();
        let mix = if use_cutmix {
            BatchMix::cutmix(lam, h, w, settings[4] as usize, settings[5] as usize)
        } else {
            BatchMix::Mixup { lam }
        };
        assert_close(
            &mix.mix_images(&x).unwrap(),
            &get("mixed_x"),
            1e-12,
            0.0,
            &format!("{case}: images"),
        );
        let targets: Vec<usize> = values(&get("target")).iter().map(|&c| c as usize).collect();
        let soft = smoothed_one_hot(&targets, classes, smoothing, &Device::Cpu).unwrap();
        assert_close(
            &mix.mix_targets(&soft)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap(),
            &get("mixed_target"),
            1e-6,
            0.0,
            &format!("{case}: targets"),
        );
    }
}

#[test]
fn the_box_is_clipped_and_the_weight_corrected() {
    // 8×10 images, λ 0.6: a 5×6 box (⌊8·√0.4⌋ × ⌊10·√0.4⌋) centred on (1, 5) loses its top row;
    // centred on (7, 9) it keeps 3×4 of itself.
    assert_eq!(
        BatchMix::cutmix(0.6, 8, 10, 1, 5),
        BatchMix::CutMix {
            lam: 1.0 - 4.0 * 6.0 / 80.0,
            rows: 0..4,
            cols: 2..8
        }
    );
    assert_eq!(
        BatchMix::cutmix(0.6, 8, 10, 7, 9),
        BatchMix::CutMix {
            lam: 1.0 - 3.0 * 4.0 / 80.0,
            rows: 5..8,
            cols: 6..10
        }
    );
    // λ = 1 pastes nothing; the images come back unchanged.
    let none = BatchMix::cutmix(1.0, 8, 10, 3, 3);
    assert_eq!(none.lam(), 1.0);
    let x = Tensor::rand(0f32, 1.0, (2, 3, 8, 10), &Device::Cpu).unwrap();
    assert_close(&none.mix_images(&x).unwrap(), &x, 0.0, 0.0, "empty box");
}

#[test]
fn soft_target_cross_entropy_and_gradient_equal_timms() {
    let fixture = load_fixture("mixup_reference.safetensors");
    let logits = values(&fixture["soft_ce.logits"]);
    let targets = values(&fixture["soft_ce.targets"]);
    let (loss, grad) = soft_target_cross_entropy(&logits, &targets, 5).unwrap();
    let want = values(&fixture["soft_ce.loss"])[0];
    assert!((loss - want).abs() < 1e-12, "loss {loss} vs timm {want}");
    for (i, (g, w)) in grad
        .iter()
        .zip(values(&fixture["soft_ce.grad"]))
        .enumerate()
    {
        assert!((g - w).abs() < 1e-12, "gradient {i}: {g} vs timm {w}");
    }
    // Shapes that do not fit are refused, not read past.
    assert!(soft_target_cross_entropy(&logits, &targets[..19], 5).is_err());
    assert!(soft_target_cross_entropy(&logits, &targets, 0).is_err());
}
