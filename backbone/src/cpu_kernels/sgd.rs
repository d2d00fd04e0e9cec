//! SGD's update arithmetic for f32 parameters, in parallel chunks: the same operations, in the
//! same order, as the candle tensor chain it replaces (so both give the same values).

use rayon::prelude::*;

/// Values per parallel task.
const CHUNK: usize = 1 << 14;

/// SGD's settings for one parameter.
#[derive(Debug, Clone, Copy)]
pub struct SgdSettings {
    /// Momentum μ (0 = none).
    pub momentum: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay for this parameter (0 = none).
    pub weight_decay: f32,
    /// Learning rate.
    pub lr: f32,
}

/// The decayed gradient `g + wd·p` (the candle chain adds the decay only when it is positive).
#[inline]
fn decayed(g: f32, p: f32, wd: f32) -> f32 {
    if wd > 0.0 { g + p * wd } else { g }
}

/// `buf ← μ·buf + g′` with `g′ = g + wd·p`; all three the same length.
pub fn momentum_update(buf: &mut [f32], grad: &[f32], param: &[f32], settings: SgdSettings) {
    let SgdSettings {
        momentum,
        weight_decay,
        ..
    } = settings;
    buf.par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK).zip(param.par_chunks(CHUNK)))
        .for_each(|(b, (g, p))| {
            for ((b, g), p) in b.iter_mut().zip(g).zip(p) {
                let g = decayed(*g, *p, weight_decay);
                *b = if momentum > 0.0 { *b * momentum + g } else { g };
            }
        });
}

/// `p ← p − lr·d` with `d = g′ + μ·buf` (Nesterov) or `buf`, from the updated buffer.
pub fn param_update(param: &mut [f32], buf: &[f32], grad: &[f32], settings: SgdSettings) {
    let SgdSettings {
        momentum,
        nesterov,
        weight_decay,
        lr,
    } = settings;
    param
        .par_chunks_mut(CHUNK)
        .zip(buf.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
        .for_each(|(p, (b, g))| {
            for ((p, b), g) in p.iter_mut().zip(b).zip(g) {
                let direction = if nesterov && momentum > 0.0 {
                    decayed(*g, *p, weight_decay) + *b * momentum
                } else {
                    *b
                };
                *p -= direction * lr;
            }
        });
}
