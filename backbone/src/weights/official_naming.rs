//! The one place where the official Alibaba-MIIL naming (TResNet, ASL, ML-Decoder repositories) is
//! translated to timm's.
//!
//! Official checkpoints build every conv + norm as `Sequential(Conv2d, InPlaceABN)`, so their keys
//! read `conv1.0.weight` / `conv1.1.running_mean`, or `conv1.0.0.*` / `conv1.0.1.*` where an
//! anti-aliasing layer follows, and `downsample.1.0.*` / `downsample.1.1.*` for shortcuts. timm
//! names the same tensors `conv1.conv.*` / `conv1.bn.*` and `downsample.1.conv.*` /
//! `downsample.1.bn.*`. InPlaceABN uses `|gamma| + eps` as its effective scale, so each translated
//! `bn.weight` becomes `|w| + 1e-5` (TRESNET_SPEC §2, §3.3).

use candle_core::{DType, Tensor};

use super::StateDict;
use crate::error::{Error, Result};

/// InPlaceABN's epsilon, added to `|gamma|`.
const INPLACE_ABN_EPS: f64 = 1e-5;

/// Which naming a state dict uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// timm's names (timm hub weights, this project's bundles).
    Timm,
    /// The official MIIL names with InPlaceABN weights.
    Official,
}

/// What a key's segments say about its naming.
fn classify(key: &str) -> Option<Naming> {
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let next = parts.get(i + 1).copied();
        if is_conv_segment(part) {
            match next {
                Some("conv" | "bn" | "aa") => return Some(Naming::Timm),
                Some("0" | "1") => return Some(Naming::Official),
                _ => {}
            }
        }
        if *part == "downsample" && next.is_some_and(is_index) {
            match parts.get(i + 2).copied() {
                Some("conv" | "bn") => return Some(Naming::Timm),
                Some("0" | "1") => return Some(Naming::Official),
                _ => {}
            }
        }
    }
    None
}

fn is_conv_segment(part: &str) -> bool {
    part.len() > 4 && part.starts_with("conv") && part[4..].bytes().all(|b| b.is_ascii_digit())
}

fn is_index(part: &str) -> bool {
    !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())
}

/// Detects the naming of a set of keys. Keys that say nothing (heads, SE) are ignored; a set with
/// neither kind of conv key is taken as timm's.
pub fn detect_naming<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Naming> {
    let (mut timm, mut official) = (None, None);
    for key in keys {
        match classify(key) {
            Some(Naming::Timm) => timm = timm.or(Some(key.to_string())),
            Some(Naming::Official) => official = official.or(Some(key.to_string())),
            None => {}
        }
    }
    match (timm, official) {
        (Some(t), Some(o)) => Err(Error::Config(format!(
            "state dict mixes timm names (`{t}`) and official MIIL names (`{o}`)"
        ))),
        (None, Some(_)) => Ok(Naming::Official),
        _ => Ok(Naming::Timm),
    }
}

/// The timm name of an official key (keys without conv/downsample segments are unchanged).
pub fn official_to_timm_key(key: &str) -> String {
    let parts: Vec<&str> = key.split('.').collect();
    let mut out: Vec<&str> = Vec::with_capacity(parts.len());
    let mut i = 0;
    while i < parts.len() {
        let part = parts[i];
        if is_conv_segment(part) {
            out.push(part);
            match (parts.get(i + 1).copied(), parts.get(i + 2).copied()) {
                // conv followed by anti-aliasing: `convN.0.0` is the conv, `convN.0.1` the norm.
                (Some("0"), Some("0")) => {
                    out.push("conv");
                    i += 3;
                }
                (Some("0"), Some("1")) => {
                    out.push("bn");
                    i += 3;
                }
                (Some("0"), _) => {
                    out.push("conv");
                    i += 2;
                }
                (Some("1"), _) => {
                    out.push("bn");
                    i += 2;
                }
                _ => i += 1,
            }
            continue;
        }
        if part == "downsample"
            && let Some(index) = parts.get(i + 1).copied().filter(|p| is_index(p))
        {
            out.push(part);
            out.push(index);
            match parts.get(i + 2).copied() {
                Some("0") => {
                    out.push("conv");
                    i += 3;
                }
                Some("1") => {
                    out.push("bn");
                    i += 3;
                }
                _ => i += 2,
            }
            continue;
        }
        out.push(part);
        i += 1;
    }
    out.join(".")
}

/// Translates an official-naming state dict to timm's: renames keys, turns InPlaceABN gammas into
/// plain batch-norm gammas (`|w| + 1e-5`), and checks and drops stored anti-aliasing filters
/// (non-JIT official models keep them as `….filt` buffers; timm recomputes them).
pub fn translate_official(state: StateDict) -> Result<StateDict> {
    let mut out = StateDict::new();
    for (key, tensor) in state {
        if key.ends_with(".filt") {
            check_blur_filter(&key, &tensor)?;
            continue;
        }
        let new_key = official_to_timm_key(&key);
        // Computed in the stored dtype, as timm's `v.abs().add(1e-5)`, so results agree bit for bit.
        let tensor = if new_key.ends_with("bn.weight") {
            tensor.abs()?.affine(1.0, INPLACE_ABN_EPS)?
        } else {
            tensor
        };
        out.insert(new_key, tensor);
    }
    Ok(out)
}

/// A stored blur filter must be the fixed `[1,2,1]ᵀ[1,2,1] / 16` kernel per channel.
fn check_blur_filter(key: &str, tensor: &Tensor) -> Result<()> {
    let dims = tensor.dims();
    let taps = [1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0].map(|v: f32| v / 16.0);
    let ok = dims.len() == 4
        && dims[1] == 1
        && dims[2] == 3
        && dims[3] == 3
        && tensor
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .chunks(9)
            .all(|c| c.iter().zip(&taps).all(|(a, b)| (a - b).abs() < 1e-3));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "`{key}` is not TResNet's fixed [1,2,1]x[1,2,1]/16 anti-aliasing filter (shape {dims:?})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_each_official_pattern() {
        let cases = [
            ("body.conv1.0.weight", "body.conv1.conv.weight"),
            ("body.conv1.1.running_var", "body.conv1.bn.running_var"),
            (
                "body.layer2.0.conv1.0.0.weight",
                "body.layer2.0.conv1.conv.weight",
            ),
            (
                "body.layer2.0.conv1.0.1.bias",
                "body.layer2.0.conv1.bn.bias",
            ),
            (
                "body.layer3.0.conv2.0.1.weight",
                "body.layer3.0.conv2.bn.weight",
            ),
            (
                "body.layer2.0.downsample.1.0.weight",
                "body.layer2.0.downsample.1.conv.weight",
            ),
            (
                "body.layer1.0.downsample.0.1.num_batches_tracked",
                "body.layer1.0.downsample.0.bn.num_batches_tracked",
            ),
            ("body.layer1.0.se.fc1.weight", "body.layer1.0.se.fc1.weight"),
            ("head.fc.bias", "head.fc.bias"),
        ];
        for (official, timm) in cases {
            assert_eq!(official_to_timm_key(official), timm, "{official}");
        }
    }

    #[test]
    fn detects_naming_and_rejects_mixtures() {
        assert_eq!(
            detect_naming(["body.conv1.0.weight", "head.fc.weight"]).unwrap(),
            Naming::Official
        );
        assert_eq!(
            detect_naming(["body.conv1.conv.weight", "body.layer1.0.se.fc1.bias"]).unwrap(),
            Naming::Timm
        );
        assert!(detect_naming(["body.conv1.conv.weight", "body.layer1.0.conv1.0.weight"]).is_err());
    }
}
