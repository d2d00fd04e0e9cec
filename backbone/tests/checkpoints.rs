//! Loading the checkpoints people have: official `.pth` files (both containers), timm hub
//! directories and cache layouts, and strict-load errors that name the offending tensor.

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use tresnet::weights::{
    Naming, StoredZip, WeightsFormat, infer_config, model_config, official_to_timm_key,
    read_weights_file, resolve_snapshot, resolve_weights,
};
use tresnet::{BuildOptions, Error, HubConfig, TResNet, TResNetConfig};
use tresnet_tests::{fixture_path, fixture_state_dict, fixture_text, load_fixture};

fn tiny_v1_config() -> TResNetConfig {
    HubConfig::parse(&fixture_text("tiny_v1.config.json"))
        .unwrap()
        .to_tresnet_config()
        .unwrap()
}

fn logits(model: &TResNet, input: &Tensor) -> Tensor {
    model.forward(input).unwrap()
}

#[test]
fn official_keymap_is_translated_entry_by_entry() {
    let map: Value = serde_json::from_str(&fixture_text("tiny_v1_official_keymap.json")).unwrap();
    let table = map["official_to_timm"].as_object().unwrap();
    assert!(table.len() > 100);
    for (official, timm) in table {
        assert_eq!(
            official_to_timm_key(official),
            timm.as_str().unwrap(),
            "{official}"
        );
    }
}

/// Both official containers (`{'model': sd}` with `num_batches_tracked`, and the bare state dict
/// without) give tiny_v1's timm state bit for bit, hence its logits exactly.
#[test]
fn official_pth_files_load_as_timm_state() {
    let tensors = load_fixture("tiny_v1.safetensors");
    let reference = fixture_state_dict(&tensors);
    let config = tiny_v1_config();
    let reference_model = TResNet::new(&config, &reference, &BuildOptions::default()).unwrap();
    let input = &tensors["input2"];
    let expected = logits(&reference_model, input);
    for (file, tensors_in_file) in [
        ("tiny_v1_official.pth", 136),
        ("tiny_v1_official_bare.pth", 117),
    ] {
        let loaded = read_weights_file(&fixture_path(file)).unwrap();
        assert_eq!(loaded.format, WeightsFormat::PytorchZip, "{file}");
        assert_eq!(loaded.source_naming, Naming::Official, "{file}");
        assert_eq!(loaded.state_dict.len(), tensors_in_file, "{file}");
        for (key, tensor) in loaded.state_dict.iter() {
            let want = reference
                .get(key)
                .unwrap_or_else(|| panic!("{file}: unexpected key {key}"));
            assert_eq!(tensor.dtype(), want.dtype(), "{file}: {key}");
            let same = tensor
                .to_dtype(DType::F64)
                .unwrap()
                .eq(&want.to_dtype(DType::F64).unwrap())
                .unwrap()
                .to_dtype(DType::U32)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<u32>()
                .unwrap() as usize;
            assert_eq!(
                same,
                want.elem_count(),
                "{file}: {key} differs from timm's conversion"
            );
        }
        // The architecture is read off the file alone.
        let inferred = infer_config(&loaded.state_dict).unwrap();
        assert_eq!(inferred, config, "{file}: inferred configuration");
        let model = TResNet::new(&inferred, &loaded.state_dict, &BuildOptions::default()).unwrap();
        let diff = (logits(&model, input) - &expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{file}: logits");
    }
}

/// The bare file is the one candle 0.11.1's reader (zip 9.8.2) rejects: its first central-directory
/// header is 46 + 30 bytes long, exactly the 76 bytes of ZIP64 records torch.save puts between the
/// directory and the end record, which misleads that crate's archive-offset guess.
#[test]
fn bare_pth_has_the_layout_that_trips_zip_9_8_2() {
    let path = fixture_path("tiny_v1_official_bare.pth");
    let names: Vec<String> = StoredZip::open(&path)
        .unwrap()
        .names()
        .map(str::to_string)
        .collect();
    assert!(names.contains(&"tiny_v1_official_bare/data.pkl".to_string()));
    assert_eq!("tiny_v1_official_bare/data.pkl".len(), 30);
    let bytes = std::fs::read(&path).unwrap();
    let eocd = bytes.len() - 22;
    assert_eq!(&bytes[eocd..eocd + 4], b"PK\x05\x06");
    assert_eq!(
        &bytes[eocd - 20..eocd - 16],
        b"PK\x06\x07",
        "ZIP64 locator before the end record"
    );
    let dir_size = u32::from_le_bytes(bytes[eocd + 12..eocd + 16].try_into().unwrap()) as usize;
    let dir_offset = u32::from_le_bytes(bytes[eocd + 16..eocd + 20].try_into().unwrap()) as usize;
    let guessed = eocd - dir_size; // "the directory ends where the end record starts"
    assert_eq!(guessed - dir_offset, 76);
    assert_eq!(
        &bytes[guessed..guessed + 4],
        b"PK\x01\x02",
        "a header sits at the wrong guess"
    );
}

#[test]
fn corrupt_and_foreign_files_are_refused_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let bare = std::fs::read(fixture_path("tiny_v1_official_bare.pth")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.pth",
            bare[..bare.len() / 2].to_vec(),
            "end-of-central-directory",
        ),
        ("empty.pth", Vec::new(), "neither"),
        (
            "notes.pth",
            b"just some text, not weights".to_vec(),
            "neither",
        ),
        (
            "legacy.pth",
            vec![0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc],
            "legacy",
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = read_weights_file(&path).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(expect), "{name}: {err}");
    }
}

#[test]
fn strict_loading_names_missing_extra_and_misshapen_tensors() {
    let config = tiny_v1_config();
    let good = fixture_state_dict(&load_fixture("tiny_v1.safetensors"));
    let expect_error = |state: tresnet::weights::StateDict, needle: &str| {
        let err = TResNet::new(&config, &state, &BuildOptions::default()).unwrap_err();
        assert!(matches!(err, Error::StateDictMismatch(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains(needle), "expected `{needle}` in: {text}");
        text
    };
    let mut missing = good.clone();
    missing.remove("body.layer2.0.se.fc1.bias");
    let text = expect_error(missing, "missing:     body.layer2.0.se.fc1.bias");
    assert!(
        text.contains("1 missing, 0 unexpected, 0 with the wrong shape"),
        "{text}"
    );

    let mut extra = good.clone();
    extra.insert(
        "body.layer9.0.conv1.conv.weight",
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    expect_error(extra, "unexpected:  body.layer9.0.conv1.conv.weight [3]");

    let mut wrong = good.clone();
    wrong.insert(
        "head.fc.weight",
        Tensor::zeros((11, 256), DType::F32, &Device::Cpu).unwrap(),
    );
    expect_error(
        wrong,
        "wrong shape: head.fc.weight expected [10, 256], found [11, 256]",
    );

    // num_batches_tracked counters are optional, as in PyTorch.
    let mut no_counters = good.clone();
    let counters: Vec<String> = no_counters
        .keys()
        .filter(|k| k.ends_with("num_batches_tracked"))
        .map(str::to_string)
        .collect();
    for k in counters {
        no_counters.remove(&k);
    }
    TResNet::new(&config, &no_counters, &BuildOptions::default()).unwrap();
}

/// A directory in timm's hub layout (`model.safetensors` + `config.json`), read directly and
/// through a Hugging Face cache layout, builds the network its config describes.
#[test]
fn hub_directory_and_cache_layout_load() {
    let tensors = load_fixture("tiny_v1.safetensors");
    let state = fixture_state_dict(&tensors);
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--timm--tresnet_tiny.test");
    let snapshot = repo.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "0123abcd").unwrap();
    state
        .save_safetensors(&snapshot.join("model.safetensors"))
        .unwrap();
    std::fs::write(
        snapshot.join("config.json"),
        fixture_text("tiny_v1.config.json"),
    )
    .unwrap();

    let found = resolve_snapshot(cache.path(), "timm/tresnet_tiny.test").unwrap();
    assert_eq!(found, snapshot);
    let resolved = resolve_weights(found.to_str().unwrap()).unwrap();
    assert_eq!(resolved.weights.format, WeightsFormat::Safetensors);
    assert!(resolved.hub_config.is_some());
    let config = model_config(None, Some(&resolved), None).unwrap();
    assert_eq!(config, tiny_v1_config());
    // --backbone naming the same variant keeps the config's model_args.
    assert_eq!(
        model_config(Some("tresnet_m"), Some(&resolved), None).unwrap(),
        config
    );
    let model = TResNet::new(
        &config,
        &resolved.weights.state_dict,
        &BuildOptions::default(),
    )
    .unwrap();
    let diff = (model.forward(&tensors["input0"]).unwrap() - &tensors["out0.logits"]).unwrap();
    assert!(
        diff.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            < 1e-5
    );

    let err = resolve_weights("timm/not_downloaded_anywhere")
        .unwrap_err()
        .to_string();
    assert!(err.contains("timm/not_downloaded_anywhere"), "{err}");
}

#[test]
fn num_classes_comes_from_the_checkpoint_unless_given() {
    let resolved = resolve_weights(fixture_path("tiny_v1_official.pth").to_str().unwrap()).unwrap();
    assert_eq!(
        model_config(None, Some(&resolved), None)
            .unwrap()
            .num_classes,
        10
    );
    assert_eq!(
        model_config(None, Some(&resolved), Some(3))
            .unwrap()
            .num_classes,
        3
    );
    // A --backbone that contradicts the weights is refused with both architectures named.
    let err = model_config(Some("tresnet_m"), Some(&resolved), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tiny_v1_official.pth")
            && err.contains("[3, 4, 11, 3]")
            && err.contains("[1, 2, 2, 1]"),
        "{err}"
    );
    // The ML-Decoder repository calls its v2 bodies by v1 names; the weights decide.
    let v2 = resolve_weights(fixture_path("tiny_mld_coco.pth").to_str().unwrap()).unwrap();
    let named = model_config(Some("tresnet_l"), Some(&v2), None).unwrap();
    assert_eq!((named.layers, named.v2), ([1, 1, 2, 1], true));
}
