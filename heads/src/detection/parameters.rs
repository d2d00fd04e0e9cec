//! The detector's parameters: their names and shapes, a seeded initialisation as FCOS does it,
//! and a checked lookup that names the offending key.

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tresnet::weights::StateDict;

use super::config::DetectorConfig;
use crate::error::{HeadsError, Result};

/// How a parameter starts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Init {
    /// Normal with this standard deviation.
    Normal(f32),
    /// Every element this value.
    Constant(f32),
}

/// One parameter of the detector.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterSpec {
    /// Its name in the state dict (`fpn.…`, `fcos.…`).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    init: Init,
}

fn conv(name: &str, out: usize, inp: usize, k: usize, std: f32, bias: f32) -> [ParameterSpec; 2] {
    [
        ParameterSpec {
            name: format!("{name}.weight"),
            shape: vec![out, inp, k, k],
            init: Init::Normal(std),
        },
        ParameterSpec {
            name: format!("{name}.bias"),
            shape: vec![out],
            init: Init::Constant(bias),
        },
    ]
}

/// Every parameter of an FPN + FCOS head over backbone maps with `in_channels` (strides 8, 16, 32).
pub fn detector_parameters(config: &DetectorConfig, in_channels: [usize; 3]) -> Vec<ParameterSpec> {
    let f = config.fpn_channels;
    let mut specs = Vec::new();
    for (i, &c) in in_channels.iter().enumerate() {
        // Kaiming-like scale for the FPN convs (they feed GroupNorm-free sums).
        specs.extend(conv(
            &format!("fpn.lateral.{i}"),
            f,
            c,
            1,
            (1.0 / c as f32).sqrt(),
            0.0,
        ));
        specs.extend(conv(
            &format!("fpn.output.{i}"),
            f,
            f,
            3,
            (1.0 / (9 * f) as f32).sqrt(),
            0.0,
        ));
    }
    if config.extra_levels {
        let std = (1.0 / (9 * f) as f32).sqrt();
        specs.extend(conv("fpn.p6", f, f, 3, std, 0.0));
        specs.extend(conv("fpn.p7", f, f, 3, std, 0.0));
    }
    for tower in ["cls_tower", "bbox_tower"] {
        for j in 0..config.tower_convs {
            specs.extend(conv(&format!("fcos.{tower}.{j}.conv"), f, f, 3, 0.01, 0.0));
            specs.push(ParameterSpec {
                name: format!("fcos.{tower}.{j}.norm.weight"),
                shape: vec![f],
                init: Init::Constant(1.0),
            });
            specs.push(ParameterSpec {
                name: format!("fcos.{tower}.{j}.norm.bias"),
                shape: vec![f],
                init: Init::Constant(0.0),
            });
        }
    }
    let prior = config.prior_probability;
    let prior_bias = -((1.0 - prior) / prior).ln() as f32;
    specs.extend(conv(
        "fcos.cls_logits",
        config.num_classes,
        f,
        3,
        0.01,
        prior_bias,
    ));
    specs.extend(conv("fcos.bbox_pred", 4, f, 3, 0.01, 0.0));
    specs.extend(conv("fcos.centerness", 1, f, 3, 0.01, 0.0));
    specs.push(ParameterSpec {
        name: "fcos.scales".into(),
        shape: vec![config.strides().len()],
        init: Init::Constant(1.0),
    });
    specs
}

/// Freshly initialised detector parameters (seeded; CPU, f32): normal(0, 0.01) head convs, the
/// classification bias at the prior probability, unit GroupNorm and level scales.
pub fn random_detector_state(
    config: &DetectorConfig,
    in_channels: [usize; 3],
    seed: u64,
) -> Result<StateDict> {
    config.validate()?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut state = StateDict::new();
    for spec in detector_parameters(config, in_channels) {
        let n: usize = spec.shape.iter().product();
        let values: Vec<f32> = match spec.init {
            Init::Constant(v) => vec![v; n],
            Init::Normal(std) => (0..n)
                .map(|_| {
                    // Box–Muller.
                    let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
                    let u2: f32 = rng.random();
                    std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
                })
                .collect(),
        };
        state.insert(
            spec.name,
            Tensor::from_vec(values, spec.shape.as_slice(), &Device::Cpu)?,
        );
    }
    Ok(state)
}

/// Checks that `state` holds exactly the detector's parameters with their shapes, naming the
/// first missing, unexpected or misshapen key.
pub fn check_detector_state(
    config: &DetectorConfig,
    in_channels: [usize; 3],
    state: &StateDict,
) -> Result<()> {
    let specs = detector_parameters(config, in_channels);
    for spec in &specs {
        let t = state.get(&spec.name).ok_or_else(|| {
            HeadsError::Invalid(format!("detector weights: missing {}", spec.name))
        })?;
        if t.dims() != spec.shape.as_slice() {
            return Err(HeadsError::Invalid(format!(
                "detector weights: {} has shape {:?}, expected {:?}",
                spec.name,
                t.dims(),
                spec.shape
            )));
        }
    }
    if let Some(extra) = state.keys().find(|k| !specs.iter().any(|s| s.name == *k)) {
        return Err(HeadsError::Invalid(format!(
            "detector weights: unexpected key {extra}"
        )));
    }
    Ok(())
}

/// The tensor named `name`, in `dtype` on `device`.
pub(crate) fn fetch(
    state: &StateDict,
    name: &str,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let t = state
        .get(name)
        .ok_or_else(|| HeadsError::Invalid(format!("detector weights: missing {name}")))?;
    if t.dtype() == dtype && t.device().same_device(device) {
        Ok(t.clone())
    } else {
        Ok(t.to_device(device)?.to_dtype(dtype)?)
    }
}
