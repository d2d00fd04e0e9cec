//! Preprocessing as data: the fields of timm's `pretrained_cfg` that decide what a model sees.

use serde_json::Value;

use crate::error::{DataError, Result};

/// How an image is brought to the input size.
/// Named `squish` and `center` (also `crop`) on the command line, as in timm's `crop_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ResizeMode {
    /// Resize straight to `H × W`, ignoring the aspect ratio (the ASL / ML-Decoder multi-label
    /// protocol; timm `crop_mode='squish'`).
    Squish,
    /// Resize the shorter side to `⌊size / crop_pct⌋`, then centre-crop `H × W` (timm's ImageNet
    /// evaluation, `crop_mode='center'`).
    #[cfg_attr(feature = "clap", value(name = "center", alias = "crop"))]
    CenterCrop,
}

impl ResizeMode {
    /// timm's `crop_mode` name (`squish`, `center`), also the flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Squish => "squish",
            Self::CenterCrop => "center",
        }
    }
}

/// The resampling filter (both antialiased when shrinking, as PIL's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// Triangle filter (PIL `BILINEAR`).
    Bilinear,
    /// Catmull-Rom cubic, a = −0.5 (PIL `BICUBIC`).
    Bicubic,
}

/// Everything needed to turn a decoded image into a network input.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Squish or resize + centre crop.
    pub resize_mode: ResizeMode,
    /// Fraction of the resized image kept by the centre crop (timm's `crop_pct`).
    pub crop_pct: f64,
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Per-channel mean subtracted after scaling to `[0, 1]` (TResNet: 0).
    pub mean: [f32; 3],
    /// Per-channel divisor after the mean (TResNet: 1).
    pub std: [f32; 3],
}

impl PreprocessConfig {
    /// timm's ImageNet evaluation for TResNet at `size`: shorter side to `⌊size / 0.875⌋`,
    /// bilinear, centre crop, inputs in `[0, 1]`.
    pub fn imagenet_eval(size: usize) -> Self {
        Self {
            height: size,
            width: size,
            resize_mode: ResizeMode::CenterCrop,
            crop_pct: 0.875,
            interpolation: Interpolation::Bilinear,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    /// The multi-label protocol (ASL, ML-Decoder): bilinear squish to `size × size`, `[0, 1]`.
    pub fn multilabel(size: usize) -> Self {
        Self {
            resize_mode: ResizeMode::Squish,
            crop_pct: 1.0,
            ..Self::imagenet_eval(size)
        }
    }

    /// Reads a timm `pretrained_cfg` object (`input_size`, `interpolation`, `crop_pct`,
    /// `crop_mode`, `mean`, `std`); this project's `resize_mode: "squish" | "crop"` is accepted
    /// too. Missing fields take timm's TResNet defaults.
    pub fn from_pretrained_cfg(cfg: &Value) -> Result<Self> {
        let mut out = Self::imagenet_eval(224);
        let bad = |field: &str, v: &Value| DataError::Config(format!("{field} = {v} is not valid"));
        if let Some(v) = cfg.get("input_size") {
            let dims: Vec<usize> = v
                .as_array()
                .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
                .ok_or_else(|| bad("input_size", v))?;
            let [_, h, w] = dims[..] else {
                return Err(bad("input_size", v));
            };
            out.height = h;
            out.width = w;
        }
        if let Some(v) = cfg.get("interpolation") {
            out.interpolation = match v.as_str() {
                Some("bilinear") => Interpolation::Bilinear,
                Some("bicubic") => Interpolation::Bicubic,
                _ => return Err(bad("interpolation", v)),
            };
        }
        if let Some(v) = cfg.get("crop_pct") {
            out.crop_pct = v
                .as_f64()
                .filter(|p| *p > 0.0 && *p <= 1.0)
                .ok_or_else(|| bad("crop_pct", v))?;
        }
        for field in ["crop_mode", "resize_mode"] {
            if let Some(v) = cfg.get(field) {
                out.resize_mode = match v.as_str() {
                    Some("center" | "crop") => ResizeMode::CenterCrop,
                    Some("squish") => ResizeMode::Squish,
                    _ => return Err(bad(field, v)),
                };
            }
        }
        for (field, target) in [("mean", &mut out.mean), ("std", &mut out.std)] {
            if let Some(v) = cfg.get(field) {
                let values: Vec<f32> = v
                    .as_array()
                    .and_then(|a| a.iter().map(|x| x.as_f64().map(|x| x as f32)).collect())
                    .ok_or_else(|| bad(field, v))?;
                *target = values.try_into().map_err(|_| bad(field, v))?;
            }
        }
        if out.std.contains(&0.0) {
            return Err(DataError::Config("std must not contain 0".into()));
        }
        if out.height == 0 || out.width == 0 {
            return Err(DataError::Config("input_size must be positive".into()));
        }
        Ok(out)
    }

    /// timm's `pretrained_cfg` fields for this preprocessing (with this project's `resize_mode`).
    pub fn to_pretrained_cfg(&self) -> Value {
        serde_json::json!({
            "input_size": [3, self.height, self.width],
            "interpolation": match self.interpolation { Interpolation::Bilinear => "bilinear", Interpolation::Bicubic => "bicubic" },
            "crop_pct": self.crop_pct,
            "crop_mode": self.resize_mode.name(),
            "mean": self.mean,
            "std": self.std,
        })
    }

    /// Same preprocessing at another square input size.
    pub fn with_input_size(mut self, size: usize) -> Self {
        self.height = size;
        self.width = size;
        self
    }
}
