//! The flag vocabulary shared by every app: `--backbone`, `--weights`, `--device`, `--dtype`,
//! `--input-size`, `--resize`.

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};
use clap::Args;

/// Which network and weights to run.
#[derive(Debug, Clone, Args)]
pub struct ModelFlags {
    /// Architecture (tresnet_m, tresnet_l, tresnet_xl, tresnet_v2_l), optionally with a timm tag
    /// (tresnet_l.miil_in1k_448). Without --weights, the tag's weights are looked up in the local
    /// Hugging Face cache.
    #[arg(long)]
    pub backbone: Option<String>,
    /// Weights: a .safetensors or .pth file, a directory with model.safetensors + config.json, or
    /// a hub id such as timm/tresnet_m.miil_in1k found in the local Hugging Face cache (never
    /// downloaded).
    #[arg(long)]
    pub weights: Option<String>,
    /// Number of classes (default: the checkpoint's classifier size).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Keep batch norms separate instead of folding them into the convolutions.
    #[arg(long)]
    pub no_fold: bool,
}

/// Where and in which precision to run.
#[derive(Debug, Clone, Args)]
pub struct RuntimeFlags {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// CPU threads for decoding and for the network (default: all cores).
    #[arg(short = 'j', long)]
    pub workers: Option<usize>,
}

impl RuntimeFlags {
    /// The candle device named by `--device`.
    pub fn device(&self) -> Result<Device> {
        parse_device(&self.device)
    }

    /// Threads to use: `-j`, else every core.
    pub fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Sizes the global thread pool (used by decoding and by candle's CPU kernels) from `-j`.
    pub fn init_threads(&self) -> Result<()> {
        if let Some(n) = self.workers {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build_global()
                .context("-j: the thread pool was already started")?;
        }
        Ok(())
    }

    /// The candle dtype named by `--dtype`.
    pub fn dtype(&self) -> Result<DType> {
        parse_dtype(&self.dtype)
    }
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let ordinal = match spec {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:") {
            Some(n) => n
                .parse::<usize>()
                .with_context(|| format!("--device {other}: `{n}` is not a GPU index"))?,
            None => bail!("--device {other}: expected cpu, cuda or cuda:N"),
        },
    };
    if !cfg!(feature = "cuda") {
        bail!(
            "--device {spec}: this binary was built without CUDA; rebuild with \
             `--features cuda` (see README)"
        );
    }
    Device::new_cuda(ordinal).with_context(|| format!("--device {spec}: cannot open the GPU"))
}

/// Parses `f32`, `f16` or `bf16`.
pub fn parse_dtype(spec: &str) -> Result<DType> {
    match spec {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => bail!("--dtype {other}: expected f32, f16 or bf16"),
    }
}

/// `--input-size` and `--resize`: overrides of the model's own preprocessing.
#[derive(Debug, Clone, Args)]
pub struct PreprocessFlags {
    /// Square input size (default: the model's).
    #[arg(long)]
    pub input_size: Option<usize>,
    /// squish (resize to the input size) or crop (resize + centre crop), default: the model's.
    #[arg(long)]
    pub resize: Option<String>,
}

impl PreprocessFlags {
    /// The overrides these flags ask for.
    pub fn overrides(&self) -> Result<crate::model_bundle::PreprocessOverrides> {
        Ok(crate::model_bundle::PreprocessOverrides {
            input_size: self.input_size,
            resize_mode: self
                .resize
                .as_deref()
                .map(crate::model_bundle::parse_resize_mode)
                .transpose()?,
        })
    }
}
