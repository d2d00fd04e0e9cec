//! State-dict keys, shapes and parameter counts of the four named variants against timm's
//! manifests (`tests/fixtures/manifest_<arch>.json`).

use serde_json::Value;
use tresnet::manifest::EntryKind;
use tresnet::pretrained::{PRETRAINED_TAGS, find_pretrained};
use tresnet::{Layout, Manifest, TResNetConfig};
use tresnet_tests::fixture_text;

fn check_variant(arch: &str) {
    let reference: Value =
        serde_json::from_str(&fixture_text(&format!("manifest_{arch}.json"))).unwrap();
    let config = TResNetConfig::variant(arch).unwrap();
    let layout = Layout::new(&config).unwrap();
    let manifest = Manifest::of(&layout);

    let expected: Vec<(String, Vec<usize>)> = reference["tensors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let shape = v
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (k.clone(), shape)
        })
        .collect();
    let ours: Vec<(String, Vec<usize>)> = manifest
        .entries
        .iter()
        .map(|e| (e.key.clone(), e.shape.clone()))
        .collect();
    assert_eq!(
        ours.len(),
        expected.len(),
        "{arch}: number of state-dict tensors"
    );
    for (i, (a, b)) in ours.iter().zip(&expected).enumerate() {
        assert_eq!(a, b, "{arch}: state-dict entry {i} (order, name and shape)");
    }
    let dtypes = reference["dtypes"].as_object().unwrap();
    for entry in &manifest.entries {
        let want = if entry.kind == EntryKind::BatchCounter {
            "int64"
        } else {
            "float32"
        };
        assert_eq!(dtypes[&entry.key], want, "{arch}: dtype of {}", entry.key);
    }
    assert_eq!(
        manifest.param_count() as u64,
        reference["param_count"].as_u64().unwrap(),
        "{arch}"
    );
    assert_eq!(
        manifest.state_dict_numel() as u64,
        reference["state_dict_numel"].as_u64().unwrap(),
        "{arch}"
    );
    assert_eq!(
        layout.num_features as u64,
        reference["num_features"].as_u64().unwrap()
    );
    let conv_units = layout.conv_units().len() as u64;
    assert_eq!(
        conv_units,
        reference["num_bn_layers"].as_u64().unwrap(),
        "{arch}: BN layers"
    );
    let se_convs: u64 = layout
        .stages
        .iter()
        .flat_map(|s| &s.blocks)
        .filter(|b| b.squeeze_excite.is_some())
        .count() as u64
        * 2;
    assert_eq!(
        conv_units + se_convs,
        reference["num_conv_layers"].as_u64().unwrap(),
        "{arch}: convs"
    );
    let blurs = layout.conv_units().iter().filter(|c| c.anti_alias).count() as u64;
    assert_eq!(
        blurs,
        reference["num_blurpool_layers"].as_u64().unwrap(),
        "{arch}: blur layers"
    );
    // feature_info: stages 1-4 with channels and reduction.
    let info = reference["feature_info"].as_array().unwrap();
    for (stage, fi) in layout.stages.iter().zip(&info[1..]) {
        assert_eq!(
            stage.out_channels as u64,
            fi["num_chs"].as_u64().unwrap(),
            "{arch} {}",
            stage.name
        );
        assert_eq!(
            stage.stride as u64,
            fi["reduction"].as_u64().unwrap(),
            "{arch} {}",
            stage.name
        );
        assert_eq!(
            format!("body.{}", stage.name),
            fi["module"].as_str().unwrap()
        );
    }
    // Published tags and their preprocessing.
    let tags = reference["pretrained_tags"].as_object().unwrap();
    let ours: Vec<&str> = PRETRAINED_TAGS
        .iter()
        .filter(|t| t.architecture() == arch)
        .map(|t| t.name)
        .collect();
    assert_eq!(ours.len(), tags.len(), "{arch}: tags {ours:?}");
    for (name, cfg) in tags {
        let tag = find_pretrained(name).unwrap_or_else(|| panic!("tag {name} unknown"));
        let ours = tag.pretrained_cfg();
        for field in [
            "input_size",
            "interpolation",
            "crop_pct",
            "crop_mode",
            "mean",
            "std",
            "num_classes",
            "pool_size",
        ] {
            assert_eq!(ours[field], cfg[field], "{name}.{field}");
        }
        assert_eq!(tag.hub_id(), cfg["hf_hub_id"].as_str().unwrap());
    }
    let default = find_pretrained(arch).unwrap();
    assert_eq!(
        default.name,
        format!(
            "{arch}.{}",
            reference["default_pretrained_tag"].as_str().unwrap()
        )
    );
}

#[test]
fn tresnet_m_manifest() {
    check_variant("tresnet_m");
}

#[test]
fn tresnet_l_manifest() {
    check_variant("tresnet_l");
}

#[test]
fn tresnet_xl_manifest() {
    check_variant("tresnet_xl");
}

#[test]
fn tresnet_v2_l_manifest() {
    check_variant("tresnet_v2_l");
}

#[test]
fn parameter_counts_with_other_class_counts() {
    // TRESNET_SPEC §1.3: the same variants with the 11221 ImageNet-21k-P classes.
    for (arch, params) in [
        ("tresnet_m", 52_331_861),
        ("tresnet_l", 80_856_949),
        ("tresnet_xl", 105_593_441),
        ("tresnet_v2_l", 67_117_653),
    ] {
        let config = TResNetConfig::variant(arch)
            .unwrap()
            .with_num_classes(11221);
        assert_eq!(
            Manifest::of(&Layout::new(&config).unwrap()).param_count(),
            params,
            "{arch}"
        );
    }
    let headless = TResNetConfig::variant("tresnet_m")
        .unwrap()
        .with_num_classes(0);
    let manifest = Manifest::of(&Layout::new(&headless).unwrap());
    assert_eq!(manifest.param_count(), 31_389_032 - 2048 * 1000 - 1000);
    assert!(manifest.get("head.fc.weight").is_none());
}
