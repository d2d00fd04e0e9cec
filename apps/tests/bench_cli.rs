//! `bench` and `op-bench` as a user runs them: the real binaries, their output formats, and the
//! refusals (a GPU-only search on the CPU, an unknown case).

use std::process::{Command, Output};

use serde_json::Value;

fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{binary} runs: {e}"))
}

fn stdout_json_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn bench_reports_throughput_for_inference_and_training() {
    let modes: [&[&str]; 3] = [&[], &["--train"], &["--train", "--dtype", "bf16"]];
    for extra in modes {
        let mut args = vec![
            "-b",
            "2",
            "--input-size",
            "64",
            "--warmup",
            "1",
            "--iters",
            "2",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let lines = stdout_json_lines(&run(env!("CARGO_BIN_EXE_bench"), &args));
        assert_eq!(lines.len(), 1);
        let r = &lines[0];
        assert_eq!(r["infer_batch_size"], 2);
        assert_eq!(r["mode"], if extra.is_empty() { "infer" } else { "train" });
        let per_sec = r["infer_samples_per_sec"].as_f64().unwrap();
        assert!(per_sec.is_finite() && per_sec > 0.0, "{r}");
        assert_eq!(r["max_batch_size"], Value::Null);
        let convolutions = if cfg!(feature = "cudnn") {
            "cudnn"
        } else {
            "candle"
        };
        assert_eq!(r["cuda_convolutions"], convolutions, "{r}");
    }
}

#[test]
fn the_largest_batch_search_refuses_the_cpu() {
    let out = run(
        env!("CARGO_BIN_EXE_bench"),
        &["--max-batch", "--iters", "1"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--max-batch searches GPU memory") && err.contains("--device cuda"),
        "{err}"
    );
}

#[test]
fn op_bench_lists_and_times_cases() {
    let listed = stdout_json_lines(&run(env!("CARGO_BIN_EXE_op-bench"), &["--list"]));
    assert!(listed.len() >= 10, "{} cases", listed.len());
    for case in &listed {
        assert!(case["ours_ms"].is_null(), "--list times nothing: {case}");
        for key in ["name", "op", "n", "c", "h", "w"] {
            assert!(!case[key].is_null(), "{key} missing in {case}");
        }
    }
    let timed = stdout_json_lines(&run(
        env!("CARGO_BIN_EXE_op-bench"),
        &[
            "--only",
            "blur s2 64",
            "-b",
            "1",
            "--warmup",
            "0",
            "--iters",
            "1",
        ],
    ));
    assert_eq!(timed.len(), 1);
    assert!(timed[0]["ours_ms"].as_f64().unwrap() > 0.0);
    assert!(timed[0]["candle_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(timed[0]["device"], "cpu");
    assert_eq!(timed[0]["dtype"], "f32");
    let out = run(env!("CARGO_BIN_EXE_op-bench"), &["--only", "no such op"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("matches no case"));
    // Half-precision timings are for GPU kernels; the CPU ones are f32.
    let out = run(
        env!("CARGO_BIN_EXE_op-bench"),
        &["--only", "blur", "--dtype", "f16"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--dtype f16") && err.contains("f32"), "{err}");
}

#[test]
fn op_bench_times_bf16_products_against_the_f32_kernel() {
    let out = run(
        env!("CARGO_BIN_EXE_op-bench"),
        &[
            "--dtype", "bf16", "-b", "1", "--warmup", "0", "--iters", "1",
        ],
    );
    if !tresnet::native_cpu_bf16() {
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no native bf16"));
        return;
    }
    let timed = stdout_json_lines(&out);
    // Only the inference convolutions have bf16 products.
    assert!(!timed.is_empty());
    for case in &timed {
        assert_eq!(case["op"], "conv_bias_leaky", "{case}");
        assert_eq!(case["dtype"], "bf16");
        for key in ["ours_gflops", "f32_gflops", "f32_ms"] {
            assert!(case[key].as_f64().unwrap() > 0.0, "{key} in {case}");
        }
    }
}
