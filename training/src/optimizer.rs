//! SGD with momentum and AdamW, with decay and no-decay parameter groups and a state that can be
//! saved and restored exactly (for resuming runs).

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};
use tresnet::weights::StateDict;

use tresnet::ops::{SgdSettings, sgd_applies, sgd_step_in_place};

/// The update rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerKind {
    /// PyTorch's SGD: `buf = μ·buf + g (+ wd·p)`, `p −= lr·buf` (Nesterov: `g + μ·buf`).
    Sgd {
        /// Momentum μ.
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// PyTorch's AdamW (decoupled weight decay, bias-corrected moments).
    AdamW {
        /// β₁.
        beta1: f64,
        /// β₂.
        beta2: f64,
        /// ε.
        eps: f64,
    },
}

impl OptimizerKind {
    /// AdamW with PyTorch's defaults (0.9, 0.999, 1e-8).
    pub fn adamw() -> Self {
        Self::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// SGD with momentum 0.9, Nesterov.
    pub fn sgd() -> Self {
        Self::Sgd {
            momentum: 0.9,
            nesterov: true,
        }
    }
}

/// Whether timm's rule exempts a parameter from weight decay: biases and every 1-D tensor
/// (batch-norm scales and shifts).
pub fn exempt_from_decay(name: &str, var: &Var) -> bool {
    name.ends_with(".bias") || var.as_tensor().rank() <= 1
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    /// This parameter's share of the learning rate (layer-wise decay; 1 otherwise).
    lr_scale: f64,
    /// Momentum buffer (SGD) or first moment (AdamW).
    first: Option<Tensor>,
    /// Second moment (AdamW).
    second: Option<Tensor>,
}

/// An optimiser over named variables.
pub struct Optimizer {
    kind: OptimizerKind,
    weight_decay: f64,
    slots: Vec<Slot>,
    steps: u64,
}

impl Optimizer {
    /// An optimiser over `params`; `weight_decay` applies to all but [`exempt_from_decay`] ones.
    pub fn new(kind: OptimizerKind, weight_decay: f64, params: &[(String, Var)]) -> Self {
        let slots = params
            .iter()
            .map(|(name, var)| Slot {
                name: name.clone(),
                var: var.clone(),
                decay: !exempt_from_decay(name, var),
                lr_scale: 1.0,
                first: None,
                second: None,
            })
            .collect();
        Self {
            kind,
            weight_decay,
            slots,
            steps: 0,
        }
    }

    /// Scales each parameter's learning rate by `scales[name]` (parameters not named keep
    /// the full rate): layer-wise decay ([`crate::layer_decay_scales`]).
    pub fn with_lr_scales(mut self, scales: &HashMap<String, f64>) -> Self {
        for slot in &mut self.slots {
            slot.lr_scale = scales.get(&slot.name).copied().unwrap_or(1.0);
        }
        self
    }

    /// Number of updates applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Applies one update with learning rate `lr` (times each parameter's scale) from `grads`;
    /// parameters named in `frozen` (by prefix) and those without a gradient are left
    /// unchanged.
    pub fn step(
        &mut self,
        grads: &HashMap<String, Tensor>,
        lr: f64,
        frozen: &[String],
    ) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        for slot in &mut self.slots {
            if frozen.iter().any(|p| slot.name.starts_with(p.as_str())) {
                continue;
            }
            let Some(grad) = grads.get(&slot.name) else {
                continue;
            };
            let lr = lr * slot.lr_scale;
            // Detached: a gradient computed by backprop still records the ops that made it, and
            // a moment buffer built from it would keep every step's graph (all activations)
            // alive — memory grew by a whole step's activations per step before this.
            let grad = &grad.detach();
            let p = &slot.var.as_tensor().detach();
            let wd = if slot.decay { self.weight_decay } else { 0.0 };
            if let OptimizerKind::Sgd { momentum, nesterov } = self.kind {
                let param = slot.var.as_tensor();
                if sgd_applies(&[param, grad]) {
                    // The buffer is updated in place: only a tensor this optimiser owns (see
                    // `state` and `load_state`, which copy) may be reused.
                    let buf = match &slot.first {
                        Some(b) if sgd_applies(&[param, b]) => b.clone(),
                        _ => param.zeros_like()?,
                    };
                    let settings = SgdSettings {
                        momentum: momentum as f32,
                        nesterov,
                        weight_decay: wd as f32,
                        lr: lr as f32,
                    };
                    sgd_step_in_place(param, grad, &buf, settings)?;
                    slot.first = Some(buf);
                    continue;
                }
            }
            let updated = match self.kind {
                OptimizerKind::Sgd { momentum, nesterov } => {
                    let g = if wd > 0.0 {
                        (grad + (p * wd)?)?
                    } else {
                        grad.clone()
                    };
                    let buf = match &slot.first {
                        Some(b) if momentum > 0.0 => ((b * momentum)? + &g)?,
                        _ => g.clone(),
                    };
                    let direction = if nesterov && momentum > 0.0 {
                        (&g + (&buf * momentum)?)?
                    } else {
                        buf.clone()
                    };
                    slot.first = Some(buf);
                    (p - (direction * lr)?)?
                }
                OptimizerKind::AdamW { beta1, beta2, eps } => {
                    let decayed = if wd > 0.0 {
                        (p * (1.0 - lr * wd))?
                    } else {
                        p.clone()
                    };
                    let m = match &slot.first {
                        Some(m) => ((m * beta1)? + (grad * (1.0 - beta1))?)?,
                        None => (grad * (1.0 - beta1))?,
                    };
                    let v = match &slot.second {
                        Some(v) => ((v * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?,
                        None => (grad.sqr()? * (1.0 - beta2))?,
                    };
                    let m_hat = (&m / (1.0 - beta1.powi(t)))?;
                    let v_hat = (&v / (1.0 - beta2.powi(t)))?;
                    let update = (m_hat / (v_hat.sqrt()? + eps)?)?;
                    slot.first = Some(m);
                    slot.second = Some(v);
                    (decayed - (update * lr)?)?
                }
            };
            slot.var.set(&updated)?;
        }
        Ok(())
    }

    /// The optimiser's buffers as tensors (`first.<param>`, `second.<param>`) on the CPU.
    pub fn state(&self) -> Result<StateDict> {
        let mut state = StateDict::new();
        for slot in &self.slots {
            for (kind, t) in [("first", &slot.first), ("second", &slot.second)] {
                if let Some(t) = t {
                    state.insert(
                        format!("{kind}.{}", slot.name),
                        // A copy: the live buffers change in place at the next step.
                        t.to_device(&candle_core::Device::Cpu)?.copy()?,
                    );
                }
            }
        }
        state.insert(
            "steps",
            Tensor::new(self.steps as i64, &candle_core::Device::Cpu)?,
        );
        Ok(state)
    }

    /// Restores buffers saved by [`Optimizer::state`].
    pub fn load_state(&mut self, state: &StateDict) -> Result<()> {
        let steps = state
            .get("steps")
            .context("optimizer state has no `steps`")?;
        self.steps = steps.to_dtype(DType::I64)?.to_scalar::<i64>()? as u64;
        for slot in &mut self.slots {
            let device = slot.var.as_tensor().device().clone();
            let dtype = slot.var.as_tensor().dtype();
            let load = |kind: &str| -> Result<Option<Tensor>> {
                state
                    .get(&format!("{kind}.{}", slot.name))
                    .map(|t| -> Result<Tensor> {
                        if t.dims() != slot.var.as_tensor().dims() {
                            bail!("optimizer state for {} has shape {:?}", slot.name, t.dims());
                        }
                        // A copy the optimiser owns (its buffers change in place).
                        Ok(t.to_dtype(dtype)?.to_device(&device)?.copy()?)
                    })
                    .transpose()
            };
            slot.first = load("first")?;
            slot.second = load("second")?;
        }
        Ok(())
    }
}

/// Gradients of named variables, looked up in a backward pass's store, detached (plain values:
/// holding one must not keep the backward graph alive).
pub fn named_gradients(params: &[(String, Var)], grads: &GradStore) -> HashMap<String, Tensor> {
    params
        .iter()
        .filter_map(|(name, var)| grads.get(var).map(|g| (name.clone(), g.detach())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn gradients_and_moment_buffers_hold_no_graph() {
        // d(Σ w²)/dw = 2w is computed from the variable itself, so candle records its ops; a
        // buffer that kept them would keep every step's graph alive.
        let w = Var::new(&[1.0f32, -2.0, 0.5], &Device::Cpu).unwrap();
        let params = vec![("w.weight".to_string(), w.clone())];
        for kind in [OptimizerKind::sgd(), OptimizerKind::adamw()] {
            let mut opt = Optimizer::new(kind, 0.01, &params);
            for _ in 0..3 {
                let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
                let store = loss.backward().unwrap();
                assert!(
                    store.get(&w).unwrap().track_op(),
                    "the raw gradient records ops"
                );
                let grads = named_gradients(&params, &store);
                assert!(grads.values().all(|g| !g.track_op()));
                opt.step(&grads, 0.1, &[]).unwrap();
            }
            let state = opt.state().unwrap();
            assert!(state.len() > 1);
            for (name, t) in state.iter() {
                assert!(!t.track_op(), "{name} keeps a graph");
            }
        }
    }

    fn run(kind: OptimizerKind, wd: f64) -> Vec<f32> {
        let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let params = vec![("w.weight".to_string(), w.clone())];
        let mut opt = Optimizer::new(kind, wd, &params);
        for _ in 0..3 {
            // loss = sum(w²): gradient 2w.
            let grads = HashMap::from([("w.weight".to_string(), (w.as_tensor() * 2.0).unwrap())]);
            opt.step(&grads, 0.1, &[]).unwrap();
        }
        w.as_tensor().to_vec1().unwrap()
    }

    #[test]
    fn sgd_matches_a_hand_computation() {
        // Plain momentum 0.9, no Nesterov: b1 = g0; p1 = p0 − 0.1·b1 …
        let (mut p, mut b) = (1.0f64, 0.0f64);
        for i in 0..3 {
            let g = 2.0 * p;
            b = if i == 0 { g } else { 0.9 * b + g };
            p -= 0.1 * b;
        }
        let got = run(
            OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: false,
            },
            0.0,
        );
        assert!((f64::from(got[0]) - p).abs() < 1e-6, "{got:?} vs {p}");
    }

    #[test]
    fn in_place_sgd_equals_the_tensor_chain() {
        // f32 on the CPU takes the in-place kernel; f64 takes the candle chain. 40 000 values
        // span several parallel chunks.
        let n = 40_000;
        let init: Vec<f64> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f64 / 250.0 - 2.0)
            .collect();
        for (momentum, nesterov, wd) in [(0.9, false, 0.0), (0.9, true, 1e-2), (0.0, false, 1e-2)] {
            let kind = OptimizerKind::Sgd { momentum, nesterov };
            let run = |dtype: DType| -> Vec<f64> {
                let t = Tensor::new(init.as_slice(), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let w = Var::from_tensor(&t).unwrap();
                let params = vec![("w.weight".to_string(), w.clone())];
                let mut opt = Optimizer::new(kind, wd, &params);
                for step in 0..4 {
                    // A gradient that is not just a multiple of w: 2w + 0.3·step.
                    let g = ((w.as_tensor() * 2.0).unwrap() + 0.3 * step as f64).unwrap();
                    let grads = HashMap::from([("w.weight".to_string(), g)]);
                    opt.step(&grads, 0.05, &[]).unwrap();
                    if step == 1 {
                        // A save and restore in the middle continues identically.
                        let state = opt.state().unwrap();
                        opt = Optimizer::new(kind, wd, &params);
                        opt.load_state(&state).unwrap();
                    }
                }
                w.as_tensor()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            let (fast, chain) = (run(DType::F32), run(DType::F64));
            for (i, (a, b)) in fast.iter().zip(&chain).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "momentum {momentum} nesterov {nesterov} wd {wd}: [{i}] {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn adamw_matches_a_hand_computation() {
        let (mut p, mut m, mut v) = (1.0f64, 0.0f64, 0.0f64);
        for t in 1..=3 {
            let g = 2.0 * p;
            p *= 1.0 - 0.1 * 0.01;
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            let (mh, vh) = (m / (1.0 - 0.9f64.powi(t)), v / (1.0 - 0.999f64.powi(t)));
            p -= 0.1 * mh / (vh.sqrt() + 1e-8);
        }
        // 1-D tensors are exempt from decay: use a 2-D parameter to see it.
        let w = Var::new(&[[1.0f32]], &Device::Cpu).unwrap();
        let params = vec![("w.weight".to_string(), w.clone())];
        let mut opt = Optimizer::new(OptimizerKind::adamw(), 0.01, &params);
        for _ in 0..3 {
            let grads = HashMap::from([("w.weight".to_string(), (w.as_tensor() * 2.0).unwrap())]);
            opt.step(&grads, 0.1, &[]).unwrap();
        }
        let got = w
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        assert!((f64::from(got) - p).abs() < 1e-6, "{got} vs {p}");
        // Saving and restoring the state continues identically.
        let state = opt.state().unwrap();
        let mut again = Optimizer::new(OptimizerKind::adamw(), 0.01, &params);
        again.load_state(&state).unwrap();
        assert_eq!(again.steps(), 3);
    }
}
