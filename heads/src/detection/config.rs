//! The detector's settings: FPN width, head tower depth, FCOS target assignment and decoding.
//! Stored in a detection bundle's `config.json` under `"detector"`.

use serde::{Deserialize, Serialize};

use crate::error::{HeadsError, Result};

/// An FPN + FCOS detector on TResNet's stride-8/16/32 maps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Number of object classes (no background class: FCOS scores each class with a sigmoid).
    pub num_classes: usize,
    /// Channels of every FPN level and of the head towers (FCOS: 256).
    pub fpn_channels: usize,
    /// Add P6 and P7 (stride 64 and 128) by stride-2 3×3 convs on P5, as FCOS does on COCO.
    pub extra_levels: bool,
    /// 3×3 conv + GroupNorm + ReLU layers in each of the two towers (FCOS: 4).
    pub tower_convs: usize,
    /// GroupNorm groups in the towers (FCOS: 32); must divide `fpn_channels`.
    pub group_norm_groups: usize,
    /// Prior probability of the classification bias at initialisation (FCOS: 0.01).
    pub prior_probability: f64,
    /// Object-size ranges, one `[low, high]` per level in pixels of the network input: a location
    /// of that level is assigned an object only if its largest regression distance falls in it.
    /// An unbounded `high` is written `null` in JSON (`inf` in TOML).
    #[serde(
        serialize_with = "serialize_ranges",
        deserialize_with = "deserialize_ranges"
    )]
    pub size_ranges: Vec<[f32; 2]>,
    /// Center sampling radius in strides (FCOS: 1.5; 0 turns center sampling off).
    pub center_sampling_radius: f32,
    /// Focal loss α.
    pub focal_alpha: f32,
    /// Focal loss γ.
    pub focal_gamma: f32,
    /// Decoding: classification score threshold before NMS (FCOS: 0.05).
    pub score_threshold: f32,
    /// Decoding: candidates kept per level before NMS (FCOS: 1000).
    pub pre_nms_top_k: usize,
    /// Decoding: IoU above which class-wise NMS suppresses a box (FCOS: 0.6).
    pub nms_iou: f32,
    /// Decoding: detections kept per image (COCO: 100).
    pub max_detections: usize,
}

/// JSON has no infinity: an unbounded end is written `null`.
fn serialize_ranges<S: serde::Serializer>(
    ranges: &[[f32; 2]],
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    let finite = |v: f32| v.is_finite().then_some(v);
    let written: Vec<[Option<f32>; 2]> = ranges
        .iter()
        .map(|[lo, hi]| [finite(*lo), finite(*hi)])
        .collect();
    written.serialize(serializer)
}

fn deserialize_ranges<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Vec<[f32; 2]>, D::Error> {
    let read: Vec<[Option<f32>; 2]> = Vec::deserialize(deserializer)?;
    Ok(read
        .into_iter()
        .map(|[lo, hi]| [lo.unwrap_or(0.0), hi.unwrap_or(f32::INFINITY)])
        .collect())
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            num_classes: 80,
            fpn_channels: 256,
            extra_levels: true,
            tower_convs: 4,
            group_norm_groups: 32,
            prior_probability: 0.01,
            size_ranges: vec![
                [0.0, 64.0],
                [64.0, 128.0],
                [128.0, 256.0],
                [256.0, 512.0],
                [512.0, f32::INFINITY],
            ],
            center_sampling_radius: 1.5,
            focal_alpha: 0.25,
            focal_gamma: 2.0,
            score_threshold: 0.05,
            pre_nms_top_k: 1000,
            nms_iou: 0.6,
            max_detections: 100,
        }
    }
}

impl DetectorConfig {
    /// A small detector for small inputs: three levels (P3–P5), `channels` wide, `tower_convs`
    /// deep, size ranges `[0, 32] [32, 64] [64, ∞)`.
    pub fn small(num_classes: usize, channels: usize, tower_convs: usize) -> Self {
        Self {
            num_classes,
            fpn_channels: channels,
            extra_levels: false,
            tower_convs,
            group_norm_groups: (channels / 8).clamp(1, 32),
            size_ranges: vec![[0.0, 32.0], [32.0, 64.0], [64.0, f32::INFINITY]],
            ..Self::default()
        }
    }

    /// Strides of the output levels: 8, 16, 32 (and 64, 128 with extra levels).
    pub fn strides(&self) -> Vec<usize> {
        let mut s = vec![8, 16, 32];
        if self.extra_levels {
            s.extend([64, 128]);
        }
        s
    }

    /// Checks the settings agree with each other.
    pub fn validate(&self) -> Result<()> {
        let levels = self.strides().len();
        let fail = |m: String| Err(HeadsError::Invalid(format!("detector config: {m}")));
        if self.num_classes == 0 {
            return fail("num_classes must be at least 1".into());
        }
        if self.fpn_channels == 0 || self.group_norm_groups == 0 {
            return fail("fpn_channels and group_norm_groups must be positive".into());
        }
        if !self.fpn_channels.is_multiple_of(self.group_norm_groups) {
            return fail(format!(
                "group_norm_groups {} does not divide fpn_channels {}",
                self.group_norm_groups, self.fpn_channels
            ));
        }
        if self.size_ranges.len() != levels {
            return fail(format!(
                "{} size ranges for {levels} levels (extra_levels = {})",
                self.size_ranges.len(),
                self.extra_levels
            ));
        }
        if self
            .size_ranges
            .iter()
            .any(|[lo, hi]| lo.partial_cmp(hi) != Some(std::cmp::Ordering::Less) || *lo < 0.0)
        {
            return fail(format!(
                "size ranges must be increasing pairs: {:?}",
                self.size_ranges
            ));
        }
        if !(0.0..1.0).contains(&self.prior_probability) || self.prior_probability == 0.0 {
            return fail("prior_probability must be in (0, 1)".into());
        }
        if !(0.0..=1.0).contains(&self.nms_iou) {
            return fail("nms_iou must be in [0, 1]".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbounded_ranges_survive_json_and_toml_round_trips() {
        let config = DetectorConfig::default();
        let text = serde_json::to_string(&config).unwrap();
        assert!(text.contains("[512.0,null]"), "{text}");
        let back: DetectorConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, config);
        let small: DetectorConfig = serde_json::from_str(
            r#"{"num_classes": 3, "size_ranges": [[0, 32], [32, 64], [64, 1e9]]}"#,
        )
        .unwrap();
        assert_eq!(small.size_ranges[2], [64.0, 1e9]);
        assert!(small.validate().is_err(), "5 levels by default, 3 ranges");
        let err = serde_json::from_str::<DetectorConfig>(r#"{"fpn_channel": 3}"#).unwrap_err();
        assert!(err.to_string().contains("fpn_channel"), "{err}");
    }
}
