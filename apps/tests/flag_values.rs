//! Every enumerated flag of every binary is typed: a wrong value is refused by the argument
//! parser, before any work, with the values it accepts; and the spellings are the ones recipes
//! and bundle `config.json` files use.

use std::process::Command;

/// Runs `binary` with `args` and returns its stderr, asserting that it failed with clap's usage
/// error (exit status 2).
fn refused(binary: &str, args: &[&str]) -> String {
    let out = Command::new(binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{binary} runs: {e}"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{binary} {args:?}: {err}");
    err
}

#[test]
fn wrong_values_are_refused_with_the_possible_ones() {
    let cases: [(&str, &[&str], &[&str]); 12] = [
        (
            env!("CARGO_BIN_EXE_tag"),
            &["x", "--format", "bogus"],
            &["jsonl", "csv", "json"],
        ),
        (
            env!("CARGO_BIN_EXE_tag"),
            &["x", "--dtype", "bogus"],
            &["f32", "f16", "bf16"],
        ),
        (
            env!("CARGO_BIN_EXE_tag"),
            &["x", "--resize", "bogus"],
            &["squish", "center"],
        ),
        (
            env!("CARGO_BIN_EXE_tag"),
            &["x", "--device", "gpu"],
            &["cpu", "cuda", "cuda:N"],
        ),
        (
            env!("CARGO_BIN_EXE_bench"),
            &["--format", "bogus"],
            &["csv", "json"],
        ),
        (
            env!("CARGO_BIN_EXE_coco-eval"),
            &["--task", "multilabel"],
            &["multi_label", "detection"],
        ),
        (
            env!("CARGO_BIN_EXE_embed"),
            &["--resize", "bogus"],
            &["squish", "center"],
        ),
        (
            env!("CARGO_BIN_EXE_finetune"),
            &["--task", "multilabel"],
            &["single_label", "multi_label", "detection"],
        ),
        (
            env!("CARGO_BIN_EXE_finetune"),
            &["--precision", "f16"],
            &["f32", "f16-mixed", "bf16-mixed"],
        ),
        (
            env!("CARGO_BIN_EXE_finetune"),
            &["--schedule", "onecycle"],
            &["one_cycle", "cosine_warmup", "constant"],
        ),
        (
            env!("CARGO_BIN_EXE_finetune"),
            &["--optimizer", "adam"],
            &["adamw", "sgd"],
        ),
        (
            env!("CARGO_BIN_EXE_make-shapes"),
            &["out", "--layout", "tree"],
            &["coco", "folder"],
        ),
    ];
    for (binary, args, possible) in cases {
        let err = refused(binary, args);
        assert!(err.contains("possible values"), "{args:?}: {err}");
        for value in possible {
            assert!(err.contains(value), "{args:?} does not list {value}: {err}");
        }
    }
}

#[test]
fn the_file_spellings_are_accepted() {
    // Parsing succeeds (the run then fails later for want of data, with exit status 1, not 2).
    for args in [
        &[
            "--task",
            "multi_label",
            "--precision",
            "bf16-mixed",
            "--schedule",
            "one_cycle",
        ][..],
        &[
            "--task",
            "single_label",
            "--optimizer",
            "sgd",
            "--augment",
            "light",
        ][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_finetune"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("give --data"), "{args:?}: {err}");
    }
}
