//! The flag vocabulary shared by every app: `--backbone`, `--weights`, `--device`, `--dtype`,
//! `--input-size`, `--resize`. Each enumerated flag is typed, so a wrong value gets clap's
//! message with the possible values; the flags turn into the runtime's plain options here.

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use clap::{Args, ValueEnum};
use tresnet_data::ResizeMode;
use tresnet_runtime::{ModelBundle, ModelSpec, PreprocessOverrides};

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
    /// Number of classes the checkpoint's head must have (default: whatever it holds).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Keep batch norms separate instead of folding them into the convolutions.
    #[arg(long)]
    pub no_fold: bool,
}

impl ModelFlags {
    /// The runtime's description of what to load.
    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            backbone: self.backbone.clone(),
            weights: self.weights.clone(),
            num_classes: self.num_classes,
            keep_batch_norms: self.no_fold,
        }
    }
}

/// `--device`: `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceFlag {
    /// The CPU.
    Cpu,
    /// GPU number N.
    Cuda(usize),
}

impl DeviceFlag {
    /// Parses `cpu`, `cuda` or `cuda:N` (clap's `value_parser`).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    format!("`{other}` is not a device [possible values: cpu, cuda, cuda:N]")
                }),
        }
    }

    /// Opens the device (a CUDA device needs a binary built with `--features cuda`).
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(ordinal) => {
                if !cfg!(feature = "cuda") {
                    anyhow::bail!(
                        "--device {self}: this binary was built without CUDA; rebuild with \
                         `--features cuda` (see README)"
                    );
                }
                Device::new_cuda(ordinal)
                    .with_context(|| format!("--device {self}: cannot open the GPU"))
            }
        }
    }
}

impl std::fmt::Display for DeviceFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// `--dtype`: the precision the network computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeFlag {
    /// 32-bit float.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl DTypeFlag {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }

    /// The flag's spelling (`f32`, `f16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for DTypeFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where and in which precision to run.
#[derive(Debug, Clone, Args)]
pub struct RuntimeFlags {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = DeviceFlag::parse)]
    pub device: DeviceFlag,
    /// The precision the network computes in.
    #[arg(long, value_enum, default_value_t = DTypeFlag::F32)]
    pub dtype: DTypeFlag,
    /// CPU threads for decoding and for the network (default: all cores).
    #[arg(short = 'j', long)]
    pub workers: Option<usize>,
}

impl RuntimeFlags {
    /// The candle device named by `--device`.
    pub fn device(&self) -> Result<Device> {
        self.device.open()
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
    pub fn dtype(&self) -> DType {
        self.dtype.dtype()
    }

    /// What `--dtype bf16` on the CPU means on this machine, for the log: bf16 products inside
    /// the convolutions (f32 activations) on CPUs with AVX-512 BF16, plain f32 elsewhere.
    pub fn cpu_bf16_note(&self) -> Option<&'static str> {
        if self.device != DeviceFlag::Cpu || self.dtype != DTypeFlag::Bf16 {
            return None;
        }
        Some(if tresnet::native_cpu_amx() {
            "bf16 on the CPU: convolutions multiply bf16 operands on AMX tiles with f32 sums; \
             activations stay f32 (--dtype f32 for f32 products; TRESNET_AMX=0 for AVX-512 BF16)"
        } else if tresnet::native_cpu_bf16() {
            "bf16 on the CPU: convolutions multiply bf16 operands (AVX-512 BF16) with f32 sums; \
             activations stay f32 (--dtype f32 for f32 products)"
        } else {
            "--dtype bf16 on the CPU: this CPU has no native bf16 (AVX-512 BF16); running f32"
        })
    }
}

/// Parses the process's arguments as `C`, except that an app whose labels were measured to agree
/// in bf16 (`tag`) defaults `--dtype` to bf16 on a CPU with AVX-512 BF16 (there bf16 products
/// make the network 1.2-1.4× faster on a Zen 4, about 3× on a Xeon with AMX); `--dtype f32` still
/// asks for f32, and CUDA devices
/// keep f32 unless `--dtype` says otherwise. `--help` shows this machine's default. Exits with
/// clap's message on bad arguments, as `C::parse` does.
pub fn parse_preferring_cpu_bf16<C: clap::Parser>(
    runtime: impl Fn(&mut C) -> &mut RuntimeFlags,
) -> C {
    parse_preferring_cpu_bf16_from(std::env::args_os(), runtime).unwrap_or_else(|err| err.exit())
}

/// [`parse_preferring_cpu_bf16`] over `args` (the program name first).
pub fn parse_preferring_cpu_bf16_from<C, I, T>(
    args: I,
    runtime: impl Fn(&mut C) -> &mut RuntimeFlags,
) -> std::result::Result<C, clap::Error>
where
    C: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let native = tresnet::native_cpu_bf16();
    let command = C::command().mut_arg("dtype", |arg| {
        arg.default_value(if native { "bf16" } else { "f32" })
            .help(if native {
                "The precision the network computes in (default here: bf16 products, this CPU \
                 having AVX-512 BF16; f32 on CUDA devices)"
            } else {
                "The precision the network computes in (default: f32; bf16 on CPUs with AVX-512 \
                 BF16)"
            })
    });
    let matches = command.try_get_matches_from(args)?;
    let mut cli = C::from_arg_matches(&matches)?;
    let flags = runtime(&mut cli);
    if matches.value_source("dtype") == Some(clap::parser::ValueSource::DefaultValue)
        && flags.device != DeviceFlag::Cpu
    {
        flags.dtype = DTypeFlag::F32;
    }
    Ok(cli)
}

/// `--input-size` and `--resize`: overrides of the model's own preprocessing.
#[derive(Debug, Clone, Args)]
pub struct PreprocessFlags {
    /// Square input size (default: the model's).
    #[arg(long)]
    pub input_size: Option<usize>,
    /// squish (resize to the input size) or center (resize + centre crop; also `crop`), default:
    /// the model's.
    #[arg(long, value_enum)]
    pub resize: Option<ResizeMode>,
}

impl PreprocessFlags {
    /// The overrides these flags ask for.
    pub fn overrides(&self) -> PreprocessOverrides {
        PreprocessOverrides {
            input_size: self.input_size,
            resize_mode: self.resize,
        }
    }
}

/// Loads the model the flags describe (the embedded default without `--backbone`/`--weights`).
#[allow(clippy::print_stderr)] // the precision note belongs in the run's log
pub fn load_bundle(
    model: &ModelFlags,
    runtime: &RuntimeFlags,
    preprocess: &PreprocessFlags,
) -> Result<ModelBundle> {
    if let Some(note) = runtime.cpu_bf16_note() {
        eprintln!("{note}");
    }
    tresnet_runtime::load_bundle(
        &model.spec(),
        &runtime.device()?,
        runtime.dtype(),
        &preprocess.overrides(),
    )
}

/// Loads the embedded detector on the flags' device and dtype.
pub fn load_embedded_detector(
    runtime: &RuntimeFlags,
    preprocess: &PreprocessFlags,
) -> Result<ModelBundle> {
    tresnet_runtime::load_embedded_detector(
        &runtime.device()?,
        runtime.dtype(),
        &preprocess.overrides(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        runtime: RuntimeFlags,
        #[command(flatten)]
        preprocess: PreprocessFlags,
    }

    fn error_of(args: &[&str]) -> String {
        let mut argv = vec!["probe"];
        argv.extend_from_slice(args);
        match Probe::try_parse_from(argv) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn wrong_values_list_the_possible_ones() {
        let dtype = error_of(&["--dtype", "bogus"]);
        assert!(dtype.contains("f32") && dtype.contains("bf16"), "{dtype}");
        let resize = error_of(&["--resize", "bogus"]);
        assert!(
            resize.contains("squish") && resize.contains("center"),
            "{resize}"
        );
        let device = error_of(&["--device", "gpu"]);
        assert!(device.contains("cuda:N"), "{device}");
    }

    #[test]
    fn good_values_parse() {
        let p = Probe::try_parse_from([
            "p", "--device", "cuda:1", "--dtype", "bf16", "--resize", "crop",
        ])
        .unwrap();
        assert_eq!(p.runtime.device, DeviceFlag::Cuda(1));
        assert_eq!(p.runtime.dtype(), DType::BF16);
        assert_eq!(p.preprocess.resize, Some(ResizeMode::CenterCrop));
    }

    fn preferred(args: &[&str]) -> RuntimeFlags {
        let mut argv = vec!["probe"];
        argv.extend_from_slice(args);
        parse_preferring_cpu_bf16_from::<Probe, _, _>(argv, |p| &mut p.runtime)
            .unwrap()
            .runtime
    }

    #[test]
    fn bf16_is_the_preferred_default_only_on_a_native_cpu() {
        let native = tresnet::native_cpu_bf16();
        let default = preferred(&[]);
        assert_eq!(
            default.dtype,
            if native {
                DTypeFlag::Bf16
            } else {
                DTypeFlag::F32
            }
        );
        // An explicit choice wins, and GPUs keep f32 unless asked.
        assert_eq!(preferred(&["--dtype", "f32"]).dtype, DTypeFlag::F32);
        assert_eq!(preferred(&["--dtype", "f16"]).dtype, DTypeFlag::F16);
        assert_eq!(preferred(&["--device", "cuda"]).dtype, DTypeFlag::F32);
        assert_eq!(
            preferred(&["--device", "cuda", "--dtype", "bf16"]).dtype,
            DTypeFlag::Bf16
        );
        let err = parse_preferring_cpu_bf16_from::<Probe, _, _>(["p", "--dtype", "x"], |p| {
            &mut p.runtime
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("bf16"), "{err}");
    }
}
