//! The ML-Decoder repository names its head tensors `decoder.embed_standart.*`,
//! `decoder.query_embed.*`, `decoder.duplicate_pooling*`; timm drops that `decoder.` (keeping it
//! only for `decoder.layers.*`). This is the one place that translates.

use tresnet::weights::StateDict;

/// Head tensors (keys relative to `head.`) under timm's names, whichever naming they came in.
pub fn to_timm_ml_decoder_names(state: StateDict) -> StateDict {
    state
        .into_iter()
        .map(|(key, tensor)| {
            let renamed = match key.strip_prefix("decoder.") {
                Some(rest) if !rest.starts_with("layers.") => rest.to_string(),
                _ => key,
            };
            (renamed, tensor)
        })
        .collect()
}

/// Whether head tensors look like an ML-Decoder's (either naming).
pub fn is_ml_decoder(state: &StateDict) -> bool {
    state.keys().any(|k| k.ends_with("query_embed.weight"))
}
