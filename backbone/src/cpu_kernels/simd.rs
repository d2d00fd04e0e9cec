//! Element-wise loops over f32 slices, compiled twice — for the baseline x86-64 target and for
//! AVX2 + FMA — with the wide version chosen at run time when the CPU has it (the machines this
//! runs on change; the release build targets plain x86-64). Callers pass the per-element
//! function; the loops walk whole chunks of [`LANES`] values so that the compiler turns each
//! chunk into vector instructions.
//!
//! Reductions keep [`LANES`] f32 partial sums and return their total in f64: callers reduce one
//! image plane (≤ a few thousand values) per call and add the planes in f64.

/// Values per chunk: two AVX2 registers, four SSE ones.
pub const LANES: usize = 16;

/// Runs `$body` compiled with AVX2 + FMA when the CPU has both, else compiled for the baseline.
macro_rules! dispatch {
    ($body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                #[target_feature(enable = "avx2,fma")]
                fn wide<R>(f: impl FnOnce() -> R) -> R {
                    f()
                }
                // SAFETY: the CPU supports the enabled features (checked just above).
                #[allow(unsafe_code)]
                return unsafe { wide(move || $body) };
            }
        }
        $body
    }};
}

/// `len` zeros, written in parallel: the fill of a fresh output buffer is a full pass over memory
/// that would otherwise run on the calling thread alone while the pool waits.
pub fn zeroed(len: usize) -> Vec<f32> {
    zeroed_with_spare(len, 0)
}

/// [`zeroed`] with room for `spare` more values (pushed later without reallocating).
pub fn zeroed_with_spare(len: usize, spare: usize) -> Vec<f32> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
    let mut v: Vec<f32> = Vec::with_capacity(len + spare);
    if len < 4 * CHUNK {
        v.resize(len, 0.0);
        return v;
    }
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(CHUNK)
        .for_each(|c| c.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: the chunks cover `0..len` and every element was written above.
    #[allow(unsafe_code)]
    unsafe {
        v.set_len(len)
    };
    v
}

/// `out[i] = f(a[i])`.
pub fn map1(a: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32 + Copy) {
    dispatch!(map1_body(a, out, f))
}

#[inline(always)]
fn map1_body(a: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32 + Copy) {
    assert_eq!(a.len(), out.len(), "map1: slice lengths differ");
    let mut ca = a.chunks_exact(LANES);
    let mut co = out.chunks_exact_mut(LANES);
    for (o, a) in (&mut co).zip(&mut ca) {
        // Through local arrays: the compiler cannot otherwise rule out that `o` overlaps `a`.
        let a = chunk(a);
        o.copy_from_slice(&std::array::from_fn::<f32, LANES, _>(|l| f(a[l])));
    }
    for (o, a) in co.into_remainder().iter_mut().zip(ca.remainder()) {
        *o = f(*a);
    }
}

/// `x[i] = f(x[i])`.
pub fn map_in_place(x: &mut [f32], f: impl Fn(f32) -> f32 + Copy) {
    dispatch!(map_in_place_body(x, f))
}

#[inline(always)]
fn map_in_place_body(x: &mut [f32], f: impl Fn(f32) -> f32 + Copy) {
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        let v = chunk(c);
        c.copy_from_slice(&std::array::from_fn::<f32, LANES, _>(|l| f(v[l])));
    }
    for v in chunks.into_remainder() {
        *v = f(*v);
    }
}

/// `out[i] = f(a[i], b[i])`.
pub fn map2(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(f32, f32) -> f32 + Copy) {
    dispatch!(map3_body(a, b, b, out, move |a, b, _| f(a, b)))
}

#[inline(always)]
fn map3_body(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    out: &mut [f32],
    f: impl Fn(f32, f32, f32) -> f32 + Copy,
) {
    let n = out.len();
    assert!(
        a.len() == n && b.len() == n && c.len() == n,
        "map3: slice lengths differ"
    );
    let (mut ca, mut cb, mut cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let mut co = out.chunks_exact_mut(LANES);
    for (((o, a), b), c) in (&mut co).zip(&mut ca).zip(&mut cb).zip(&mut cc) {
        let (a, b, c) = (chunk(a), chunk(b), chunk(c));
        o.copy_from_slice(&std::array::from_fn::<f32, LANES, _>(|l| {
            f(a[l], b[l], c[l])
        }));
    }
    for (((o, a), b), c) in co
        .into_remainder()
        .iter_mut()
        .zip(ca.remainder())
        .zip(cb.remainder())
        .zip(cc.remainder())
    {
        *o = f(*a, *b, *c);
    }
}

/// `Σ f(a[i])`.
pub fn sum1(a: &[f32], f: impl Fn(f32) -> f32 + Copy) -> f64 {
    dispatch!(sums_body(a, a, a, move |a, _, _| (f(a), 0.0)).0)
}

/// `Σ f(a[i], b[i])`.
pub fn sum2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Copy) -> f64 {
    dispatch!(sums_body(a, b, b, move |a, b, _| (f(a, b), 0.0)).0)
}

/// Two sums in one pass: `(Σ f(a[i], b[i], c[i]).0, Σ f(a[i], b[i], c[i]).1)`.
pub fn sums3(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    f: impl Fn(f32, f32, f32) -> (f32, f32) + Copy,
) -> (f64, f64) {
    dispatch!(sums_body(a, b, c, f))
}

/// A whole chunk as an array (a copy in registers).
#[inline(always)]
fn chunk(c: &[f32]) -> [f32; LANES] {
    let mut a = [0.0f32; LANES];
    a.copy_from_slice(c);
    a
}

#[inline(always)]
fn sums_body(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    f: impl Fn(f32, f32, f32) -> (f32, f32) + Copy,
) -> (f64, f64) {
    let n = a.len();
    assert!(b.len() == n && c.len() == n, "sums: slice lengths differ");
    let (mut acc0, mut acc1) = ([0.0f32; LANES], [0.0f32; LANES]);
    let (ca, cb, cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let (mut t0, mut t1) = (0.0f32, 0.0f32);
    for ((a, b), c) in ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .zip(cc.remainder())
    {
        let (u, v) = f(*a, *b, *c);
        t0 += u;
        t1 += v;
    }
    for ((a, b), c) in ca.zip(cb).zip(cc) {
        let (a, b, c) = (chunk(a), chunk(b), chunk(c));
        // One array per sum (f is pure and inlined: the compiler evaluates it once per lane);
        // writing the pair through a tuple kept the loop scalar.
        let u: [f32; LANES] = std::array::from_fn(|l| f(a[l], b[l], c[l]).0);
        let v: [f32; LANES] = std::array::from_fn(|l| f(a[l], b[l], c[l]).1);
        for l in 0..LANES {
            acc0[l] += u[l];
            acc1[l] += v[l];
        }
    }
    let total = |acc: [f32; LANES], tail: f32| {
        acc.iter().map(|v| f64::from(*v)).sum::<f64>() + f64::from(tail)
    };
    (total(acc0, t0), total(acc1, t1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn zeroed_buffers_are_zero_at_every_size() {
        for n in [0, 5, (1 << 18) - 1, 1 << 18, (1 << 18) + 77, 3 << 19] {
            let v = zeroed_with_spare(n, 3);
            assert_eq!(v.len(), n);
            assert!(v.capacity() >= n + 3);
            assert!(v.iter().all(|x| *x == 0.0), "n={n}");
        }
    }

    #[test]
    fn maps_and_sums_equal_plain_loops_on_every_length() {
        for n in [0, 1, 15, 16, 17, 100, 1031] {
            let (a, b, c) = (data(n, 1), data(n, 2), data(n, 3));
            let mut out = vec![0.0; n];
            map2(&a, &b, &mut out, |a, b| (a + b).max(0.0));
            for i in 0..n {
                assert_eq!(out[i], (a[i] + b[i]).max(0.0), "map2 n={n} i={i}");
            }
            map1(&a, &mut out, |v| v * 2.0);
            let mut twice = a.clone();
            map_in_place(&mut twice, |v| v * 2.0);
            assert_eq!(out, twice, "map1 / map_in_place n={n}");
            let exact: f64 = a.iter().zip(&b).map(|(a, b)| f64::from(a * b)).sum();
            let (s, t) = sums3(&a, &b, &c, |a, b, c| (a * b, c));
            assert!((s - exact).abs() < 1e-4, "sums3 n={n}: {s} vs {exact}");
            assert!((sum2(&a, &b, |a, b| a * b) - exact).abs() < 1e-4);
            let exact_c: f64 = c.iter().map(|v| f64::from(*v)).sum();
            assert!((t - exact_c).abs() < 1e-4);
            assert!((sum1(&c, |v| v) - exact_c).abs() < 1e-4);
        }
    }
}
