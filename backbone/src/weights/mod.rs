//! Weights: reading every supported format into a timm-named [`StateDict`], checking it against the
//! architecture, and generating seeded random weights.
//!
//! | source | reader |
//! |---|---|
//! | `.safetensors` (timm hub, this project's bundles) | [`read_safetensors`] (memory-mapped) |
//! | `torch.save` zip: bare state dict, `{'model': …}`, `{'state_dict': …}` | [`read_pth`] |
//! | official MIIL names (TResNet / ASL / ML-Decoder repos) | [`translate_official`] |
//! | a directory `model.safetensors` + `config.json` | [`resolve_weights`] |
//! | a hub id in the local Hugging Face cache | [`resolve_weights`] via [`resolve_snapshot`] |

mod checkpoint;
mod hub_cache;
mod infer_config;
mod official_naming;
mod pth;
mod random_init;
mod safetensors_file;
mod source;
mod state_dict;
mod strict_check;

pub use checkpoint::{LoadedWeights, WeightsFormat, read_weights_file};
pub use hub_cache::{hub_cache_dir, looks_like_hub_id, resolve_snapshot};
pub use infer_config::infer_config;
pub use official_naming::{Naming, detect_naming, official_to_timm_key, translate_official};
pub use pth::{CheckpointLimits, PickleLimits, PthCheckpoint, StoredZip, read_pth, read_pth_with};
pub use random_init::random_state_dict;
pub(crate) use random_init::{normal, uniform};
pub use safetensors_file::read_safetensors;
pub use source::{ResolvedWeights, model_config, resolve_weights};
pub use state_dict::StateDict;
pub use strict_check::{StateDictMismatch, check_state_dict};
