//! `op-bench`: per-operation timings on ResNet-like shapes — this project's kernels against
//! candle's own operations for the same computation — as JSON lines, one per case.
//!
//! `scripts/bench_ops_vs_torch.sh` runs it next to `scripts/torch_op_bench.py` (the same cases,
//! read from `op-bench --list`) and prints one table with the ratios. On a CUDA build,
//! `--device cuda --dtype f16|bf16|f32` times the operations that have their own GPU kernel (the
//! blur) against the tensor-operation path the kernel replaced.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Instant;

use anyhow::{Result, bail};
use candle_core::{DType, Device, Tensor, Var};
use clap::Parser;
use serde_json::json;
use tresnet::layers::{
    BatchNormTrain, BlurPool, PreparedConvKernel, RunningStats, add_relu, apply_activation,
    avg_pool_2x2_ceil, channel_scale, conv2d, conv2d_bias_act, space_to_depth,
};
use tresnet::layout::Activation;
use tresnet_apps::cli::RuntimeFlags;

tresnet_apps::use_mimalloc!();
#[derive(Debug, Parser)]
#[command(
    name = "op-bench",
    about = "Time TResNet's operations: our kernels vs candle's operations",
    long_about = "Runs each case (an operation on a ResNet-like shape) with this project's \
                  kernel and with candle's reference operations, after warm-up, and prints one \
                  JSON line per case with the median times in milliseconds. `--list` prints the \
                  cases only (what scripts/torch_op_bench.py reads). The CPU cases run in f32; \
                  --dtype bf16 on the CPU times the inference convolutions with bf16 products \
                  against our f32 kernel (AVX-512 BF16 CPUs); `--device cuda` runs the cases with \
                  a GPU kernel of their own, in --dtype."
)]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeFlags,
    /// Batch size of every case.
    #[arg(short = 'b', long, default_value_t = 8)]
    batch_size: usize,
    /// Untimed runs per case and implementation.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs per case and implementation (the median is reported).
    #[arg(long, default_value_t = 7)]
    iters: usize,
    /// Print the cases as JSON lines without timing anything.
    #[arg(long)]
    list: bool,
    /// Run only the cases whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Time our kernels only (for profiling them with perf).
    #[arg(long)]
    ours_only: bool,
    /// First measure one core's peak multiply-add rate (AVX-512 FMA loop, and bf16 dot
    /// products where the CPU has them), print it, and give each convolution's rate as a share
    /// of the threads' peak in its precision (`ours_peak_share`; Winograd counts the direct
    /// convolution's multiply-adds, so it can exceed 1).
    #[arg(long)]
    peak: bool,
}

/// What a case computes; every variant is one step of TResNet's forward or backward pass.
#[derive(Debug, Clone, Copy)]
enum OpKind {
    /// `leaky_relu(conv(x, w) + b)`, stride 1, "same" padding (inference, BN folded).
    ConvBiasAct { kernel: usize, out_channels: usize },
    /// Convolution forward + backward to input and weight (training), gradient of `sum(y)`.
    ConvTrain { kernel: usize, out_channels: usize },
    /// Batch norm with batch statistics + leaky ReLU, forward + backward (training).
    BnActTrain,
    /// The anti-aliasing blur, 3×3 binomial, reflect padding, stride 2.
    Blur,
    /// The stem's 4×4 space-to-depth.
    SpaceToDepth,
    /// Squeeze-and-excitation gating: `x · gate[n, c]`.
    ChannelScale,
    /// The residual join: `relu(a + b)`.
    AddRelu,
    /// The shortcut's 2×2 average pool (ceil mode).
    AvgPool,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    kind: OpKind,
    /// Input `(C, H, W)`; the batch comes from the command line.
    chw: (usize, usize, usize),
}

const LEAKY: Activation = Activation::LeakyRelu(0.01);

/// The cases: the shapes of TResNet-M's stages at 224 (stem 56², layer1 56², layer2 28², layer3
/// 14², layer4 7²).
fn cases() -> Vec<Case> {
    use OpKind::*;
    let conv = |kernel, out_channels| ConvBiasAct {
        kernel,
        out_channels,
    };
    vec![
        Case {
            name: "conv3x3 64->64 @56",
            kind: conv(3, 64),
            chw: (64, 56, 56),
        },
        Case {
            name: "conv3x3 128->128 @28",
            kind: conv(3, 128),
            chw: (128, 28, 28),
        },
        Case {
            name: "conv3x3 256->256 @14",
            kind: conv(3, 256),
            chw: (256, 14, 14),
        },
        Case {
            name: "conv3x3 48->64 @56 (stem)",
            kind: conv(3, 64),
            chw: (48, 56, 56),
        },
        Case {
            name: "conv1x1 256->128 @28",
            kind: conv(1, 128),
            chw: (256, 28, 28),
        },
        Case {
            name: "conv1x1 1024->256 @14",
            kind: conv(1, 256),
            chw: (1024, 14, 14),
        },
        Case {
            name: "conv1x1 512->2048 @7",
            kind: conv(1, 2048),
            chw: (512, 7, 7),
        },
        Case {
            name: "blur s2 64 @56",
            kind: Blur,
            chw: (64, 56, 56),
        },
        Case {
            name: "blur s2 256 @28",
            kind: Blur,
            chw: (256, 28, 28),
        },
        Case {
            name: "space_to_depth 3 @224",
            kind: SpaceToDepth,
            chw: (3, 224, 224),
        },
        Case {
            name: "se gate 512 @28",
            kind: ChannelScale,
            chw: (512, 28, 28),
        },
        Case {
            name: "add+relu 512 @28",
            kind: AddRelu,
            chw: (512, 28, 28),
        },
        Case {
            name: "avgpool2 ceil 512 @28",
            kind: AvgPool,
            chw: (512, 28, 28),
        },
        Case {
            name: "train conv3x3 64->64 @56",
            kind: ConvTrain {
                kernel: 3,
                out_channels: 64,
            },
            chw: (64, 56, 56),
        },
        Case {
            name: "train conv1x1 1024->256 @14",
            kind: ConvTrain {
                kernel: 1,
                out_channels: 256,
            },
            chw: (1024, 14, 14),
        },
        Case {
            name: "train bn+leaky 128 @28",
            kind: BnActTrain,
            chw: (128, 28, 28),
        },
    ]
}

/// The case as JSON: what `scripts/torch_op_bench.py` rebuilds on its side.
fn describe(case: &Case, batch: usize) -> serde_json::Value {
    let (c, h, w) = case.chw;
    let (op, kernel, out_channels) = match case.kind {
        OpKind::ConvBiasAct {
            kernel,
            out_channels,
        } => ("conv_bias_leaky", kernel, out_channels),
        OpKind::ConvTrain {
            kernel,
            out_channels,
        } => ("conv_train", kernel, out_channels),
        OpKind::BnActTrain => ("bn_leaky_train", 0, c),
        OpKind::Blur => ("blur", 3, c),
        OpKind::SpaceToDepth => ("space_to_depth", 4, 16 * c),
        OpKind::ChannelScale => ("channel_scale", 0, c),
        OpKind::AddRelu => ("add_relu", 0, c),
        OpKind::AvgPool => ("avg_pool_ceil", 2, c),
    };
    json!({
        "name": case.name, "op": op, "n": batch, "c": c, "h": h, "w": w,
        "kernel": kernel, "out_channels": out_channels,
    })
}

/// Floating-point operations of a convolution case (2 per multiply-add), `None` for other cases.
fn conv_flop(case: &Case, batch: usize) -> Option<f64> {
    let (c, h, w) = case.chw;
    match case.kind {
        OpKind::ConvBiasAct {
            kernel,
            out_channels,
        } => Some(2.0 * (batch * out_channels * c * kernel * kernel * h * w) as f64),
        _ => None,
    }
}

/// Inputs of one case, made once.
struct Inputs {
    x: Tensor,
    /// Second operand: conv weight `(O, C, k, k)`, gate `(N, C)`, or addend `(N, C, H, W)`.
    other: Option<Tensor>,
    /// Conv bias `(O)`.
    bias: Option<Tensor>,
}

fn inputs(case: &Case, batch: usize, device: &Device, dtype: DType) -> Result<Inputs> {
    let (c, h, w) = case.chw;
    let x = Tensor::randn(0f32, 1f32, (batch, c, h, w), device)?.to_dtype(dtype)?;
    let (other, bias) = match case.kind {
        OpKind::ConvBiasAct {
            kernel,
            out_channels,
        }
        | OpKind::ConvTrain {
            kernel,
            out_channels,
        } => {
            let scale = 1.0 / ((c * kernel * kernel) as f32).sqrt();
            (
                Some(Tensor::randn(
                    0f32,
                    scale,
                    (out_channels, c, kernel, kernel),
                    device,
                )?),
                Some(Tensor::randn(0f32, 0.1, out_channels, device)?),
            )
        }
        OpKind::ChannelScale => (Some(Tensor::rand(0f32, 1f32, (batch, c), device)?), None),
        OpKind::AddRelu => (
            Some(Tensor::randn(0f32, 1f32, (batch, c, h, w), device)?),
            None,
        ),
        _ => (None, None),
    };
    Ok(Inputs { x, other, bias })
}

fn operand(t: &Option<Tensor>) -> Result<&Tensor> {
    t.as_ref()
        .ok_or_else(|| anyhow::anyhow!("case built without its operand"))
}

/// The case through this project's entry points (the CPU kernels).
fn run_ours(case: &Case, i: &Inputs) -> Result<()> {
    match case.kind {
        OpKind::ConvBiasAct { kernel, .. } => {
            conv2d_bias_act(
                &i.x,
                operand(&i.other)?,
                operand(&i.bias)?,
                kernel / 2,
                LEAKY,
            )?;
        }
        OpKind::ConvTrain { kernel, .. } => {
            let x = Var::from_tensor(&i.x)?;
            let w = Var::from_tensor(operand(&i.other)?)?;
            let y = conv2d(x.as_tensor(), w.as_tensor(), kernel / 2, 1)?;
            y.sum_all()?.backward()?;
        }
        OpKind::BnActTrain => {
            let x = Var::from_tensor(&i.x)?;
            let bn = batch_norm(i.x.dims()[1], i.x.device())?;
            bn.forward_act(x.as_tensor(), LEAKY)?
                .sum_all()?
                .backward()?;
        }
        OpKind::Blur => {
            BlurPool.forward(&i.x)?;
        }
        OpKind::SpaceToDepth => {
            // The model makes the rearranged map contiguous before the stem convolution.
            space_to_depth(&i.x)?.contiguous()?;
        }
        OpKind::ChannelScale => {
            channel_scale(&i.x, operand(&i.other)?)?;
        }
        OpKind::AddRelu => {
            add_relu(&i.x, operand(&i.other)?)?;
        }
        OpKind::AvgPool => {
            avg_pool_2x2_ceil(&i.x)?;
        }
    }
    Ok(())
}

/// The same computation with candle's own operations (what runs without our kernels).
fn run_candle(case: &Case, i: &Inputs) -> Result<()> {
    let (n, c, _, _) = i.x.dims4()?;
    match case.kind {
        OpKind::ConvBiasAct { kernel, .. } => {
            let y = i.x.conv2d(operand(&i.other)?, kernel / 2, 1, 1, 1)?;
            let y = y.broadcast_add(&operand(&i.bias)?.reshape((1, (), 1, 1))?)?;
            apply_activation(&y, LEAKY)?;
        }
        OpKind::ConvTrain { kernel, .. } => {
            let x = Var::from_tensor(&i.x)?;
            let w = Var::from_tensor(operand(&i.other)?)?;
            let y = x.as_tensor().conv2d(w.as_tensor(), kernel / 2, 1, 1, 1)?;
            y.sum_all()?.backward()?;
        }
        OpKind::BnActTrain => {
            let x = Var::from_tensor(&i.x)?;
            let bn = batch_norm(c, i.x.device())?;
            apply_activation(&bn.forward(x.as_tensor())?, LEAKY)?
                .sum_all()?
                .backward()?;
        }
        OpKind::Blur if !i.x.device().is_cpu() => {
            // On a GPU candle's grouped convolution runs one group at a time: the fair
            // reference is the separable tensor-operation path the kernel replaced.
            BlurPool.forward_generic(&i.x)?;
        }
        OpKind::Blur => {
            // A depthwise stride-2 convolution with the binomial filter (candle has no reflect
            // padding; zero padding costs the same).
            let f = Tensor::new(&[1f32, 2., 1., 2., 4., 2., 1., 2., 1.], i.x.device())?;
            let f = (f / 16.0)?.reshape((1, 1, 3, 3))?.repeat((c, 1, 1, 1))?;
            i.x.conv2d(&f, 1, 2, 1, c)?;
        }
        OpKind::SpaceToDepth => {
            let (_, _, h, w) = i.x.dims4()?;
            i.x.reshape((n, c, h / 4, 4, w / 4, 4))?
                .permute((0, 3, 5, 1, 2, 4))?
                .reshape((n, 16 * c, h / 4, w / 4))?;
        }
        OpKind::ChannelScale => {
            i.x.broadcast_mul(&operand(&i.other)?.reshape((n, c, 1, 1))?)?;
        }
        OpKind::AddRelu => {
            (&i.x + operand(&i.other)?)?.relu()?;
        }
        OpKind::AvgPool => {
            i.x.avg_pool2d(2)?;
        }
    }
    Ok(())
}

fn batch_norm(channels: usize, device: &Device) -> Result<BatchNormTrain> {
    let weight = Var::from_tensor(&Tensor::ones(channels, DType::F32, device)?)?;
    let bias = Var::from_tensor(&Tensor::zeros(channels, DType::F32, device)?)?;
    let running = RunningStats {
        mean: Tensor::zeros(channels, DType::F32, device)?,
        var: Tensor::ones(channels, DType::F32, device)?,
        batches: 0,
    };
    Ok(BatchNormTrain::new(
        weight.as_tensor().clone(),
        bias.as_tensor().clone(),
        running,
        0.1,
    ))
}

/// Median milliseconds of `iters` runs after `warmup` untimed ones, each run waited for on
/// `device` (GPU work is asynchronous).
fn time_ms(
    device: &Device,
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    device.synchronize()?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        device.synchronize()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() {
    tresnet_apps::allocator::keep_freed_memory();
    tresnet_apps::candle_pool::run_candle_elementwise_on_the_caller();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("op-bench: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    cli.runtime.init_threads()?;
    if cli.batch_size == 0 || cli.iters == 0 {
        bail!("--batch-size and --iters must be at least 1");
    }
    let device = cli.runtime.device()?;
    let dtype = cli.runtime.dtype();
    // On the CPU, bf16 means bf16 products in the inference convolutions (f32 tensors); the
    // reference is then our own f32 kernel.
    let cpu_bf16 = device.is_cpu() && dtype == DType::BF16;
    if cpu_bf16 && !tresnet::native_cpu_bf16() {
        bail!("--dtype bf16: this CPU has no native bf16 (AVX-512 BF16)");
    }
    if device.is_cpu() && !matches!(dtype, DType::F32 | DType::BF16) {
        bail!(
            "--dtype {}: the CPU kernels are f32 ones (bf16: products only)",
            cli.runtime.dtype
        );
    }
    let dtype = if cpu_bf16 { DType::F32 } else { dtype };
    let selected: Vec<Case> = cases()
        .into_iter()
        .filter(|c| {
            cli.only
                .as_ref()
                .is_none_or(|s| c.name.contains(s.as_str()))
        })
        // Elsewhere than the CPU only the blur has a kernel of its own; CPU bf16 products only
        // the inference convolutions.
        .filter(|c| device.is_cpu() || matches!(c.kind, OpKind::Blur))
        .filter(|c| !cpu_bf16 || matches!(c.kind, OpKind::ConvBiasAct { .. }))
        .collect();
    if selected.is_empty() {
        bail!(
            "--only {:?} matches no case{}",
            cli.only.unwrap_or_default(),
            if device.is_cpu() {
                ""
            } else {
                " with a GPU kernel (blur)"
            }
        );
    }
    // One core's multiply-adds per second in the precision the convolutions multiply in.
    let peak_per_core = if cli.peak && !cli.list {
        let Some(rates) = tresnet::peak_rates() else {
            bail!("--peak: this CPU has no AVX-512, which the probe times");
        };
        let bf16 = rates.bf16_dot.map(|r| r / 1e9);
        let amx = rates.amx_tile.map(|r| r / 1e9);
        println!(
            "{}",
            json!({"peak_gmacs_per_core": {
                "f32_fma": rates.f32_fma / 1e9, "bf16_dot": bf16, "amx_tile": amx,
            }})
        );
        let rate = |r: Option<f64>| r.map_or("n/a".to_string(), |r| format!("{r:.1} GMAC/s"));
        eprintln!(
            "op-bench: peak per core: f32 FMA {:.1} GMAC/s, bf16 dot {}, AMX tiles {}",
            rates.f32_fma / 1e9,
            rate(bf16),
            rate(amx)
        );
        // bf16 convolutions run on AMX tiles where the CPU has them.
        Some(if cpu_bf16 {
            rates
                .amx_tile
                .or(rates.bf16_dot)
                .expect("native bf16 was checked above")
        } else {
            rates.f32_fma
        })
    } else {
        None
    };
    let threads = rayon::current_num_threads() as f64;
    for case in &selected {
        let mut line = describe(case, cli.batch_size);
        if !cli.list {
            let i = inputs(case, cli.batch_size, &device, dtype)?;
            // f32 3×3 convolutions run as the network runs them: Winograd where the CPU has it.
            let winograd = match case.kind {
                OpKind::ConvBiasAct { kernel: 3, .. } if !cpu_bf16 && device.is_cpu() => {
                    PreparedConvKernel::winograd(operand(&i.other)?)?
                }
                _ => None,
            };
            let ours = if cpu_bf16 {
                let packed = PreparedConvKernel::bf16(operand(&i.other)?)?
                    .expect("native bf16 was checked above");
                let padding = i.other.as_ref().map_or(0, |w| w.dims()[2] / 2);
                time_ms(&device, cli.warmup, cli.iters, || {
                    packed.conv2d_bias_act(&i.x, operand(&i.bias)?, padding, LEAKY)?;
                    Ok(())
                })?
            } else if let Some(prepared) = &winograd {
                time_ms(&device, cli.warmup, cli.iters, || {
                    prepared.conv2d_bias_act(&i.x, operand(&i.bias)?, 1, LEAKY)?;
                    Ok(())
                })?
            } else {
                time_ms(&device, cli.warmup, cli.iters, || run_ours(case, &i))?
            };
            let candle = if cpu_bf16 {
                // The reference for bf16 products: our f32 kernel.
                time_ms(&device, cli.warmup, cli.iters, || run_ours(case, &i))?
            } else if cli.ours_only {
                f64::NAN
            } else {
                time_ms(&device, cli.warmup, cli.iters, || run_candle(case, &i))?
            };
            line["device"] = json!(cli.runtime.device.to_string());
            line["dtype"] = json!(cli.runtime.dtype.name());
            line["ours_ms"] = json!(ours);
            if winograd.is_some() {
                let im2col = time_ms(&device, cli.warmup, cli.iters, || run_ours(case, &i))?;
                line["im2col_ms"] = json!(im2col);
            }
            line["candle_ms"] = json!(candle);
            if let Some(flop) = conv_flop(case, cli.batch_size) {
                // Achieved GFLOP/s of the convolution (2 per multiply-add).
                line["ours_gflops"] = json!(flop / (ours * 1e6));
                if let Some(peak) = peak_per_core {
                    // Two flops per multiply-add; `ours` in milliseconds.
                    line["ours_peak_share"] = json!(flop / 2.0 / (ours * 1e-3) / (peak * threads));
                }
                if cpu_bf16 {
                    line["f32_ms"] = json!(candle);
                    line["f32_gflops"] = json!(flop / (candle * 1e6));
                }
            }
            eprintln!(
                "op-bench: {:<28} ours {ours:8.3} ms  candle {candle:8.3} ms",
                case.name
            );
        }
        println!("{line}");
    }
    Ok(())
}
