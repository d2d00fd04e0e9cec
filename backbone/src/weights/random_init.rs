//! Seeded random weights with timm's TResNet initialisation (for benchmarks and training from
//! scratch).

use std::collections::HashSet;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal, Uniform};

use super::StateDict;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::manifest::{EntryKind, Manifest};

/// A state dict initialised as timm's `TResNet.__init__` does (TRESNET_SPEC §1.4):
/// - convolutions (SE convs included): Kaiming normal, fan-out mode, gain √2;
/// - SE conv biases and the classifier bias: PyTorch's default `U(-1/√fan_in, 1/√fan_in)`;
/// - batch norms: weight 1, bias 0, running mean 0, running variance 1 — except the last batch
///   norm of every residual block, whose weight is 0 so each block starts as the identity;
/// - classifier weight: `N(0, 0.01)`.
///
/// The same seed gives the same tensors.
pub fn random_state_dict(layout: &Layout, seed: u64) -> Result<StateDict> {
    let mut rng = StdRng::seed_from_u64(seed);
    let zero_gamma: HashSet<String> = layout
        .stages
        .iter()
        .flat_map(|s| &s.blocks)
        .filter_map(|b| b.convs.last())
        .map(|c| format!("{}.bn.weight", c.prefix))
        .collect();
    let manifest = Manifest::of(layout);
    let mut state = StateDict::new();
    for entry in &manifest.entries {
        let shape = entry.shape.as_slice();
        let n = entry.numel();
        let key = entry.key.as_str();
        let tensor = if entry.kind == EntryKind::BatchCounter {
            Tensor::zeros(shape, DType::I64, &Device::Cpu)?
        } else if key.ends_with(".weight") && shape.len() == 4 {
            let fan_out = (shape[0] * shape[2] * shape[3]) as f32;
            normal(&mut rng, n, (2.0 / fan_out).sqrt(), shape)?
        } else if key.ends_with(".weight") && shape.len() == 2 {
            normal(&mut rng, n, 0.01, shape)?
        } else if key.starts_with("head.") || key.contains(".se.") {
            // Biases of the classifier and of the SE convs: bound 1/sqrt(fan_in).
            let fan_in = manifest
                .get(&key.replace(".bias", ".weight"))
                .map(|w| w.shape[1..].iter().product::<usize>())
                .unwrap_or(1) as f32;
            uniform(&mut rng, n, 1.0 / fan_in.sqrt(), shape)?
        } else if key.ends_with("bn.weight") {
            let value = if zero_gamma.contains(key) { 0.0 } else { 1.0 };
            Tensor::full(value, shape, &Device::Cpu)?
        } else if key.ends_with("running_var") {
            Tensor::ones(shape, DType::F32, &Device::Cpu)?
        } else {
            Tensor::zeros(shape, DType::F32, &Device::Cpu)?
        };
        state.insert(key, tensor);
    }
    Ok(state)
}

/// `n` samples of `N(0, std)` as a CPU f32 tensor of `shape`.
pub(crate) fn normal(rng: &mut StdRng, n: usize, std: f32, shape: &[usize]) -> Result<Tensor> {
    let dist = Normal::new(0.0f32, std).map_err(|e| Error::Config(e.to_string()))?;
    let values: Vec<f32> = (0..n).map(|_| dist.sample(rng)).collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// `n` samples of `U(-bound, bound)` as a CPU f32 tensor of `shape`.
pub(crate) fn uniform(rng: &mut StdRng, n: usize, bound: f32, shape: &[usize]) -> Result<Tensor> {
    let dist = Uniform::new_inclusive(-bound, bound).map_err(|e| Error::Config(e.to_string()))?;
    let values: Vec<f32> = (0..n).map(|_| dist.sample(rng)).collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}
