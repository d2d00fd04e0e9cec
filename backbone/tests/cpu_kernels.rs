//! The fast CPU kernels against candle's own operations computed in f64: forward values and
//! gradients, on odd sizes, batch 1, single- and multi-image tiles, and non-contiguous inputs.

use candle_core::{DType, Device, Tensor, Var};
use tresnet::Products;
use tresnet::layers::{
    BatchNormTrain, BlurPool, PreparedConvKernel, RunningStats, add_relu, channel_scale, conv2d,
    conv2d_bias_act, conv2d_bias_act_add_relu, space_to_depth,
};
use tresnet::layout::Activation;
use tresnet_tests::assert_close;

fn rand(shape: &[usize]) -> Tensor {
    Tensor::rand(-1f32, 1.0, shape, &Device::Cpu).unwrap()
}

fn f64(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F64).unwrap()
}

/// Relative tolerance of the f32 kernels against f64 references, scaled by the largest value.
fn check(ours: &Tensor, reference: &Tensor, what: &str) {
    check_within(ours, reference, 1e-5, what);
}

/// `|ours − reference| ≤ relative · max |reference|` elementwise.
fn check_within(ours: &Tensor, reference: &Tensor, relative: f64, what: &str) {
    let scale = reference
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .max(1e-6);
    assert_close(ours, reference, relative * scale, 0.0, what);
}

const CONV_CASES: &[(usize, usize, usize, usize, usize, usize)] = &[
    // (batch, in, out, height, width, kernel)
    (1, 3, 4, 5, 7, 3),
    (2, 8, 5, 9, 9, 1),
    (3, 5, 6, 13, 6, 3),
    (1, 16, 8, 40, 33, 3), // several row tiles in one image
    (5, 12, 7, 6, 5, 3),   // several images in one tile
    (4, 9, 3, 7, 3, 1),
    (1, 4, 4, 1, 1, 3), // a single pixel
    // Few tiles and ≥ 128 output channels: the product's rows split across threads, including
    // a last block shorter than the others.
    (1, 24, 200, 7, 7, 3),
    (2, 16, 130, 14, 14, 1),
    (1, 8, 256, 9, 5, 3),
];

#[test]
fn convolution_forward_and_gradients_match_candle() {
    for &(b, i, o, h, w, k) in CONV_CASES {
        let tag = format!("conv b{b} i{i} o{o} {h}x{w} k{k}");
        let x = Var::from_tensor(&rand(&[b, i, h, w])).unwrap();
        let wt = Var::from_tensor(&rand(&[o, i, k, k])).unwrap();
        let probe = rand(&[b, o, h, w]);
        let ours = conv2d(x.as_tensor(), wt.as_tensor(), k / 2, 1).unwrap();
        let x64 = Var::from_tensor(&f64(x.as_tensor())).unwrap();
        let w64 = Var::from_tensor(&f64(wt.as_tensor())).unwrap();
        let reference = x64
            .as_tensor()
            .conv2d(w64.as_tensor(), k / 2, 1, 1, 1)
            .unwrap();
        check(&ours, &reference, &format!("{tag} forward"));
        let g = (ours * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g64 = (reference * f64(&probe))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        check(
            g.get(&x).unwrap(),
            g64.get(&x64).unwrap(),
            &format!("{tag} d/dx"),
        );
        check(
            g.get(&wt).unwrap(),
            g64.get(&w64).unwrap(),
            &format!("{tag} d/dw"),
        );
        // Fused bias + activation.
        let bias = rand(&[o]);
        let fused = conv2d_bias_act(
            x.as_tensor(),
            wt.as_tensor(),
            &bias,
            k / 2,
            Activation::LeakyRelu(0.01),
        )
        .unwrap();
        let pre = (x64
            .as_tensor()
            .conv2d(w64.as_tensor(), k / 2, 1, 1, 1)
            .unwrap()
            .broadcast_add(&f64(&bias).reshape((1, o, 1, 1)).unwrap()))
        .unwrap();
        let expected = pre.maximum(&(&pre * 0.01).unwrap()).unwrap();
        check(&fused, &expected, &format!("{tag} fused bias + leaky relu"));
    }
}

/// `t` rounded to bf16 (nearest even) and widened to f64: the operands the bf16 products see.
fn bf16_rounded(t: &Tensor) -> Tensor {
    t.to_dtype(DType::BF16)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
}

#[test]
#[allow(clippy::print_stderr)] // says why it checked nothing
fn bf16_convolutions_equal_the_rounded_operands_with_bias_and_activation() {
    if !tresnet::native_cpu_bf16() {
        eprintln!("skipped: this CPU has no AVX-512 BF16");
        return;
    }
    let activations = [
        Activation::LeakyRelu(0.01),
        Activation::Relu,
        Activation::Identity,
    ];
    // The cases above plus tiles of several images with a 1×1 kernel, an odd input width that
    // is not a multiple of the 32-column panels, and wide layers split across threads; for AMX
    // also maps whose rows are padded to 16 words with three copies of each plane (widths 27 and
    // 30), more than 32 input channels with a partial block of 16 pairs, and an odd number of
    // 16-channel output blocks.
    let extra = [
        (6, 32, 16, 7, 7, 1),
        (1, 10, 9, 23, 31, 3),
        (3, 64, 256, 14, 14, 3),
        (1, 128, 512, 7, 7, 1),
        (2, 20, 40, 9, 27, 3),
        (1, 70, 48, 15, 30, 3),
        (2, 66, 80, 11, 13, 1),
    ];
    for (n, &(b, i, o, h, w, k)) in CONV_CASES.iter().chain(&extra).enumerate() {
        let activation = activations[n % activations.len()];
        let tag = format!("bf16 conv b{b} i{i} o{o} {h}x{w} k{k} {activation:?}");
        let x = rand(&[b, i, h, w]);
        let kernel = rand(&[o, i, k, k]);
        let bias = rand(&[o]);
        let packed = PreparedConvKernel::bf16(&kernel)
            .unwrap()
            .expect("native bf16");
        let ours = packed
            .conv2d_bias_act(&x, &bias, k / 2, activation)
            .unwrap();
        let pre = bf16_rounded(&x)
            .conv2d(&bf16_rounded(&kernel), k / 2, 1, 1, 1)
            .unwrap()
            .broadcast_add(&f64(&bias).reshape((1, o, 1, 1)).unwrap())
            .unwrap();
        let expected = activated(pre, activation);
        // Exact bf16 products summed in f32: the f32 kernels' tolerance.
        check(&ours, &expected, &tag);
    }
}

#[test]
fn residual_add_and_relu_fused_into_the_convolution_match_f64_on_every_path() {
    // Batch 1 (products split over channels) and several images (a task per image), 1×1 and
    // 3×3, an activation before the add (LeakyReLU) and none.
    let cases = [
        (1, 40, 48, 14, 14, 1, Activation::Identity),
        (3, 24, 40, 9, 11, 3, Activation::LeakyRelu(0.1)),
        (2, 64, 64, 16, 16, 3, Activation::Identity),
    ];
    for (b, i, o, h, w, k, activation) in cases {
        let x = rand(&[b, i, h, w]);
        let kernel = rand(&[o, i, k, k]);
        let bias = rand(&[o]);
        let residual = rand(&[b, o, h, w]);
        // The reference of the products each path makes: exact f64, or of bf16-rounded operands.
        let reference = |x: &Tensor, kernel: &Tensor| {
            let pre = x
                .conv2d(kernel, k / 2, 1, 1, 1)
                .unwrap()
                .broadcast_add(&f64(&bias).reshape((1, o, 1, 1)).unwrap())
                .unwrap();
            (activated(pre, activation) + f64(&residual))
                .unwrap()
                .relu()
                .unwrap()
        };
        let tag = format!("conv + residual b{b} i{i} o{o} {h}x{w} k{k} {activation:?}");
        let plain =
            conv2d_bias_act_add_relu(&x, &kernel, &bias, k / 2, activation, &residual).unwrap();
        check(
            &plain,
            &reference(&f64(&x), &f64(&kernel)),
            &format!("{tag}, f32"),
        );
        if let Some(winograd) = PreparedConvKernel::winograd(&kernel).unwrap() {
            let ours = winograd
                .conv2d_bias_act_add_relu(&x, &bias, k / 2, activation, &residual)
                .unwrap();
            check_within(
                &ours,
                &reference(&f64(&x), &f64(&kernel)),
                3e-5,
                &format!("{tag}, winograd"),
            );
        }
        if let Some(bf16) = PreparedConvKernel::bf16(&kernel).unwrap() {
            let ours = bf16
                .conv2d_bias_act_add_relu(&x, &bias, k / 2, activation, &residual)
                .unwrap();
            let expected = reference(&bf16_rounded(&x), &bf16_rounded(&kernel));
            check(&ours, &expected, &format!("{tag}, bf16"));
        }
    }
}

/// `act(pre)` in f64 for the activations the fused kernels take.
fn activated(pre: Tensor, activation: Activation) -> Tensor {
    match activation {
        Activation::LeakyRelu(s) => pre.maximum(&(&pre * s).unwrap()).unwrap(),
        Activation::Relu => pre.relu().unwrap(),
        _ => pre,
    }
}

#[test]
#[allow(clippy::print_stderr)] // says why it checked nothing
fn winograd_convolutions_match_f64_with_bias_and_activation() {
    if !tresnet::native_cpu_winograd() {
        eprintln!("skipped: this CPU has no AVX-512 (the im2col path serves it)");
        return;
    }
    let activations = [
        Activation::LeakyRelu(0.01),
        Activation::Relu,
        Activation::Identity,
    ];
    // The 3×3 cases above (those under 16 tiles take the im2col path) plus: 48 tiles over 256
    // output channels, odd sizes crossing tile rows, several blocks run in parallel (56×56),
    // exactly 16 tiles (a half-width last panel) and channels that are not multiples of 8.
    let extra = [
        (3, 64, 256, 14, 14),
        (1, 10, 9, 23, 31),
        (2, 48, 64, 56, 56),
        (4, 96, 72, 7, 7),
        (2, 7, 13, 17, 9),
    ];
    let cases = CONV_CASES
        .iter()
        .filter(|c| c.5 == 3)
        .map(|&(b, i, o, h, w, _)| (b, i, o, h, w))
        .chain(extra);
    for (n, (b, i, o, h, w)) in cases.enumerate() {
        let activation = activations[n % activations.len()];
        let tag = format!("winograd conv b{b} i{i} o{o} {h}x{w} {activation:?}");
        let x = rand(&[b, i, h, w]);
        let kernel = rand(&[o, i, 3, 3]);
        let bias = rand(&[o]);
        let prepared = PreparedConvKernel::winograd(&kernel)
            .unwrap()
            .expect("AVX-512 was checked");
        let ours = prepared.conv2d_bias_act(&x, &bias, 1, activation).unwrap();
        // Twice: the transformed kernel is made on the first call and kept.
        let again = prepared.conv2d_bias_act(&x, &bias, 1, activation).unwrap();
        let pre = f64(&x)
            .conv2d(&f64(&kernel), 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&f64(&bias).reshape((1, o, 1, 1)).unwrap())
            .unwrap();
        let expected = activated(pre, activation);
        // Winograd's transforms amplify f32 rounding (their coefficients reach 5 and 8): over
        // 30 runs of these random cases the error reached 0.99e-5 of the largest value (and
        // once 1.01e-5, past the direct kernels' 1e-5). A wrong transform is off by O(1).
        check_within(&ours, &expected, 3e-5, &tag);
        assert_close(&again, &ours, 0.0, 0.0, &format!("{tag}, second call"));
    }
    assert!(
        PreparedConvKernel::winograd(&rand(&[4, 4, 1, 1]))
            .unwrap()
            .is_none(),
        "1×1 kernels have no Winograd form"
    );
}

#[test]
fn non_contiguous_inputs_are_handled() {
    let base = rand(&[2, 6, 9, 8]);
    let x = base.transpose(2, 3).unwrap(); // (2, 6, 8, 9), strided
    assert!(!x.is_contiguous());
    let w = rand(&[4, 6, 3, 3]);
    let ours = conv2d(&x, &w, 1, 1).unwrap();
    let reference = f64(&x).conv2d(&f64(&w), 1, 1, 1, 1).unwrap();
    check(&ours, &reference, "strided conv input");
    let narrowed = rand(&[3, 5, 8, 10]).narrow(3, 1, 7).unwrap();
    let blurred = BlurPool.forward(&narrowed).unwrap();
    let blurred64 = BlurPool.forward(&f64(&narrowed)).unwrap();
    check(&blurred, &blurred64, "strided blur input");
}

/// The blur written out from its definition, in f64: `(P, H, W)` planes.
fn blur_reference(x: &[f64], planes: usize, h: usize, w: usize) -> Vec<f64> {
    let r = |i: isize, n: usize| -> usize {
        if i < 0 {
            1
        } else if i as usize >= n {
            n - 2
        } else {
            i as usize
        }
    };
    let taps = [0.25, 0.5, 0.25];
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let mut out = vec![0.0; planes * ho * wo];
    for p in 0..planes {
        for y in 0..ho {
            for xo in 0..wo {
                let mut acc = 0.0;
                for (dy, ty) in taps.iter().enumerate() {
                    for (dx, tx) in taps.iter().enumerate() {
                        let sy = r(2 * y as isize + dy as isize - 1, h);
                        let sx = r(2 * xo as isize + dx as isize - 1, w);
                        acc += ty * tx * x[(p * h + sy) * w + sx];
                    }
                }
                out[(p * ho + y) * wo + xo] = acc;
            }
        }
    }
    out
}

#[test]
fn blur_matches_its_definition_on_both_paths_with_consistent_gradients() {
    for shape in [
        [1usize, 1, 2, 2],
        [2, 3, 7, 5],
        [1, 4, 16, 16],
        [3, 2, 9, 12],
    ] {
        let x = rand(&shape);
        let planes = shape[0] * shape[1];
        let want = blur_reference(
            &f64(&x).flatten_all().unwrap().to_vec1().unwrap(),
            planes,
            shape[2],
            shape[3],
        );
        let want = Tensor::from_vec(
            want,
            (
                shape[0],
                shape[1],
                shape[2].div_ceil(2),
                shape[3].div_ceil(2),
            ),
            &Device::Cpu,
        )
        .unwrap();
        check(
            &BlurPool.forward(&x).unwrap(),
            &want,
            &format!("blur {shape:?} CPU kernel"),
        );
        check(
            &BlurPool.forward(&f64(&x)).unwrap(),
            &want,
            &format!("blur {shape:?} tensor path"),
        );
    }
}

#[test]
fn blur_gradient_of_the_kernel_equals_autograd_of_the_tensor_path() {
    for shape in [
        [1usize, 1, 2, 2],
        [2, 3, 7, 5],
        [1, 4, 16, 16],
        [3, 2, 9, 12],
    ] {
        let tag = format!("blur {shape:?}");
        let x = Var::from_tensor(&rand(&shape)).unwrap();
        let x64 = Var::from_tensor(&f64(x.as_tensor())).unwrap();
        let ours = BlurPool.forward(x.as_tensor()).unwrap();
        let reference = BlurPool.forward(x64.as_tensor()).unwrap();
        check(&ours, &reference, &format!("{tag} forward"));
        let probe = rand(ours.dims());
        let g = (ours * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g64 = (reference * f64(&probe))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        check(
            g.get(&x).unwrap(),
            g64.get(&x64).unwrap(),
            &format!("{tag} d/dx"),
        );
    }
}

/// Inputs `rand + offset` whose normalised values `γ·x̂ + β` (in f64) all lie at least 1e-5 from
/// zero, where ReLU's slope jumps: an f32 value on the other side of zero than the f64 reference
/// would change that element's gradient by its whole probe (and the batch statistics' gradient
/// with it), a coincidence of about one run in a few hundred. Drawn again until none is that
/// close (rarely more than once).
fn away_from_the_kink(shape: &[usize; 4], offset: f64, gamma: &Var, beta: &Var) -> Tensor {
    let c = shape[1];
    let per_channel = |t: &Var| f64(t.as_tensor()).reshape((1, c, 1, 1)).unwrap();
    let over_batch_and_plane = |t: &Tensor| {
        let by_channel = t.mean_keepdim(0).unwrap().mean_keepdim(2).unwrap();
        by_channel.mean_keepdim(3).unwrap()
    };
    loop {
        let x = (rand(shape) + offset).unwrap();
        let x64 = f64(&x);
        let centred = x64.broadcast_sub(&over_batch_and_plane(&x64)).unwrap();
        let var = over_batch_and_plane(&centred.sqr().unwrap());
        let z = centred
            .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&per_channel(gamma))
            .unwrap()
            .broadcast_add(&per_channel(beta))
            .unwrap();
        let closest = z
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .min(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        if closest > 1e-5 {
            return x;
        }
    }
}

fn batch_norm(c: usize, dtype: DType) -> (BatchNormTrain, Var, Var) {
    let gamma = Var::from_tensor(
        &Tensor::rand(0.5f32, 1.5, c, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
    )
    .unwrap();
    let beta = Var::from_tensor(&(rand(&[c]) * 0.1).unwrap().to_dtype(dtype).unwrap()).unwrap();
    let running = RunningStats {
        mean: Tensor::zeros(c, dtype, &Device::Cpu).unwrap(),
        var: Tensor::ones(c, dtype, &Device::Cpu).unwrap(),
        batches: 0,
    };
    (
        BatchNormTrain::new(
            gamma.as_tensor().clone(),
            beta.as_tensor().clone(),
            running,
            0.1,
        ),
        gamma,
        beta,
    )
}

#[test]
fn fused_batch_norm_activation_matches_candle() {
    for (shape, act, offset) in [
        ([4usize, 3, 5, 7], Activation::LeakyRelu(1e-3), 0.0),
        ([1, 5, 6, 6], Activation::Identity, 0.0),
        ([2, 8, 3, 1], Activation::Relu, 0.0),
        // Planes of whole vector chunks plus a remainder, and a mean far from zero (the
        // variance is taken around the mean, not as E[x²] − E[x]²).
        ([2, 3, 37, 41], Activation::LeakyRelu(0.01), 3.0),
        ([3, 2, 16, 16], Activation::Relu, -2.0),
    ] {
        let tag = format!("bn {shape:?} {act:?} offset {offset}");
        let (bn, gamma, beta) = batch_norm(shape[1], DType::F32);
        let x32 = away_from_the_kink(&shape, offset, &gamma, &beta);
        let x = Var::from_tensor(&x32).unwrap();
        let ours = bn.forward_act(x.as_tensor(), act).unwrap();
        let (bn64, gamma64, beta64) = batch_norm(shape[1], DType::F64);
        gamma64.set(&f64(gamma.as_tensor())).unwrap();
        beta64.set(&f64(beta.as_tensor())).unwrap();
        let x64 = Var::from_tensor(&f64(&x32)).unwrap();
        // The f64 path is candle's composite of mean/var/normalise/activation.
        let reference = bn64.forward_act(x64.as_tensor(), act).unwrap();
        check(&ours, &reference, &format!("{tag} forward"));
        let probe = rand(&shape);
        let g = (ours * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g64 = (reference * f64(&probe))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        check(
            g.get(&x).unwrap(),
            g64.get(&x64).unwrap(),
            &format!("{tag} d/dx"),
        );
        check(
            g.get(&gamma).unwrap(),
            g64.get(&gamma64).unwrap(),
            &format!("{tag} d/dgamma"),
        );
        check(
            g.get(&beta).unwrap(),
            g64.get(&beta64).unwrap(),
            &format!("{tag} d/dbeta"),
        );
        check(
            &bn.running().var,
            &bn64.running().var,
            &format!("{tag} running variance"),
        );
        check(
            &bn.running().mean,
            &bn64.running().mean,
            &format!("{tag} running mean"),
        );
    }
}

#[test]
fn fused_convolution_batch_norm_activation_matches_candle() {
    for (b, i, o, h, w, k, act) in [
        (
            2usize,
            5usize,
            7usize,
            9usize,
            11usize,
            3usize,
            Activation::LeakyRelu(1e-3),
        ),
        (1, 6, 4, 16, 16, 1, Activation::Relu),
        (3, 4, 6, 20, 19, 3, Activation::Identity),
    ] {
        let tag = format!("conv-bn-act b{b} i{i} o{o} {h}x{w} k{k} {act:?}");
        let x = Var::from_tensor(&rand(&[b, i, h, w])).unwrap();
        let wt = Var::from_tensor(&rand(&[o, i, k, k])).unwrap();
        let (bn, gamma, beta) = batch_norm(o, DType::F32);
        let ours = bn
            .conv_forward_act(x.as_tensor(), wt.as_tensor(), k / 2, act, Products::F32)
            .unwrap();
        let (bn64, gamma64, beta64) = batch_norm(o, DType::F64);
        gamma64.set(&f64(gamma.as_tensor())).unwrap();
        beta64.set(&f64(beta.as_tensor())).unwrap();
        let x64 = Var::from_tensor(&f64(x.as_tensor())).unwrap();
        let w64 = Var::from_tensor(&f64(wt.as_tensor())).unwrap();
        // f64 takes candle's convolution and candle's composite batch norm.
        let reference = bn64
            .conv_forward_act(x64.as_tensor(), w64.as_tensor(), k / 2, act, Products::F32)
            .unwrap();
        check(&ours, &reference, &format!("{tag} forward"));
        let probe = rand(&[b, o, h, w]);
        let g = (ours * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g64 = (reference * f64(&probe))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (what, a, r) in [
            ("d/dx", g.get(&x), g64.get(&x64)),
            ("d/dw", g.get(&wt), g64.get(&w64)),
            ("d/dgamma", g.get(&gamma), g64.get(&gamma64)),
            ("d/dbeta", g.get(&beta), g64.get(&beta64)),
        ] {
            check(a.unwrap(), r.unwrap(), &format!("{tag} {what}"));
        }
        check(
            &bn.running().mean,
            &bn64.running().mean,
            &format!("{tag} running mean"),
        );
        check(
            &bn.running().var,
            &bn64.running().var,
            &format!("{tag} running variance"),
        );
    }
}

#[test]
fn add_relu_and_channel_scale_match_candle() {
    let shape = [3usize, 4, 5, 6];
    let (a, b) = (
        Var::from_tensor(&rand(&shape)).unwrap(),
        Var::from_tensor(&rand(&shape)).unwrap(),
    );
    let (a64, b64) = (
        Var::from_tensor(&f64(a.as_tensor())).unwrap(),
        Var::from_tensor(&f64(b.as_tensor())).unwrap(),
    );
    let probe = rand(&shape);
    let ours = add_relu(a.as_tensor(), b.as_tensor()).unwrap();
    let reference = add_relu(a64.as_tensor(), b64.as_tensor()).unwrap();
    check(&ours, &reference, "add-relu forward");
    let g = (ours * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g64 = (reference * f64(&probe))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    check(g.get(&a).unwrap(), g64.get(&a64).unwrap(), "add-relu d/da");
    check(g.get(&b).unwrap(), g64.get(&b64).unwrap(), "add-relu d/db");

    let gate = Var::from_tensor(&rand(&[3, 4])).unwrap();
    let gate64 = Var::from_tensor(&f64(gate.as_tensor())).unwrap();
    let ours = channel_scale(a.as_tensor(), gate.as_tensor()).unwrap();
    let reference = channel_scale(a64.as_tensor(), gate64.as_tensor()).unwrap();
    check(&ours, &reference, "channel scale forward");
    let g = (ours * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g64 = (reference * f64(&probe))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    check(
        g.get(&a).unwrap(),
        g64.get(&a64).unwrap(),
        "channel scale d/dx",
    );
    check(
        g.get(&gate).unwrap(),
        g64.get(&gate64).unwrap(),
        "channel scale d/dgate",
    );
}

#[test]
fn space_to_depth_kernel_equals_the_tensor_rearrangement() {
    for shape in [[2usize, 3, 8, 12], [1, 5, 4, 4], [3, 2, 16, 8]] {
        let x = Var::from_tensor(&rand(&shape)).unwrap();
        let ours = space_to_depth(x.as_tensor()).unwrap();
        // f64 takes the reshape/permute path: a permutation, so the values must be identical.
        let x64 = Var::from_tensor(&f64(x.as_tensor())).unwrap();
        let reference = space_to_depth(x64.as_tensor()).unwrap();
        assert_eq!(ours.dims(), reference.dims());
        assert_close(
            &ours,
            &reference,
            0.0,
            0.0,
            &format!("space-to-depth {shape:?}"),
        );
        let probe = rand(ours.dims());
        let g = (ours * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g64 = (reference * f64(&probe))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_close(
            g.get(&x).unwrap(),
            g64.get(&x64).unwrap(),
            0.0,
            0.0,
            &format!("space-to-depth {shape:?} gradient"),
        );
    }
}

/// Largest difference relative to the reference's largest value.
fn max_relative_difference(a: &Tensor, reference: &Tensor) -> f64 {
    let scalar = |t: Tensor| t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
    let diff = scalar(
        (f64(a) - f64(reference))
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap(),
    );
    diff / scalar(reference.abs().unwrap().max_all().unwrap()).max(1e-30)
}

#[test]
#[allow(clippy::print_stderr)]
fn fused_convolution_batch_norm_activation_with_bf16_products_follows_f32() {
    if !tresnet::native_cpu_bf16() {
        eprintln!("skipped: this CPU has no AVX-512 BF16");
        return;
    }
    // Maps below Winograd's minimum, so both kernel sizes multiply in bf16.
    for (b, i, o, h, w, k) in [
        (1usize, 40usize, 24usize, 7usize, 9usize, 3usize),
        (2, 64, 40, 10, 6, 1),
    ] {
        let tag = format!("bf16 conv-bn-act b{b} i{i} o{o} {h}x{w} k{k}");
        let act = Activation::LeakyRelu(1e-2);
        let x = Var::from_tensor(&rand(&[b, i, h, w])).unwrap();
        let wt = Var::from_tensor(&rand(&[o, i, k, k])).unwrap();
        let probe = rand(&[b, o, h, w]);
        let scale = Tensor::rand(0.5f32, 1.5, o, &Device::Cpu).unwrap();
        let shift = (rand(&[o]) * 0.1).unwrap();
        // Output and the gradients by x, w and γ of `Σ y · probe`.
        let run = |products: Products| {
            let (bn, gamma, beta) = batch_norm(o, DType::F32);
            gamma.set(&scale).unwrap();
            beta.set(&shift).unwrap();
            let y = bn
                .conv_forward_act(x.as_tensor(), wt.as_tensor(), k / 2, act, products)
                .unwrap();
            let g = (&y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let grads = [g.get(&x), g.get(&wt), g.get(&gamma)].map(|t| t.unwrap().clone());
            (y, grads)
        };
        let (y32, g32) = run(Products::F32);
        let (y16, g16) = run(Products::Bf16);
        // The f64 network on the bf16-rounded operands: the forward pass is exactly its (bf16
        // products summed in f32, within the f32 kernels' tolerance); the gradients round their
        // operands once more (both multiply the rounded output gradient, the weight gradient
        // also the rounded input), so they agree to bf16's precision.
        let x64 = Var::from_tensor(&bf16_rounded(x.as_tensor())).unwrap();
        let w64 = Var::from_tensor(&bf16_rounded(wt.as_tensor())).unwrap();
        let (bn64, gamma64, beta64) = batch_norm(o, DType::F64);
        gamma64.set(&f64(&scale)).unwrap();
        beta64.set(&f64(&shift)).unwrap();
        let exact = bn64
            .conv_forward_act(x64.as_tensor(), w64.as_tensor(), k / 2, act, Products::F32)
            .unwrap();
        check(&y16, &exact, &format!("{tag} forward"));
        let moved = max_relative_difference(&y16, &y32);
        assert!(
            moved > 1e-5,
            "{tag} forward: {moved:.2e} from f32, no bf16 rounding at all"
        );
        let g = (&exact * f64(&probe))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let want = [g.get(&x64), g.get(&w64), g.get(&gamma64)].map(|t| t.unwrap().clone());
        for ((what, got), want) in ["d/dx", "d/dw", "d/dgamma"].iter().zip(&g16).zip(&want) {
            let e = max_relative_difference(got, want);
            eprintln!("{tag} {what}: {e:.2e} from the rounded f64 network");
            assert!(
                e < 5e-3,
                "{tag} {what}: {e:.2e} from the rounded f64 network"
            );
        }
        for (what, i) in [("d/dx", 0), ("d/dw", 1)] {
            let moved = max_relative_difference(&g16[i], &g32[i]);
            assert!(
                moved > 1e-5,
                "{tag} {what}: {moved:.2e} from f32, no bf16 rounding at all"
            );
        }
    }
}
