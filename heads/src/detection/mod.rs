//! Object detection on TResNet features: an FPN over the stride-8/16/32 stages and an
//! anchor-free FCOS head (focal loss, GIoU box loss, centerness), with FCOS target assignment
//! and decoding to COCO-style detections.

mod box_geometry;
mod config;
mod detection_head;
mod fcos_head;
mod fcos_loss;
mod fcos_targets;
mod fpn;
mod nms;
mod parameters;
mod postprocess;

pub use box_geometry::{
    BoxXyxy, box_area, box_iou, centerness, decode_ltrb, encode_ltrb, generalized_iou, xyxy_to_xywh,
};
pub use config::DetectorConfig;
pub use detection_head::{DetectionHead, pyramid_channels};
pub use fcos_head::{FcosHead, FcosOutput, LevelOutput};
pub use fcos_loss::{FcosLoss, fcos_loss, flatten_levels, focal_loss_term, giou_loss_ltrb};
pub use fcos_targets::{FcosTargets, GroundTruthBox, LevelShape, assign_fcos_targets};
pub use fpn::{Fpn, upsample_nearest_2x};
pub use nms::{class_wise_nms, nms};
pub use parameters::{
    ParameterSpec, check_detector_state, detector_parameters, random_detector_state,
};
pub use postprocess::{BoxDetection, decode_detections};
