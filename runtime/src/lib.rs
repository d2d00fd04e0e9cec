//! # tresnet-runtime
//!
//! Running TResNet models: a model bundle (network, preprocessing, labels, thresholds) loaded
//! from a weights file, a bundle directory, a cached hub id or the embedded default; its
//! `config.json` read and written by one type; batched classification and detection passes over
//! images with the loader decoding ahead; progress lines; safetensors outputs. Loading takes
//! plain options, so libraries and tools other than our command-line apps can use it.

pub mod bundle_config;
pub mod checkpoint_protocol;
pub mod detection_inference;
pub mod detection_state;
pub mod detector;
pub mod image_inputs;
pub mod inference;
pub mod model_bundle;
pub mod progress;
pub mod safetensors_output;
pub mod task_kind;
pub mod timm_export;

pub use bundle_config::{BundleConfig, BundleSettings, HeadName};
pub use detector::Detector;
pub use model_bundle::{
    BundleNetwork, ModelBundle, ModelSpec, PreprocessOverrides, load_bundle, load_embedded_detector,
};
pub use progress::{Progress, format_duration};
pub use task_kind::TaskKind;
