//! Fused element-wise kernels on NCHW f32 for the training graph: batch norm (batch statistics)
//! with its activation, residual add + ReLU, and the squeeze-excite channel gate — each one pass
//! forward, one pass backward, instead of the chains of generic operations (and their
//! intermediate tensors) they replace.

use rayon::prelude::*;

use super::conv::Epilogue;

/// Per-channel mean and biased variance of `x (N, C, HW)`, accumulated in f64.
pub fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> (Vec<f32>, Vec<f32>) {
    let stats: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let count = (n * hw) as f64;
            let mut sum = 0.0f64;
            for b in 0..n {
                sum += x[(b * c + ch) * hw..(b * c + ch + 1) * hw]
                    .iter()
                    .map(|v| f64::from(*v))
                    .sum::<f64>();
            }
            let mean = sum / count;
            let mut sq = 0.0f64;
            for b in 0..n {
                sq += x[(b * c + ch) * hw..(b * c + ch + 1) * hw]
                    .iter()
                    .map(|v| (f64::from(*v) - mean).powi(2))
                    .sum::<f64>();
            }
            (mean as f32, (sq / count) as f32)
        })
        .collect();
    stats.into_iter().unzip()
}

/// `y = act(γ·(x − mean)·invstd + β)` per channel.
#[allow(clippy::too_many_arguments)]
pub fn bn_act_forward(
    x: &[f32],
    mean: &[f32],
    invstd: &[f32],
    gamma: &[f32],
    beta: &[f32],
    act: Epilogue,
    dims: (usize, usize, usize),
    y: &mut [f32],
) {
    let (_, c, hw) = dims;
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(plane, (out, inp))| {
            let ch = plane % c;
            let scale = gamma[ch] * invstd[ch];
            let shift = beta[ch] - mean[ch] * scale;
            for (o, v) in out.iter_mut().zip(inp) {
                *o = act.apply(v * scale + shift);
            }
        });
}

/// Gradients of [`bn_act_forward`] with batch statistics: `(dx, dγ, dβ)` from `dy` and the
/// forward output `y` (the activation's slope is read off the sign of `y`).
#[allow(clippy::too_many_arguments)]
pub fn bn_act_backward(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    mean: &[f32],
    invstd: &[f32],
    gamma: &[f32],
    act: Epilogue,
    dims: (usize, usize, usize),
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, c, hw) = dims;
    let slope = match act {
        Epilogue::Identity => 1.0,
        Epilogue::Relu => 0.0,
        Epilogue::LeakyRelu(s) => s,
    };
    let pre_grad = |yv: f32, g: f32| if yv > 0.0 { g } else { g * slope };
    // Per channel: dβ = Σ g, dγ = Σ g·x̂ (g = gradient before the activation).
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut sg, mut sgx) = (0.0f64, 0.0f64);
            for b in 0..n {
                let at = (b * c + ch) * hw;
                for i in at..at + hw {
                    let g = f64::from(pre_grad(y[i], dy[i]));
                    sg += g;
                    sgx += g * f64::from((x[i] - mean[ch]) * invstd[ch]);
                }
            }
            (sg, sgx)
        })
        .collect();
    let count = (n * hw) as f32;
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(hw).enumerate().for_each(|(plane, out)| {
        let ch = plane % c;
        let at = plane * hw;
        let (sg, sgx) = (sums[ch].0 as f32, sums[ch].1 as f32);
        let k = gamma[ch] * invstd[ch] / count;
        for (j, o) in out.iter_mut().enumerate() {
            let i = at + j;
            let xhat = (x[i] - mean[ch]) * invstd[ch];
            *o = k * (count * pre_grad(y[i], dy[i]) - sg - xhat * sgx);
        }
    });
    let dgamma = sums.iter().map(|s| s.1 as f32).collect();
    let dbeta = sums.iter().map(|s| s.0 as f32).collect();
    (dx, dgamma, dbeta)
}

/// `y = relu(a + b)`.
pub fn add_relu_forward(a: &[f32], b: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(1 << 14)
        .zip(a.par_chunks(1 << 14).zip(b.par_chunks(1 << 14)))
        .for_each(|(o, (a, b))| {
            for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                *o = (a + b).max(0.0);
            }
        });
}

/// The gradient of [`add_relu_forward`] (the same for both inputs): `dy · [y > 0]`.
pub fn relu_mask_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut g = vec![0.0f32; y.len()];
    g.par_chunks_mut(1 << 14)
        .zip(y.par_chunks(1 << 14).zip(dy.par_chunks(1 << 14)))
        .for_each(|(o, (y, d))| {
            for ((o, y), d) in o.iter_mut().zip(y).zip(d) {
                *o = if *y > 0.0 { *d } else { 0.0 };
            }
        });
    g
}

/// `y[n, c, :] = x[n, c, :] · gate[n, c]`.
pub fn channel_scale_forward(x: &[f32], gate: &[f32], hw: usize, y: &mut [f32]) {
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(plane, (o, x))| {
            let s = gate[plane];
            for (o, v) in o.iter_mut().zip(x) {
                *o = v * s;
            }
        });
}

/// Gradients of [`channel_scale_forward`]: `(dx, dgate)`.
pub fn channel_scale_backward(
    x: &[f32],
    gate: &[f32],
    dy: &[f32],
    hw: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0f32; x.len()];
    let dgate: Vec<f32> = dx
        .par_chunks_mut(hw)
        .zip(x.par_chunks(hw).zip(dy.par_chunks(hw)))
        .enumerate()
        .map(|(plane, (o, (x, d)))| {
            let s = gate[plane];
            let mut acc = 0.0f64;
            for ((o, x), d) in o.iter_mut().zip(x).zip(d) {
                *o = d * s;
                acc += f64::from(d * x);
            }
            acc as f32
        })
        .collect();
    (dx, dgate)
}
