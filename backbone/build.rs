//! With the `cuda` feature, compiles this crate's CUDA kernels (`src/cuda_kernels/*.cu`) to PTX
//! with `nvcc`, into `$OUT_DIR/tresnet_kernels.ptx` (embedded by `src/cuda_kernels/mod.rs`).
//!
//! `nvcc` is taken from `$NVCC`, else `$CUDA_HOME/bin`, else `PATH`. The PTX targets the virtual
//! architecture `compute_$CUDA_COMPUTE_CAP` (the variable candle's own kernels read; default 70):
//! the driver compiles it for the card it runs on, any card of that capability or newer.
//! Without the feature nothing is compiled and no CUDA toolkit is needed.

use std::path::PathBuf;
use std::process::Command;

const KERNELS: &str = "src/cuda_kernels/blur.cu";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_CUDA");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    for var in ["NVCC", "CUDA_HOME", "CUDA_COMPUTE_CAP"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed={KERNELS}");
    let nvcc = std::env::var_os("NVCC")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CUDA_HOME")
                .map(|home| PathBuf::from(home).join("bin").join("nvcc"))
                .filter(|p| p.exists())
        })
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let capability = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "70".to_string());
    let capability = capability.trim().replace('.', "");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("tresnet_kernels.ptx");
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "--std=c++17"])
        .arg(format!("-arch=compute_{capability}"))
        .arg(KERNELS)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "the `cuda` feature compiles {KERNELS} with nvcc, but {} could not be run ({e}); \
                 install the CUDA toolkit or use scripts/build-cuda.sh",
                nvcc.display()
            )
        });
    assert!(
        status.success(),
        "nvcc failed on {KERNELS} (exit status {status})"
    );
}
