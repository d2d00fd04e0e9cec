//! Fused element-wise kernels on NCHW f32 for the training graph: batch norm (batch statistics)
//! with its activation, residual add + ReLU, and the squeeze-excite channel gate — each one pass
//! forward, one pass backward, instead of the chains of generic operations (and their
//! intermediate tensors) they replace.

use rayon::prelude::*;

use super::conv::Epilogue;
use super::simd::{map1, map2, sum1, sum2, sums3, zeroed, zeroed_with_spare};

/// Per-channel mean and biased variance of `x (N, C, HW)`: two passes (mean, then squared
/// deviations), f32 lanes within a plane, f64 across planes.
pub fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> (Vec<f32>, Vec<f32>) {
    let count = (n * hw) as f64;
    let plane = |b: usize, ch: usize| &x[(b * c + ch) * hw..][..hw];
    let stats: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let sum: f64 = (0..n).map(|b| sum1(plane(b, ch), move |v| v)).sum();
            let mean = (sum / count) as f32;
            let sq: f64 = (0..n)
                .map(|b| sum1(plane(b, ch), move |v| (v - mean) * (v - mean)))
                .sum();
            (mean, (sq / count) as f32)
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
            act.affine_into(inp, scale, shift, out);
        });
}

/// The slope of an activation where its output is not positive.
fn negative_slope(act: Epilogue) -> f32 {
    match act {
        Epilogue::Identity => 1.0,
        Epilogue::Relu => 0.0,
        Epilogue::LeakyRelu(s) => s,
    }
}

/// Gradients of [`bn_act_forward`] with batch statistics, from `x` and `dy`, packed as
/// `dx ‖ dγ ‖ dβ`: `N·C·HW + 2·C` values. The activation's slope at each element comes from the
/// sign of the pre-activation `γ·x̂ + β`, recomputed exactly as the forward pass computes it.
#[allow(clippy::too_many_arguments)]
pub fn bn_act_backward(
    x: &[f32],
    dy: &[f32],
    mean: &[f32],
    invstd: &[f32],
    gamma: &[f32],
    beta: &[f32],
    act: Epilogue,
    dims: (usize, usize, usize),
) -> Vec<f32> {
    let (n, c, hw) = dims;
    let slope = negative_slope(act);
    let affine = |ch: usize| {
        let scale = gamma[ch] * invstd[ch];
        (scale, beta[ch] - mean[ch] * scale)
    };
    // The gradient before the activation.
    let pre_grad = move |x: f32, g: f32, scale: f32, shift: f32| {
        if x * scale + shift > 0.0 {
            g
        } else {
            g * slope
        }
    };
    // Per channel: dβ = Σ g, dγ = invstd·Σ g·(x − mean).
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut sg, mut sgx) = (0.0f64, 0.0f64);
            let (m, (scale, shift)) = (mean[ch], affine(ch));
            for b in 0..n {
                let at = (b * c + ch) * hw;
                let (x, dy) = (&x[at..][..hw], &dy[at..][..hw]);
                let (g, gx) = activation_gradient_sums(x, dy, scale, shift, slope, m);
                sg += g;
                sgx += gx;
            }
            (sg, sgx * f64::from(invstd[ch]))
        })
        .collect();
    let count = (n * hw) as f32;
    let len = x.len();
    let mut packed = zeroed_with_spare(len, 2 * c);
    // dx = k·(count·g − Σg − x̂·Σg·x̂) with k = γ·invstd/count, as a·g + b·x + d per channel.
    packed
        .par_chunks_mut(hw)
        .enumerate()
        .for_each(|(plane, out)| {
            let ch = plane % c;
            let at = plane * hw;
            let (x, dy) = (&x[at..][..hw], &dy[at..][..hw]);
            let (sg, sgx) = (sums[ch].0 as f32, sums[ch].1 as f32);
            let (scale, shift) = affine(ch);
            let k = gamma[ch] * invstd[ch] / count;
            let a = k * count;
            let b = -k * sgx * invstd[ch];
            let d = -k * (sg - mean[ch] * invstd[ch] * sgx);
            map2(x, dy, out, move |x, dy| {
                a * pre_grad(x, dy, scale, shift) + b * x + d
            });
        });
    packed.extend(sums.iter().map(|s| s.1 as f32));
    packed.extend(sums.iter().map(|s| s.0 as f32));
    packed
}

/// `(Σ g, Σ g·(x − mean))` over one plane, with `g = dy` where `x·scale + shift > 0` and
/// `dy·slope` elsewhere (the gradient before the activation): AVX2 + FMA where the CPU has them
/// (the element-wise closure of [`sums3`] does not vectorise with the select in it), else
/// [`sums3`]. Sums of f32 lanes, returned in f64.
fn activation_gradient_sums(
    x: &[f32],
    dy: &[f32],
    scale: f32,
    shift: f32,
    slope: f32,
    mean: f32,
) -> (f64, f64) {
    assert_eq!(
        x.len(),
        dy.len(),
        "activation gradient sums: lengths differ"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 and FMA (checked just above); the lengths are equal.
        return unsafe { avx2::activation_gradient_sums(x, dy, scale, shift, slope, mean) };
    }
    sums3(x, dy, x, move |x, d, _| {
        let g = gradient_before_activation(x, d, scale, shift, slope);
        (g, g * (x - mean))
    })
}

/// `dy` where the pre-activation `x·scale + shift` (a product, then a sum, as the forward pass
/// computes it) is positive, `dy·slope` elsewhere.
#[inline]
fn gradient_before_activation(x: f32, dy: f32, scale: f32, shift: f32, slope: f32) -> f32 {
    if x * scale + shift > 0.0 {
        dy
    } else {
        dy * slope
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Values per loop step: two registers of 8.
    const STEP: usize = 16;

    /// [`super::activation_gradient_sums`] in AVX2 registers: the pre-activation as the forward
    /// pass computes it (a product, then a sum: no fused multiply-add, so the sign agrees).
    ///
    /// # Safety
    /// AVX2 and FMA present; `x` and `dy` of equal length.
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn activation_gradient_sums(
        x: &[f32],
        dy: &[f32],
        scale: f32,
        shift: f32,
        slope: f32,
        mean: f32,
    ) -> (f64, f64) {
        assert_eq!(x.len(), dy.len());
        let body = x.len() / STEP * STEP;
        let (vscale, vshift) = (_mm256_set1_ps(scale), _mm256_set1_ps(shift));
        let (vslope, vmean, zero) = (
            _mm256_set1_ps(slope),
            _mm256_set1_ps(mean),
            _mm256_setzero_ps(),
        );
        let (mut sg, mut sgx) = ([zero; 2], [zero; 2]);
        for i in (0..body).step_by(STEP) {
            for h in 0..2 {
                // SAFETY: `i + 8h + 8 ≤ body ≤ len` for both slices.
                let (xv, d) = unsafe {
                    (
                        _mm256_loadu_ps(x.as_ptr().add(i + 8 * h)),
                        _mm256_loadu_ps(dy.as_ptr().add(i + 8 * h)),
                    )
                };
                let pre = _mm256_add_ps(_mm256_mul_ps(xv, vscale), vshift);
                let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(pre, zero);
                let g = _mm256_blendv_ps(_mm256_mul_ps(d, vslope), d, positive);
                sg[h] = _mm256_add_ps(sg[h], g);
                sgx[h] = _mm256_fmadd_ps(g, _mm256_sub_ps(xv, vmean), sgx[h]);
            }
        }
        let total = |acc: [__m256; 2]| {
            let mut lanes = [0f32; 8];
            // SAFETY: 8 floats into a plain array.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc[0], acc[1])) };
            lanes.iter().map(|v| f64::from(*v)).sum::<f64>()
        };
        let (mut tail_g, mut tail_gx) = (0f32, 0f32);
        for (&xv, &d) in x[body..].iter().zip(&dy[body..]) {
            let g = super::gradient_before_activation(xv, d, scale, shift, slope);
            tail_g += g;
            tail_gx += g * (xv - mean);
        }
        (
            total(sg) + f64::from(tail_g),
            total(sgx) + f64::from(tail_gx),
        )
    }
}

/// `y = relu(a + b)`.
pub fn add_relu_forward(a: &[f32], b: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(1 << 14)
        .zip(a.par_chunks(1 << 14).zip(b.par_chunks(1 << 14)))
        .for_each(|(o, (a, b))| {
            map2(a, b, o, move |a, b| (a + b).max(0.0));
        });
}

/// The gradient of [`add_relu_forward`] (the same for both inputs): `dy · [y > 0]`.
pub fn relu_mask_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut g = zeroed(y.len());
    g.par_chunks_mut(1 << 14)
        .zip(y.par_chunks(1 << 14).zip(dy.par_chunks(1 << 14)))
        .for_each(|(o, (y, d))| {
            map2(y, d, o, move |y, d| if y > 0.0 { d } else { 0.0 });
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
            map1(x, o, move |v| v * s);
        });
}

/// Gradients of [`channel_scale_forward`], packed as `dx ‖ dgate`: `N·C·HW + N·C` values.
pub fn channel_scale_backward(x: &[f32], gate: &[f32], dy: &[f32], hw: usize) -> Vec<f32> {
    let len = x.len();
    let mut packed = zeroed_with_spare(len, gate.len());
    let dgate: Vec<f32> = packed
        .par_chunks_mut(hw)
        .zip(x.par_chunks(hw).zip(dy.par_chunks(hw)))
        .enumerate()
        .map(|(plane, (o, (x, d)))| {
            let s = gate[plane];
            map1(d, o, move |d| d * s);
            sum2(d, x, move |d, x| d * x) as f32
        })
        .collect();
    packed.extend(dgate);
    packed
}
