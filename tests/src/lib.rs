//! Test support shared by the workspace's tests: fixture paths, fixture tensors, tolerance checks,
//! crafted hostile files and seeded tensors. (The crate's own `tests/` holds the CUDA-vs-CPU parity
//! test, which spans the backbone and the heads.)

pub mod crafted_files;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use tresnet::weights::StateDict;

/// Path of a file under `tests/fixtures/`, or under `$TRESNET_FIXTURES` where that is set (a
/// test binary carried to another machine, where the source tree sits elsewhere).
pub fn fixture_path(name: &str) -> PathBuf {
    std::env::var_os("TRESNET_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures"))
        .join(name)
}

/// Every tensor of a fixture safetensors file, on the CPU.
pub fn load_fixture(name: &str) -> HashMap<String, Tensor> {
    let path = fixture_path(name);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// The `state.<timm key>` tensors of a tiny-network fixture, prefix removed.
pub fn fixture_state_dict(tensors: &HashMap<String, Tensor>) -> StateDict {
    tensors
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("state.").map(|k| (k.to_string(), v.clone())))
        .collect()
}

/// A fixture's `config.json` text.
pub fn fixture_text(name: &str) -> String {
    let path = fixture_path(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// Largest absolute difference between two tensors of the same shape (compared in f64).
pub fn max_abs_diff(actual: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(actual.dims(), expected.dims(), "shape mismatch");
    let a = actual.to_dtype(DType::F64).unwrap();
    let e = expected.to_dtype(DType::F64).unwrap();
    (a - e)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Asserts `|actual - expected| <= atol + rtol * |expected|` element-wise, reporting the worst
/// element; returns the largest absolute difference.
pub fn assert_close(actual: &Tensor, expected: &Tensor, atol: f64, rtol: f64, what: &str) -> f64 {
    assert_eq!(
        actual.dims(),
        expected.dims(),
        "{what}: shape {:?} differs from the reference {:?}",
        actual.dims(),
        expected.dims()
    );
    let a: Vec<f64> = actual
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let e: Vec<f64> = expected
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut worst = (0usize, 0.0f64, f64::NEG_INFINITY);
    let mut max_abs = 0.0f64;
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        let diff = (x - y).abs();
        assert!(
            diff.is_finite(),
            "{what}: non-finite value at {i}: {x} vs {y}"
        );
        max_abs = max_abs.max(diff);
        let excess = diff - (atol + rtol * y.abs());
        if excess > worst.2 {
            worst = (i, diff, excess);
        }
    }
    assert!(
        worst.2 <= 0.0,
        "{what}: element {} differs by {:e} (actual {}, reference {}); tolerance atol {atol:e} + \
         rtol {rtol:e}",
        worst.0,
        worst.1,
        a[worst.0],
        e[worst.0]
    );
    max_abs
}

/// A reproducible tensor of `shape` with elements uniform in `[low, high)` (SplitMix64 stream
/// from `seed`), so tests that depend on where activations fall behave the same on every machine.
pub fn seeded_uniform(seed: u64, low: f64, high: f64, shape: &[usize], dtype: DType) -> Tensor {
    let mut state = seed;
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
            low + (high - low) * unit
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .unwrap()
}

/// Random timm-initialised weights for `config` (from `seed`) with every batch norm's γ drawn
/// uniform in `[0.5, 1.5)` (stream `gamma_seed + i` for the i-th), so no residual branch starts
/// zeroed as timm's init leaves it and every gradient is non-trivial.
pub fn lively_state(config: &tresnet::TResNetConfig, seed: u64, gamma_seed: u64) -> StateDict {
    let layout = tresnet::Layout::new(config).unwrap();
    let mut state = tresnet::weights::random_state_dict(&layout, seed).unwrap();
    let keys: Vec<String> = state
        .keys()
        .filter(|k| k.ends_with("bn.weight"))
        .map(str::to_string)
        .collect();
    for (i, k) in keys.into_iter().enumerate() {
        let n = state.get(&k).unwrap().elem_count();
        state.insert(
            k,
            seeded_uniform(gamma_seed + i as u64, 0.5, 1.5, &[n], DType::F32),
        );
    }
    state
}
