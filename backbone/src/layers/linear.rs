//! The classifier's fully connected layer.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{LayerWeights, matmul};
use crate::error::Result;
use crate::weights::{normal, uniform};

/// `y = x · Wᵀ + b`: `(N, in)` → `(N, out)`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `(out, in)`, as stored (training updates show through).
    weight: Tensor,
    /// `(1, out)`.
    bias: Tensor,
}

impl Linear {
    /// Builds the layer from `{prefix}.weight` `(out, in)` and `{prefix}.bias` `(out)`.
    pub fn load(prefix: &str, weights: &LayerWeights<'_>) -> Result<Self> {
        let weight = weights.tensor(&format!("{prefix}.weight"))?;
        let bias = weights.tensor(&format!("{prefix}.bias"))?;
        Self::from_tensors(&weight, &bias)
    }

    /// A layer from a `(out, in)` weight and an `(out)` bias already in place (dtype, device).
    pub fn from_tensors(weight: &Tensor, bias: &Tensor) -> Result<Self> {
        let out = bias.dims1()?;
        Ok(Self {
            weight: weight.clone(),
            bias: bias.reshape((1, out))?,
        })
    }

    /// Applies the layer over the last dimension of any `(…, in)` tensor.
    pub fn forward_any(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = self.forward(&x.reshape((rows, dims[dims.len() - 1]))?)?;
        let mut out_dims = dims;
        *out_dims.last_mut().expect("at least one dimension") = self.out_features();
        Ok(y.reshape(out_dims)?)
    }

    /// A freshly initialised layer: weight `N(0, 0.01)` (timm's TResNet classifier init), bias
    /// `U(-1/√in, 1/√in)` (PyTorch's default), from `seed`.
    pub fn random(
        in_features: usize,
        out_features: usize,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let weight = normal(
            &mut rng,
            in_features * out_features,
            0.01,
            &[out_features, in_features],
        )?;
        let bound = 1.0 / (in_features as f32).sqrt();
        let bias = uniform(&mut rng, out_features, bound, &[1, out_features])?;
        Ok(Self {
            weight: weight.to_dtype(dtype)?.to_device(device)?,
            bias: bias.to_dtype(dtype)?.to_device(device)?,
        })
    }

    /// Number of outputs.
    pub fn out_features(&self) -> usize {
        self.bias.dims()[1]
    }

    /// Applies the layer to `(N, in)`, in `x`'s dtype (the weights are cast to it).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        Ok(matmul(x, &self.weight.to_dtype(dtype)?.t()?)?
            .broadcast_add(&self.bias.to_dtype(dtype)?)?)
    }
}
