//! Stochastic depth ("drop path") for training passes: each residual block's branch is
//! dropped for a whole sample with a probability that rises linearly over the network's blocks
//! from 0 (the first) to `rate` (the last), as timm's `drop_path_rate` for TResNet; a kept
//! branch is scaled by `1/(1 − p)` so that its expectation is unchanged. Inference never drops.

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::Result;

/// The settings of one training pass: the last block's drop probability and the seed of this
/// pass's draws (one per step, so a resumed run drops the same branches).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StochasticDepth {
    /// Drop probability of the last block, in [0, 1).
    pub rate: f64,
    /// Seed of the pass's draws.
    pub seed: u64,
}

impl StochasticDepth {
    /// The drop probability of block `index` (0-based, in network order) of `blocks`:
    /// `rate · index / (blocks − 1)`.
    pub fn block_rate(&self, index: usize, blocks: usize) -> f64 {
        if blocks <= 1 {
            return 0.0;
        }
        self.rate * index as f64 / (blocks - 1) as f64
    }

    /// The per-sample factor of block `index`'s branch, `(N, 1, 1, 1)`: 0 (dropped) or
    /// `1/(1 − p)` (kept), or `None` where the block never drops.
    pub fn block_factor(
        &self,
        index: usize,
        blocks: usize,
        batch: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Option<Tensor>> {
        let p = self.block_rate(index, blocks);
        if p <= 0.0 {
            return Ok(None);
        }
        let keep = 1.0 - p;
        let stream = self.seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut rng = StdRng::seed_from_u64(stream);
        let factors: Vec<f32> = (0..batch)
            .map(|_| {
                if rng.random::<f64>() < keep {
                    (1.0 / keep) as f32
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Some(
            Tensor::from_vec(factors, (batch, 1, 1, 1), device)?.to_dtype(dtype)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_rise_linearly_to_the_last_block() {
        let depth = StochasticDepth { rate: 0.2, seed: 1 };
        // torch.linspace(0, 0.2, 21) at 0, 10 and 20.
        assert_eq!(depth.block_rate(0, 21), 0.0);
        assert!((depth.block_rate(10, 21) - 0.1).abs() < 1e-15);
        assert!((depth.block_rate(20, 21) - 0.2).abs() < 1e-15);
        assert_eq!(depth.block_rate(0, 1), 0.0);
    }

    #[test]
    fn factors_are_zero_or_the_inverse_keep_rate_and_average_to_one() {
        let depth = StochasticDepth { rate: 0.5, seed: 7 };
        assert!(
            depth
                .block_factor(0, 3, 8, DType::F32, &Device::Cpu)
                .unwrap()
                .is_none()
        );
        let f = depth
            .block_factor(2, 3, 4000, DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        let v = f.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|&x| x == 0.0 || x == 2.0));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean - 1.0).abs() < 0.06, "mean factor {mean}");
        // Same seed, same draws; another seed, others.
        let again = depth
            .block_factor(2, 3, 4000, DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        assert_eq!(v, again.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let other = StochasticDepth { seed: 8, ..depth }
            .block_factor(2, 3, 4000, DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        assert_ne!(v, other.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
}
