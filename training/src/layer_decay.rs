//! Layer-wise learning-rate decay: each parameter's learning rate scaled by
//! `decay^(L − layer)`, so the stem moves least and the classifier at the full rate. Layers are
//! counted as timm's TResNet groups them: the stem (`body.conv1`) is layer 0, every residual
//! block its own layer in network order (`body.layer<s>.<b>`, its shortcut included), and all
//! else (the head) layer `L` = blocks + 1.

use std::collections::HashMap;

/// The learning-rate scale of every name in `names` for a TResNet with `layers` blocks per
/// stage.
pub fn layer_decay_scales<'a>(
    names: impl IntoIterator<Item = &'a str>,
    layers: [usize; 4],
    decay: f64,
) -> HashMap<String, f64> {
    let blocks: usize = layers.iter().sum();
    let last = blocks + 1;
    names
        .into_iter()
        .map(|name| {
            let layer = layer_of(name, &layers).unwrap_or(last);
            (
                name.to_string(),
                decay.powi((last - layer.min(last)) as i32),
            )
        })
        .collect()
}

/// The layer of a parameter in the stem or a block; `None` for the rest (the head).
fn layer_of(name: &str, layers: &[usize; 4]) -> Option<usize> {
    if name.starts_with("body.conv1.") {
        return Some(0);
    }
    let rest = name.strip_prefix("body.layer")?;
    let (stage, rest) = rest.split_once('.')?;
    let (block, _) = rest.split_once('.')?;
    let (stage, block): (usize, usize) = (stage.parse().ok()?, block.parse().ok()?);
    if !(1..=4).contains(&stage) || block >= layers[stage - 1] {
        return None;
    }
    Some(1 + layers[..stage - 1].iter().sum::<usize>() + block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stem_blocks_and_head_get_their_layers() {
        let layers = [1, 2, 1, 1];
        assert_eq!(layer_of("body.conv1.conv.weight", &layers), Some(0));
        assert_eq!(
            layer_of("body.layer1.0.conv1.conv.weight", &layers),
            Some(1)
        );
        assert_eq!(layer_of("body.layer2.1.se.fc1.bias", &layers), Some(3));
        assert_eq!(
            layer_of("body.layer4.0.downsample.1.conv.weight", &layers),
            Some(5)
        );
        assert_eq!(layer_of("head.fc.weight", &layers), None);
        // Names outside the layout are the head's, never an out-of-range index.
        assert_eq!(layer_of("body.layer9.0.conv1.conv.weight", &layers), None);
        assert_eq!(layer_of("body.layer2.7.conv1.conv.weight", &layers), None);
    }
}
