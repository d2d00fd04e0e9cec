//! The backbone in training mode: batch-norm statistics against a hand computation, gradients
//! against finite differences (f64), and a trained state loading back into the inference network.

use candle_core::{DType, Device, Tensor, Var};
use tresnet::layers::{BatchNormTrain, RunningStats};
use tresnet::{BuildOptions, StochasticDepth, TResNet, TResNetConfig, TrainableTResNet};
use tresnet_tests::{assert_close, lively_state, seeded_uniform};

#[test]
fn batch_norm_uses_batch_statistics_and_updates_running_ones() {
    // Two channels, N=2, H=1, W=2.
    let x = Tensor::new(
        &[
            [[[1.0f64, 2.0]], [[0.0, 4.0]]],
            [[[3.0, 6.0]], [[2.0, 2.0]]],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let weight = Tensor::new(&[2.0f64, 0.5], &Device::Cpu).unwrap();
    let bias = Tensor::new(&[0.1f64, -1.0], &Device::Cpu).unwrap();
    let running = RunningStats {
        mean: Tensor::new(&[0.0f64, 1.0], &Device::Cpu).unwrap(),
        var: Tensor::new(&[1.0f64, 2.0], &Device::Cpu).unwrap(),
        batches: 5,
    };
    let bn = BatchNormTrain::new(weight, bias, running, 0.1);
    let y: Vec<f64> = bn
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    // Channel 0 values 1, 2, 3, 6: mean 3, biased var (4+1+0+9)/4 = 3.5, unbiased 14/3.
    // Channel 1 values 0, 4, 2, 2: mean 2, biased var (4+4+0+0)/4 = 2, unbiased 8/3.
    let n0 = |v: f64| 2.0 * (v - 3.0) / (3.5f64 + 1e-5).sqrt() + 0.1;
    let n1 = |v: f64| 0.5 * (v - 2.0) / (2.0f64 + 1e-5).sqrt() - 1.0;
    let want = [
        n0(1.0),
        n0(2.0),
        n1(0.0),
        n1(4.0),
        n0(3.0),
        n0(6.0),
        n1(2.0),
        n1(2.0),
    ];
    for (a, b) in y.iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    let r = bn.running();
    let mean: Vec<f64> = r.mean.to_vec1().unwrap();
    let var: Vec<f64> = r.var.to_vec1().unwrap();
    assert!(
        (mean[0] - 0.3).abs() < 1e-12 && (mean[1] - (0.9 + 0.2)).abs() < 1e-12,
        "{mean:?}"
    );
    assert!((var[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-12, "{var:?}");
    assert!((var[1] - (1.8 + 0.1 * 8.0 / 3.0)).abs() < 1e-12, "{var:?}");
    assert_eq!(r.batches, 6);
    // Frozen: running statistics are used and kept.
    bn.set_frozen(true);
    let y = bn.forward(&x).unwrap();
    let first = y.flatten_all().unwrap().to_vec1::<f64>().unwrap()[0];
    assert!((first - (2.0 * (1.0 - 0.3) / (var[0] + 1e-5).sqrt() + 0.1)).abs() < 1e-12);
    assert_eq!(bn.running().batches, 6);
}

fn tiny_config() -> TResNetConfig {
    TResNetConfig {
        layers: [1, 1, 1, 1],
        width_factor: 0.125,
        num_classes: 3,
        ..TResNetConfig::variant("tresnet_m").unwrap()
    }
}

#[test]
fn gradients_match_finite_differences_in_f64() {
    let config = tiny_config();
    let state = lively_state(&config, 3, 100);
    let net = TrainableTResNet::new(&config, &state, DType::F64, &Device::Cpu).unwrap();
    let x = seeded_uniform(1, 0.0, 1.0, &[2, 3, 64, 64], DType::F64);
    let probe = seeded_uniform(2, -1.0, 1.0, &[2, 3], DType::F64);
    let objective = |net: &TrainableTResNet| -> Tensor {
        (net.forward(&x).unwrap() * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let grads = objective(&net).backward().unwrap();
    let check = [
        ("body.conv1.conv.weight", 5),
        ("body.layer1.0.conv2.bn.weight", 3),
        ("body.layer2.0.se.fc1.weight", 7),
        ("body.layer3.0.downsample.1.conv.weight", 11),
        ("body.layer4.0.conv3.bn.bias", 2),
        ("head.fc.weight", 4),
    ];
    for (name, index) in check {
        let var: &Var = &net.parameters().iter().find(|(n, _)| n == name).unwrap().1;
        let analytic: f64 = grads
            .get(var)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()[index];
        let original = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let at = |delta: f64| -> f64 {
            let mut v = original.clone();
            v[index] += delta;
            var.set(&Tensor::from_vec(v, var.as_tensor().shape(), &Device::Cpu).unwrap())
                .unwrap();
            objective(&net).to_scalar::<f64>().unwrap()
        };
        // Leaky ReLU has a kink at zero: a step that carries one of the thousands of activations
        // across it biases the central difference. A wrong gradient disagrees at every step size;
        // a kink crossing only at the larger ones, so the smallest disagreement is what counts.
        let relative_error = |h: f64| {
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            let scale = analytic.abs().max(numeric.abs()).max(1e-3);
            ((analytic - numeric).abs() / scale, numeric)
        };
        let (error, numeric) = [1e-5, 1e-6, 1e-7]
            .map(relative_error)
            .into_iter()
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap();
        at(0.0);
        assert!(
            error < 1e-5,
            "{name}[{index}]: analytic {analytic} vs numeric {numeric}"
        );
    }
}

#[test]
fn trained_state_loads_into_the_inference_network() {
    let config = tiny_config();
    let state = lively_state(&config, 3, 100);
    let net = TrainableTResNet::new(&config, &state, DType::F32, &Device::Cpu).unwrap();
    let x = Tensor::rand(0f32, 1.0, (4, 3, 64, 64), &Device::Cpu).unwrap();
    // A few "training" forwards move the running statistics.
    for _ in 0..3 {
        net.forward(&x).unwrap();
    }
    let trained = net.state_dict().unwrap();
    assert_eq!(
        trained
            .vec_f32("body.conv1.bn.num_batches_tracked")
            .unwrap(),
        vec![3.0]
    );
    let inference = TResNet::new(&config, &trained, &BuildOptions::default()).unwrap();
    let logits = inference.forward(&x).unwrap();
    // Same as normalising with the running statistics: freeze the training net's batch norms.
    let names: Vec<String> = vec!["body".into()];
    net.set_frozen(&names, true);
    assert_close(
        &net.forward(&x).unwrap(),
        &logits,
        1e-4,
        1e-4,
        "frozen training net vs folded inference net",
    );
    // The caller's state dict is never modified.
    assert_eq!(
        state
            .get("body.conv1.bn.running_mean")
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
}

#[test]
fn stochastic_depth_drops_whole_samples_and_trains_only_the_branches_it_keeps() {
    let config = tiny_config();
    let state = lively_state(&config, 3, 100);
    let net = TrainableTResNet::new(&config, &state, DType::F64, &Device::Cpu).unwrap();
    let x = seeded_uniform(1, 0.0, 1.0, &[2, 3, 64, 64], DType::F64);
    // Rate 0 drops nothing: the plain training pass, bit for bit.
    let none = StochasticDepth { rate: 0.0, seed: 1 };
    let plain = net.forward(&x).unwrap();
    assert_close(
        &net.forward_with(&x, &none).unwrap(),
        &plain,
        0.0,
        0.0,
        "rate 0",
    );
    // A seed whose draw drops the last block's branch for the first image only.
    let rate = 0.6;
    let seed = (0..10_000u64)
        .find(|&seed| {
            let f = StochasticDepth { rate, seed }
                .block_factor(3, 4, 2, DType::F64, &Device::Cpu)
                .unwrap()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            f[0] == 0.0 && f[1] > 0.0
        })
        .unwrap();
    let depth = StochasticDepth { rate, seed };
    let dropped = net.forward_with(&x, &depth).unwrap();
    assert_close(
        &net.forward_with(&x, &depth).unwrap(),
        &dropped,
        0.0,
        0.0,
        "repeatable",
    );
    let branch: &Var = &net
        .parameters()
        .iter()
        .find(|(n, _)| n == "body.layer4.0.conv1.conv.weight")
        .unwrap()
        .1;
    let gradient_norm = |image: usize| -> f64 {
        let out = net.forward_with(&x, &depth).unwrap();
        let grads = out
            .get(image)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        grads
            .get(branch)
            .map(|g| {
                g.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            })
            .unwrap_or(0.0)
    };
    // The dropped image's output does not depend on the dropped branch at all; the kept one's does.
    assert_eq!(gradient_norm(0), 0.0);
    assert!(gradient_norm(1) > 0.0);
    // Inference is never dropped: the network's own forward is unchanged by training passes.
    assert_close(
        &net.forward(&x).unwrap(),
        &plain,
        1e-12,
        0.0,
        "after dropping",
    );
}
