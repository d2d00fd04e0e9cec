//! `finetune` from a pretrained bundle takes its data config from the bundle's `pretrained_cfg`
//! as timm does (input size, resize, interpolation, mean/std), says where each setting came
//! from, keeps or replaces the classifier as the classes say, and learns a new small task far
//! better than the same run from scratch.
#![allow(clippy::print_stderr)] // reports the measured top-1

mod common;

use std::path::Path;

use common::{run, succeeded};
use serde_json::Value;

const FINETUNE: &str = env!("CARGO_BIN_EXE_finetune");
const MAKE_SHAPES: &str = env!("CARGO_BIN_EXE_make-shapes");

fn embedded_bundle() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runtime/assets/shapes_multilabel")
        .display()
        .to_string()
}

/// Runs finetune in `dir`; returns (summary json, stderr).
fn finetune(dir: &Path, args: &[&str]) -> (Value, String) {
    let out = run(FINETUNE, args, dir);
    let stdout = succeeded(&out);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    (summary, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn exported_cfg(dir: &Path, run_dir: &str) -> Value {
    let text = std::fs::read(dir.join(run_dir).join("best/config.json")).unwrap();
    serde_json::from_slice::<Value>(&text).unwrap()
}

#[test]
fn a_pretrained_bundle_sets_the_data_config_and_beats_training_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A new small task: 150 single-label shapes (120 to train, 30 to validate).
    succeeded(&run(
        MAKE_SHAPES,
        &["shapes", "-n", "150", "--layout", "folder", "--seed", "5"],
        d,
    ));
    let bundle = embedded_bundle();
    let common = ["--data", "shapes", "--epochs", "5", "--val-fraction", "0.2"];

    let mut args = vec!["--weights", bundle.as_str(), "-o", "pre"];
    args.extend(common);
    let (pre, log) = finetune(d, &args);
    // No size flag: the bundle's 64×64, squish, bilinear, [0, 1] — and the log says so.
    assert!(
        log.contains("finetune: input 64×64 (from ") && log.contains("pretrained_cfg); squish"),
        "{log}"
    );
    assert!(
        log.contains("classifier replaced: the weights have 6 classes named otherwise"),
        "{log}"
    );
    let cfg = exported_cfg(d, "pre");
    assert_eq!(
        cfg["pretrained_cfg"]["input_size"],
        serde_json::json!([3, 64, 64])
    );
    assert_eq!(cfg["pretrained_cfg"]["crop_mode"], "squish");
    assert_eq!(cfg["pretrained_cfg"]["interpolation"], "bilinear");

    // The same run from scratch (same architecture, size and split).
    std::fs::write(
        d.join("scratch.toml"),
        "architecture = \"tresnet_m\"\ninput_size = 64\n[model_args]\nlayers = [1, 1, 1, 1]\nwidth_factor = 0.25\n",
    )
    .unwrap();
    let mut args = vec!["--recipe", "scratch.toml", "-o", "scratch"];
    args.extend(common);
    let (scratch, _) = finetune(d, &args);
    let (pre, scratch) = (
        pre["best_metric"].as_f64().unwrap(),
        scratch["best_metric"].as_f64().unwrap(),
    );
    eprintln!("validation top-1: pretrained {pre:.1} %, from scratch {scratch:.1} %");
    // Measured: 73 % against 20 % (seed 0), 53 % against 20 % (seed 1).
    assert!(
        pre >= scratch + 20.0,
        "pretrained {pre} not clearly above scratch {scratch}"
    );

    // With the small-data regularisers on, in both runs, pretrained still wins clearly.
    let regularisers = [
        "--mixup",
        "0.2",
        "--cutmix",
        "1.0",
        "--layer-decay",
        "0.8",
        "--drop-path",
        "0.1",
        "--balance",
    ];
    let mut args = vec!["--weights", bundle.as_str(), "-o", "pre-reg"];
    args.extend(common);
    args.extend(regularisers);
    let (pre_reg, _) = finetune(d, &args);
    let mut args = vec!["--recipe", "scratch.toml", "-o", "scratch-reg"];
    args.extend(common);
    args.extend(regularisers);
    let (scratch_reg, _) = finetune(d, &args);
    let (pre_reg, scratch_reg) = (
        pre_reg["best_metric"].as_f64().unwrap(),
        scratch_reg["best_metric"].as_f64().unwrap(),
    );
    eprintln!(
        "with mixup 0.2 + cutmix 1.0 + layer decay 0.8 + drop path 0.1 + balance: pretrained {pre_reg:.1} %, from scratch {scratch_reg:.1} %"
    );
    assert!(
        pre_reg >= scratch_reg + 20.0,
        "with regularisers: pretrained {pre_reg} not clearly above scratch {scratch_reg}"
    );

    // --patience ends a run that stops improving (here: a learning rate too small to move it).
    let mut args = vec!["--weights", bundle.as_str(), "-o", "stalled"];
    args.extend(["--data", "shapes", "--epochs", "6", "--val-fraction", "0.2"]);
    args.extend(["--lr", "1e-12", "--schedule", "constant", "--patience", "1"]);
    let (stalled, log) = finetune(d, &args);
    assert_eq!(stalled["stopped_by_patience"], true, "{log}");
    assert!(stalled["epochs"].as_array().unwrap().len() < 6, "{stalled}");
    assert!(log.contains("(--patience)"), "{log}");

    // A flag wins over the weights, and the log names it.
    let mut args = vec![
        "--weights",
        bundle.as_str(),
        "-o",
        "big",
        "--input-size",
        "96",
    ];
    args.extend(["--data", "shapes", "--epochs", "1", "--val-fraction", "0.2"]);
    let (_, log) = finetune(d, &args);
    assert!(log.contains("input 96×96 (from --input-size)"), "{log}");
    assert_eq!(
        exported_cfg(d, "big")["pretrained_cfg"]["input_size"],
        serde_json::json!([3, 96, 96])
    );

    // Starting from the fine-tuned bundle on the same classes keeps its classifier.
    let previous = d.join("pre/best").display().to_string();
    let mut args = vec!["--weights", previous.as_str(), "-o", "again"];
    args.extend(["--data", "shapes", "--epochs", "1", "--val-fraction", "0.2"]);
    let (again, log) = finetune(d, &args);
    assert!(
        log.contains("keeping the weights' classifier (6 classes, the same names)"),
        "{log}"
    );
    assert!(
        again["best_metric"].as_f64().unwrap() >= pre - 15.0,
        "a kept classifier starts where the last run ended: {again}"
    );
}

#[test]
fn labels_from_a_csv_train_single_and_multi_label() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Multi-label: the COCO shapes written as `file,label;label` lines.
    succeeded(&run(MAKE_SHAPES, &["coco", "-n", "80", "--seed", "9"], d));
    let coco: Value =
        serde_json::from_slice(&std::fs::read(d.join("coco/annotations.json")).unwrap()).unwrap();
    let name_of = |id: &Value| {
        coco["categories"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| &c["id"] == id)
            .unwrap()["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut lines = vec!["file,labels".to_string()];
    let mut several = 0;
    for image in coco["images"].as_array().unwrap() {
        let mut names: Vec<String> = coco["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["image_id"] == image["id"])
            .map(|a| name_of(&a["category_id"]))
            .collect();
        names.sort();
        names.dedup();
        several += usize::from(names.len() > 1);
        if !names.is_empty() {
            lines.push(format!(
                "{},{}",
                image["file_name"].as_str().unwrap(),
                names.join(";")
            ));
        }
    }
    assert!(several > 0, "the shapes have images with several labels");
    std::fs::write(d.join("multi.csv"), lines.join("\n")).unwrap();
    let args = [
        "--data",
        "coco/images",
        "--labels",
        "multi.csv",
        "--recipe",
        "tiny.toml",
        "--epochs",
        "1",
        "-o",
        "multi",
    ];
    std::fs::write(
        d.join("tiny.toml"),
        "architecture = \"tresnet_m\"\ninput_size = 64\nbatch_size = 16\n[model_args]\nlayers = [1, 1, 1, 1]\nwidth_factor = 0.25\n",
    )
    .unwrap();
    let (summary, _) = finetune(d, &args);
    assert!(summary["best_metric"].as_f64().unwrap() > 0.0);
    let cfg = exported_cfg(d, "multi");
    assert_eq!(cfg["task"], "multi_label");
    assert_eq!(cfg["label_names"].as_array().unwrap().len(), 6);

    // Single-label: one label per line (class folders used as plain subfolders).
    succeeded(&run(
        MAKE_SHAPES,
        &["folder", "-n", "60", "--layout", "folder", "--seed", "4"],
        d,
    ));
    let mut lines = Vec::new();
    for class in std::fs::read_dir(d.join("folder")).unwrap() {
        let class = class.unwrap().file_name().into_string().unwrap();
        for file in std::fs::read_dir(d.join("folder").join(&class)).unwrap() {
            let file = file.unwrap().file_name().into_string().unwrap();
            lines.push(format!("{class}/{file}\t{class}"));
        }
    }
    std::fs::write(d.join("single.tsv"), lines.join("\n")).unwrap();
    let (_, log) = finetune(
        d,
        &[
            "--data",
            "folder",
            "--labels",
            "single.tsv",
            "--recipe",
            "tiny.toml",
            "--epochs",
            "1",
            "-o",
            "single",
        ],
    );
    assert!(log.contains("6 classes"), "{log}");
    assert_eq!(exported_cfg(d, "single")["task"], "single_label");

    // A line naming a file outside the folder is refused by file and line, nothing trained.
    std::fs::write(d.join("bad.csv"), "../multi.csv,circle\n").unwrap();
    let out = run(
        FINETUNE,
        &["--data", "coco/images", "--labels", "bad.csv", "-o", "bad"],
        d,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.csv: line 1") && err.contains("../multi.csv"),
        "{err}"
    );
    assert!(!d.join("bad").exists());
}
