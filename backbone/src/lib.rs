//! # tresnet
//!
//! TResNet backbones (TResNet-M/L/XL and v2-L, and any configuration timm's `TResNet` class
//! accepts) on candle, computing what timm computes and loading the checkpoints people have:
//! timm safetensors (also from the local Hugging Face cache, offline), official MIIL `.pth` files
//! (TResNet, ASL, ML-Decoder) and this project's bundles.
//!
//! ```no_run
//! use tresnet::{BuildOptions, TResNet, weights::{model_config, resolve_weights}};
//! # fn main() -> tresnet::Result<()> {
//! let weights = resolve_weights("timm/tresnet_m.miil_in1k")?;
//! let config = model_config(None, Some(&weights), None)?;
//! let model = TResNet::new(&config, &weights.weights.state_dict, &BuildOptions::default())?;
//! let images = candle_core::Tensor::zeros((1, 3, 224, 224), candle_core::DType::F32,
//!     &candle_core::Device::Cpu)?;
//! let logits = model.forward(&images)?; // (1, 1000)
//! # Ok(()) }
//! ```
//!
//! Conventions: tensors are NCHW; images are RGB in `[0, 1]` (TResNet uses mean 0 / std 1);
//! weight names are timm's state-dict keys, verbatim.

pub mod blocks;
mod build_options;
pub mod config;
mod cpu_kernels;
#[cfg(feature = "cuda")]
mod cuda_kernels;
mod error;
mod features;
pub mod hub_config;
pub mod layers;
pub mod layout;
pub mod manifest;
mod model;
pub mod ops;
pub mod pretrained;
mod stochastic_depth;
mod trainable;
pub mod weights;
mod worker_pool;

pub use build_options::BuildOptions;
pub use config::{GlobalPool, TResNetConfig};
pub use cpu_kernels::Products;
pub use cpu_kernels::{PeakRates, peak_rates};
pub use error::{Error, Result};
pub use features::{FeatureInfo, FeatureMap, Features};
pub use hub_config::HubConfig;
pub use layout::Layout;
pub use manifest::Manifest;
pub use model::{
    MIN_INPUT_SIDE, ModelOutput, TResNet, native_cpu_amx, native_cpu_bf16, native_cpu_winograd,
};
pub use stochastic_depth::StochasticDepth;
pub use trainable::{BATCH_NORM_MOMENTUM, TrainableTResNet};
pub use worker_pool::on_cpu_workers;
