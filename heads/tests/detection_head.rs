//! The FCOS detection head: losses against hand computations and finite differences, NMS
//! against a brute-force definition, targets → outputs → decoded boxes round trips, and the
//! whole head on a TResNet backbone.

use candle_core::{DType, Device, Tensor, Var};
use tresnet::{BuildOptions, TResNet, TResNetConfig};
use tresnet_heads::detection::{
    BoxXyxy, DetectionHead, DetectorConfig, FcosOutput, GroundTruthBox, LevelOutput, LevelShape,
    assign_fcos_targets, box_iou, class_wise_nms, decode_detections, fcos_loss, focal_loss_term,
    generalized_iou, giou_loss_ltrb, nms, pyramid_channels, random_detector_state,
};
use tresnet_tests::seeded_uniform;

#[test]
fn focal_loss_matches_hand_values_and_its_derivative() {
    // x = 0: p = 1/2, (1−p)^2 = 1/4.
    let (pos, _) = focal_loss_term(0.0, true, 0.25, 2.0);
    assert!((pos - 0.25 * 0.25 * std::f64::consts::LN_2).abs() < 1e-15);
    let (neg, _) = focal_loss_term(0.0, false, 0.25, 2.0);
    assert!((neg - 0.75 * 0.25 * std::f64::consts::LN_2).abs() < 1e-15);
    // γ = 0, α = 1/2 is half the binary cross-entropy.
    let (l, _) = focal_loss_term(1.3, true, 0.5, 0.0);
    assert!((l - 0.5 * (1.0 + (-1.3f64).exp()).ln()).abs() < 1e-15);
    for x in [-30.0, -4.0, -0.7, 0.0, 0.3, 2.5, 30.0] {
        for positive in [true, false] {
            let h = 1e-6;
            let numeric = (focal_loss_term(x + h, positive, 0.25, 2.0).0
                - focal_loss_term(x - h, positive, 0.25, 2.0).0)
                / (2.0 * h);
            let (_, analytic) = focal_loss_term(x, positive, 0.25, 2.0);
            assert!(
                (numeric - analytic).abs() < 1e-8,
                "x {x} positive {positive}: {analytic} vs {numeric}"
            );
        }
    }
}

#[test]
fn giou_loss_matches_the_hand_computation_and_box_geometry() {
    // Location at the origin; prediction [-1,-1,1,1], target [-2,-2,0,0]: intersection 1,
    // union 7, hull 9.
    let pred = Tensor::new(&[[1f32, 1.0, 1.0, 1.0]], &Device::Cpu).unwrap();
    let target = Tensor::new(&[[2f32, 2.0, 0.0, 0.0]], &Device::Cpu).unwrap();
    let loss: Vec<f32> = giou_loss_ltrb(&pred, &target).unwrap().to_vec1().unwrap();
    let want = 1.0 - (1.0 / 7.0 - 2.0 / 9.0);
    assert!((loss[0] - want).abs() < 1e-6, "{} vs {want}", loss[0]);
    let a: BoxXyxy = [-1.0, -1.0, 1.0, 1.0];
    let b: BoxXyxy = [-2.0, -2.0, 0.0, 0.0];
    assert!((1.0 - generalized_iou(&a, &b) - want).abs() < 1e-6);
    // Gradient by candle against central differences, in f64.
    let p = seeded_uniform(5, 0.5, 4.0, &[6, 4], DType::F64);
    let t = seeded_uniform(6, 0.5, 4.0, &[6, 4], DType::F64);
    let var = Var::from_tensor(&p).unwrap();
    let grads = giou_loss_ltrb(var.as_tensor(), &t)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g: Vec<f64> = grads
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let base: Vec<f64> = p.flatten_all().unwrap().to_vec1().unwrap();
    let value = |v: &[f64]| -> f64 {
        let x = Tensor::from_slice(v, (6, 4), &Device::Cpu).unwrap();
        giou_loss_ltrb(&x, &t)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    for i in 0..24 {
        let h = 1e-6;
        let (mut up, mut down) = (base.clone(), base.clone());
        up[i] += h;
        down[i] -= h;
        let numeric = (value(&up) - value(&down)) / (2.0 * h);
        assert!((numeric - g[i]).abs() < 1e-6, "[{i}] {} vs {numeric}", g[i]);
    }
}

/// Box `i` survives greedy NMS iff no surviving box ranked above it overlaps it by more than
/// the threshold: checked by walking the ranking.
fn brute_force_nms(boxes: &[BoxXyxy], scores: &[f32], threshold: f32) -> Vec<usize> {
    let mut ranked: Vec<usize> = (0..boxes.len()).collect();
    ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept: Vec<usize> = Vec::new();
    for &i in &ranked {
        if kept
            .iter()
            .all(|&j| box_iou(&boxes[i], &boxes[j]) <= threshold)
        {
            kept.push(i);
        }
    }
    kept
}

#[test]
fn nms_agrees_with_the_brute_force_definition_on_random_boxes() {
    for seed in 0..20u64 {
        let n = 60;
        let raw: Vec<f64> = seeded_uniform(seed, 0.0, 1.0, &[n, 5], DType::F64)
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let boxes: Vec<BoxXyxy> = raw
            .chunks(5)
            .map(|r| {
                let (x, y) = (r[0] as f32 * 80.0, r[1] as f32 * 80.0);
                let (w, h) = (5.0 + r[2] as f32 * 30.0, 5.0 + r[3] as f32 * 30.0);
                [x, y, x + w, y + h]
            })
            .collect();
        let scores: Vec<f32> = raw.chunks(5).map(|r| r[4] as f32).collect();
        for threshold in [0.0, 0.3, 0.5, 0.7] {
            assert_eq!(
                nms(&boxes, &scores, threshold),
                brute_force_nms(&boxes, &scores, threshold),
                "seed {seed} threshold {threshold}"
            );
        }
        // Class-wise: the union of per-class NMS, sorted by score.
        let classes: Vec<usize> = (0..n).map(|i| i % 3).collect();
        let mut want: Vec<usize> = Vec::new();
        for c in 0..3 {
            let members: Vec<usize> = (0..n).filter(|&i| classes[i] == c).collect();
            let b: Vec<BoxXyxy> = members.iter().map(|&i| boxes[i]).collect();
            let s: Vec<f32> = members.iter().map(|&i| scores[i]).collect();
            want.extend(brute_force_nms(&b, &s, 0.5).into_iter().map(|k| members[k]));
        }
        want.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        assert_eq!(class_wise_nms(&boxes, &scores, &classes, 0.5), want);
    }
}

/// Head outputs that say exactly what the targets say: logit ±8 for the assigned class,
/// distances equal to the targets, centerness logits of the target centerness.
fn outputs_from_targets(levels: &[LevelShape], objects: &[GroundTruthBox], k: usize) -> FcosOutput {
    let config = DetectorConfig::small(k, 8, 1);
    let t = assign_fcos_targets(levels, &config.size_ranges, 1.5, objects);
    let mut offset = 0;
    let mut out = Vec::new();
    for &shape in levels {
        let hw = shape.len();
        let mut cls = vec![-8f32; k * hw];
        let mut ltrb = vec![1f32; 4 * hw];
        let mut ctr = vec![-8f32; hw];
        for loc in 0..hw {
            if let Some(c) = t.classes[offset + loc] {
                cls[c * hw + loc] = 8.0;
                for j in 0..4 {
                    ltrb[j * hw + loc] = t.ltrb[offset + loc][j];
                }
                let q = t.centerness[offset + loc].clamp(1e-4, 1.0 - 1e-4);
                ctr[loc] = (q / (1.0 - q)).ln();
            }
        }
        let tensor = |v: Vec<f32>, c: usize| {
            Tensor::from_vec(v, (1, c, shape.height, shape.width), &Device::Cpu).unwrap()
        };
        out.push(LevelOutput {
            shape,
            class_logits: tensor(cls, k),
            ltrb: tensor(ltrb, 4),
            centerness_logits: tensor(ctr, 1),
        });
        offset += hw;
    }
    FcosOutput { levels: out }
}

#[test]
fn targets_encode_and_decode_back_to_the_boxes() {
    let levels = [
        LevelShape {
            height: 12,
            width: 16,
            stride: 8,
        },
        LevelShape {
            height: 6,
            width: 8,
            stride: 16,
        },
        LevelShape {
            height: 3,
            width: 4,
            stride: 32,
        },
    ];
    let objects = [
        GroundTruthBox {
            class: 1,
            bbox: [10.0, 12.0, 34.0, 30.0],
        },
        GroundTruthBox {
            class: 0,
            bbox: [60.0, 20.0, 120.0, 90.0],
        },
        GroundTruthBox {
            class: 2,
            bbox: [4.0, 50.0, 30.5, 95.25],
        },
    ];
    let output = outputs_from_targets(&levels, &objects, 3);
    let config = DetectorConfig {
        nms_iou: 0.5,
        ..DetectorConfig::small(3, 8, 1)
    };
    let found = &decode_detections(&output, &config, (128, 96)).unwrap()[0];
    assert_eq!(found.len(), objects.len(), "{found:?}");
    for object in &objects {
        let hit = found
            .iter()
            .find(|d| d.class == object.class)
            .expect("every class found");
        for j in 0..4 {
            assert!(
                (hit.bbox[j] - object.bbox[j]).abs() < 1e-4,
                "{:?} vs {:?}",
                hit.bbox,
                object.bbox
            );
        }
        // sqrt(p · centerness) of the best location: p ≈ 1, centerness well above 0.
        assert!(hit.score > 0.5, "{}", hit.score);
    }
    // And the loss of these outputs against the same targets is small: the classification
    // term only (distances exact, centerness at its entropy).
    let t = assign_fcos_targets(&levels, &config.size_ranges, 1.5, &objects);
    let loss = fcos_loss(&output, &[t], 0.25, 2.0).unwrap();
    assert!(loss.box_regression < 1e-5, "{}", loss.box_regression);
    assert!(loss.classification < 1e-3, "{}", loss.classification);
}

#[test]
fn the_head_runs_on_a_tresnet_and_every_parameter_gets_a_gradient() {
    let backbone_config = TResNetConfig {
        layers: [1, 1, 1, 1],
        width_factor: 0.125,
        num_classes: 0,
        ..TResNetConfig::variant("tresnet_m").unwrap()
    };
    let backbone = TResNet::random(&backbone_config, 1, &BuildOptions::default()).unwrap();
    let channels = pyramid_channels(&backbone.feature_info()).unwrap();
    for extra in [false, true] {
        let config = DetectorConfig {
            extra_levels: extra,
            size_ranges: if extra {
                vec![
                    [0.0, 16.0],
                    [16.0, 32.0],
                    [32.0, 64.0],
                    [64.0, 128.0],
                    [128.0, f32::INFINITY],
                ]
            } else {
                vec![[0.0, 32.0], [32.0, 64.0], [64.0, f32::INFINITY]]
            },
            ..DetectorConfig::small(4, 16, 2)
        };
        let state = random_detector_state(&config, channels, 7).unwrap();
        let vars: Vec<(String, Var)> = state
            .iter()
            .map(|(k, v)| (k.to_string(), Var::from_tensor(v).unwrap()))
            .collect();
        let mut live = tresnet::weights::StateDict::new();
        for (k, v) in &vars {
            live.insert(k.clone(), v.as_tensor().clone());
        }
        let head = DetectionHead::load(&config, channels, &live, DType::F32, &Device::Cpu).unwrap();
        // 96×128 input: levels 12×16, 6×8, 3×4 (+ 2×2, 1×1).
        let x = seeded_uniform(3, 0.0, 1.0, &[2, 3, 96, 128], DType::F32);
        let out = head
            .forward(&backbone.forward_features(&x).unwrap())
            .unwrap();
        let shapes: Vec<(usize, usize, usize)> = out
            .level_shapes()
            .iter()
            .map(|s| (s.height, s.width, s.stride))
            .collect();
        let mut want = vec![(12, 16, 8), (6, 8, 16), (3, 4, 32)];
        if extra {
            want.extend([(2, 2, 64), (1, 1, 128)]);
        }
        assert_eq!(shapes, want);
        let objects = [GroundTruthBox {
            class: 3,
            bbox: [10.0, 10.0, 60.0, 50.0],
        }];
        let t = assign_fcos_targets(&out.level_shapes(), &config.size_ranges, 1.5, &objects);
        assert!(t.num_positive() > 0);
        let empty = assign_fcos_targets(&out.level_shapes(), &config.size_ranges, 1.5, &[]);
        let loss = fcos_loss(&out, &[t, empty], 0.25, 2.0).unwrap();
        assert!(loss.classification > 0.0 && loss.box_regression > 0.0 && loss.centerness > 0.0);
        let grads = loss.total.backward().unwrap();
        for (name, var) in &vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(norm.is_finite(), "{name}");
        }
        // A mis-sized weight is named.
        let mut wrong = state.clone();
        wrong.insert(
            "fcos.cls_logits.weight",
            Tensor::zeros((5, 16, 3, 3), DType::F32, &Device::Cpu).unwrap(),
        );
        let err = DetectionHead::load(&config, channels, &wrong, DType::F32, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fcos.cls_logits.weight"), "{err}");
    }
}
