//! ML-Decoder: the query-based classification head of the MIIL ML-Decoder paper, as timm and the
//! ML-Decoder repository implement it (TRESNET_SPEC §6), loadable in both namings.

mod attention;
mod config;
mod decoder_layer;
mod naming;

pub use config::MlDecoderConfig;
pub use naming::{is_ml_decoder, to_timm_ml_decoder_names};

use candle_core::{DType, Device, Tensor};
use tresnet::layers::{LayerWeights, Linear, matmul};
use tresnet::manifest::{EntryKind, Manifest, ManifestEntry};
use tresnet::weights::{StateDict, check_state_dict};

use crate::error::Result;
use decoder_layer::DecoderLayer;

/// The head: spatial tokens → `relu(embed)` memory; class queries attend to it through one
/// decoder layer; a per-query linear map ("group FC") gives `duplicate_factor` logits each, of
/// which the first `num_classes` are kept: `(B, C, H, W)` → `(B, num_classes)`.
#[derive(Debug, Clone)]
pub struct MlDecoder {
    config: MlDecoderConfig,
    embed: Linear,
    /// `(K, E)`.
    queries: Tensor,
    layer: DecoderLayer,
    /// `(K, E, g)`.
    pooling: Tensor,
    /// `(1, num_classes)`.
    pooling_bias: Tensor,
}

/// The tensors an ML-Decoder of `config` holds (timm names, relative to the head).
pub fn ml_decoder_manifest(config: &MlDecoderConfig) -> Manifest {
    let (e, c, k, f, n) = (
        config.embed_dim,
        config.in_features,
        config.num_groups,
        config.ffn_dim,
        config.num_classes,
    );
    let l = "decoder.layers.0";
    let mut entries = vec![
        ("embed_standart.weight".to_string(), vec![e, c]),
        ("embed_standart.bias".into(), vec![e]),
        ("query_embed.weight".into(), vec![k, e]),
        (
            "duplicate_pooling".into(),
            vec![k, e, config.duplicate_factor()],
        ),
        ("duplicate_pooling_bias".into(), vec![n]),
        (format!("{l}.multihead_attn.in_proj_weight"), vec![3 * e, e]),
        (format!("{l}.multihead_attn.in_proj_bias"), vec![3 * e]),
        (format!("{l}.multihead_attn.out_proj.weight"), vec![e, e]),
        (format!("{l}.multihead_attn.out_proj.bias"), vec![e]),
        (format!("{l}.linear1.weight"), vec![f, e]),
        (format!("{l}.linear1.bias"), vec![f]),
        (format!("{l}.linear2.weight"), vec![e, f]),
        (format!("{l}.linear2.bias"), vec![e]),
    ];
    for i in 1..=3 {
        entries.push((format!("{l}.norm{i}.weight"), vec![e]));
        entries.push((format!("{l}.norm{i}.bias"), vec![e]));
    }
    Manifest {
        entries: entries
            .into_iter()
            .map(|(key, shape)| ManifestEntry {
                key,
                shape,
                kind: EntryKind::Parameter,
            })
            .collect(),
    }
}

impl MlDecoder {
    /// Builds the head from its tensors (keys relative to `head.`, either naming), strictly.
    pub fn load(state: StateDict, dtype: DType, device: &Device) -> Result<Self> {
        let state = to_timm_ml_decoder_names(state);
        let config = MlDecoderConfig::from_state_dict(&state)?;
        check_state_dict(&ml_decoder_manifest(&config), &state).map_err(tresnet::Error::from)?;
        let weights = LayerWeights::inference(&state, dtype, device, false);
        Ok(Self {
            embed: Linear::load("embed_standart", &weights)?,
            queries: weights.tensor("query_embed.weight")?,
            layer: DecoderLayer::load(
                "decoder.layers.0",
                config.embed_dim,
                config.num_heads,
                &weights,
            )?,
            pooling: weights.tensor("duplicate_pooling")?,
            pooling_bias: weights
                .tensor("duplicate_pooling_bias")?
                .reshape((1, config.num_classes))?,
            config,
        })
    }

    /// The head's shape.
    pub fn config(&self) -> &MlDecoderConfig {
        &self.config
    }

    /// Logits `(B, num_classes)` from the last feature map `(B, C, H, W)` (or tokens `(B, T, C)`).
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let tokens = match features.rank() {
            4 => features.flatten_from(2)?.transpose(1, 2)?.contiguous()?,
            _ => features.clone(),
        };
        let b = tokens.dims()[0];
        let memory = self.embed.forward_any(&tokens)?.relu()?;
        let (k, e) = self.queries.dims2()?;
        let queries = self
            .queries
            .unsqueeze(0)?
            .broadcast_as((b, k, e))?
            .contiguous()?;
        let h = self.layer.forward(&queries, &memory)?;
        // Group FC: out[b, i, :] = h[b, i, :] · P[i], batched over the K queries.
        let g = self.config.duplicate_factor();
        let grouped = matmul(&h.transpose(0, 1)?.contiguous()?, &self.pooling)?; // (K, B, g)
        let flat = grouped.transpose(0, 1)?.reshape((b, k * g))?;
        Ok(flat
            .narrow(1, 0, self.config.num_classes)?
            .broadcast_add(&self.pooling_bias)?)
    }
}
