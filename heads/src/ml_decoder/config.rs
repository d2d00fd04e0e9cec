//! ML-Decoder's hyper-parameters, derived as the reference derives them (TRESNET_SPEC §6.1).

use tresnet::weights::StateDict;

use crate::error::{HeadsError, Result};

/// The shape of an ML-Decoder head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlDecoderConfig {
    /// Output classes.
    pub num_classes: usize,
    /// Queries K (one per class in "full decoding", fewer with group decoding).
    pub num_groups: usize,
    /// Decoder width E.
    pub embed_dim: usize,
    /// Channels C of the feature map it reads.
    pub in_features: usize,
    /// Attention heads (8 in every published model).
    pub num_heads: usize,
    /// Feed-forward width (2048).
    pub ffn_dim: usize,
}

impl MlDecoderConfig {
    /// As `MLDecoder(num_classes, num_of_groups, decoder_embedding, initial_num_features)`:
    /// K = 100 when `num_of_groups < 0`, capped at `num_classes`; E = 768 when
    /// `decoder_embedding < 0`.
    pub fn new(
        num_classes: usize,
        num_of_groups: i64,
        decoder_embedding: i64,
        in_features: usize,
    ) -> Self {
        let groups = if num_of_groups < 0 {
            100
        } else {
            num_of_groups as usize
        };
        Self {
            num_classes,
            num_groups: groups.min(num_classes),
            embed_dim: if decoder_embedding < 0 {
                768
            } else {
                decoder_embedding as usize
            },
            in_features,
            num_heads: 8,
            ffn_dim: 2048,
        }
    }

    /// Outputs per query: `int(num_classes / K + 0.999)`.
    pub fn duplicate_factor(&self) -> usize {
        (self.num_classes as f64 / self.num_groups as f64 + 0.999) as usize
    }

    /// Reads the configuration off timm-named ML-Decoder tensors (keys relative to the head).
    pub fn from_state_dict(state: &StateDict) -> Result<Self> {
        let dims = |key: &str| -> Result<Vec<usize>> {
            state
                .get(key)
                .map(|t| t.dims().to_vec())
                .ok_or_else(|| HeadsError::Invalid(format!("ML-Decoder weights lack `{key}`")))
        };
        let embed = dims("embed_standart.weight")?;
        let query = dims("query_embed.weight")?;
        let bias = dims("duplicate_pooling_bias")?;
        let ffn = dims("decoder.layers.0.linear1.weight")?;
        let (&[e, c], &[k, _], &[n], &[f, _]) = (&embed[..], &query[..], &bias[..], &ffn[..])
        else {
            return Err(HeadsError::Invalid(
                "ML-Decoder tensors have unexpected ranks".into(),
            ));
        };
        if e == 0 || e % 8 != 0 {
            return Err(HeadsError::Invalid(format!(
                "decoder width {e} is not a positive multiple of 8 heads"
            )));
        }
        if n == 0 || k == 0 || k > n {
            return Err(HeadsError::Invalid(format!(
                "ML-Decoder with {k} queries for {n} classes: needs 1 ≤ queries ≤ classes \
                 (`query_embed.weight` {query:?}, `duplicate_pooling_bias` {bias:?})"
            )));
        }
        if c == 0 || f == 0 {
            return Err(HeadsError::Invalid(format!(
                "ML-Decoder with {c} input channels and a {f}-wide feed-forward layer"
            )));
        }
        Ok(Self {
            num_classes: n,
            num_groups: k,
            embed_dim: e,
            in_features: c,
            num_heads: 8,
            ffn_dim: f,
        })
    }
}
