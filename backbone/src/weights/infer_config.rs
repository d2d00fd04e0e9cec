//! Reading the architecture off a timm-named state dict, for checkpoints that come without a
//! `config.json` (the official `.pth` files).

use super::StateDict;
use crate::config::{GlobalPool, TResNetConfig};
use crate::error::{Error, Result};

/// The configuration whose manifest a state dict fits: stage depths from the block indices, width
/// from the stem, v2 from the first stage's block type, classes from `head.fc`.
pub fn infer_config(state: &StateDict) -> Result<TResNetConfig> {
    let stem = state.get("body.conv1.conv.weight").ok_or_else(|| {
        Error::Config(
            "cannot tell the architecture: no `body.conv1.conv.weight` (is this a TResNet \
             checkpoint? give --backbone to be explicit)"
                .into(),
        )
    })?;
    let dims = stem.dims();
    if dims.len() != 4 || dims[1] % 16 != 0 {
        return Err(Error::Config(format!(
            "`body.conv1.conv.weight` has shape {dims:?}; a TResNet stem is [planes, 16*in_chans, 3, 3]"
        )));
    }
    let planes = dims[0];
    let mut layers = [0usize; 4];
    for key in state.keys() {
        for (stage, count) in layers.iter_mut().enumerate() {
            let prefix = format!("body.layer{}.", stage + 1);
            if let Some(rest) = key.strip_prefix(&prefix)
                && let Some(Ok(block)) = rest.split('.').next().map(str::parse::<usize>)
            {
                *count = (*count).max(block + 1);
            }
        }
    }
    let v2 = state.contains("body.layer1.0.conv3.conv.weight");
    let num_features = planes * 8 * 4;
    let (num_classes, global_pool) = match state.get("head.fc.weight").map(|t| t.dims()) {
        Some([classes, width]) if *width == 2 * num_features => (*classes, GlobalPool::CatAvgMax),
        Some([classes, _]) => (*classes, GlobalPool::Fast),
        _ => (0, GlobalPool::Fast),
    };
    let config = TResNetConfig {
        layers,
        in_chans: dims[1] / 16,
        num_classes,
        // int(64 * planes / 64) == planes exactly: planes / 64 is a dyadic fraction.
        width_factor: planes as f64 / 64.0,
        v2,
        global_pool,
        stem_leaky_slope: 0.01,
        block_leaky_slope: 1e-3,
    };
    config.validate()?;
    Ok(config)
}
