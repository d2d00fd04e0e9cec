//! The state-dict manifest: every tensor name timm's `TResNet.state_dict()` holds, with its shape.

use crate::layout::{ConvNormActSpec, Layout};

/// What kind of tensor a state-dict entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A learned parameter (counted by `param_count`).
    Parameter,
    /// A batch-norm running statistic (float buffer).
    RunningStat,
    /// A batch-norm `num_batches_tracked` counter (int64 scalar; optional when loading, as in
    /// PyTorch, because older checkpoints lack it).
    BatchCounter,
}

/// One state-dict entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// timm's key, e.g. `body.layer1.0.conv1.conv.weight`.
    pub key: String,
    /// The tensor shape (empty for scalars).
    pub shape: Vec<usize>,
    /// Parameter, running statistic or counter.
    pub kind: EntryKind,
}

impl ManifestEntry {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Every tensor of a network's state dict, in timm's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// The entries in `state_dict()` order.
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// The manifest of a planned network.
    pub fn of(layout: &Layout) -> Self {
        let mut out = ManifestBuilder::default();
        out.conv_unit(&layout.stem);
        for block in layout.stages.iter().flat_map(|s| &s.blocks) {
            if let Some(shortcut) = &block.shortcut {
                out.conv_unit(&shortcut.conv);
            }
            for (index, conv) in block.convs.iter().enumerate() {
                out.conv_unit(conv);
                // timm registers `se` after conv2 in both block types (before conv3 in bottlenecks).
                if index == 1
                    && let Some(se) = &block.squeeze_excite
                {
                    let p = &se.prefix;
                    out.param(
                        format!("{p}.fc1.weight"),
                        vec![se.hidden, se.channels, 1, 1],
                    );
                    out.param(format!("{p}.fc1.bias"), vec![se.hidden]);
                    out.param(
                        format!("{p}.fc2.weight"),
                        vec![se.channels, se.hidden, 1, 1],
                    );
                    out.param(format!("{p}.fc2.bias"), vec![se.channels]);
                }
            }
        }
        if let Some(fc) = &layout.classifier {
            out.param(
                format!("{}.weight", fc.prefix),
                vec![fc.num_classes, fc.in_features],
            );
            out.param(format!("{}.bias", fc.prefix), vec![fc.num_classes]);
        }
        out.manifest
    }

    /// Number of learned parameters (timm's `sum(p.numel() for p in model.parameters())`).
    pub fn param_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::Parameter)
            .map(ManifestEntry::numel)
            .sum()
    }

    /// Number of elements over all entries, buffers included.
    pub fn state_dict_numel(&self) -> usize {
        self.entries.iter().map(ManifestEntry::numel).sum()
    }

    /// Looks up an entry by key.
    pub fn get(&self, key: &str) -> Option<&ManifestEntry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

#[derive(Default)]
struct ManifestBuilder {
    manifest: Manifest,
}

impl ManifestBuilder {
    fn push(&mut self, key: String, shape: Vec<usize>, kind: EntryKind) {
        self.manifest
            .entries
            .push(ManifestEntry { key, shape, kind });
    }

    fn param(&mut self, key: String, shape: Vec<usize>) {
        self.push(key, shape, EntryKind::Parameter);
    }

    fn conv_unit(&mut self, unit: &ConvNormActSpec) {
        let p = &unit.prefix;
        let (cin, cout, k) = (unit.in_channels, unit.out_channels, unit.kernel_size);
        self.param(format!("{p}.conv.weight"), vec![cout, cin, k, k]);
        self.param(format!("{p}.bn.weight"), vec![cout]);
        self.param(format!("{p}.bn.bias"), vec![cout]);
        self.push(
            format!("{p}.bn.running_mean"),
            vec![cout],
            EntryKind::RunningStat,
        );
        self.push(
            format!("{p}.bn.running_var"),
            vec![cout],
            EntryKind::RunningStat,
        );
        self.push(
            format!("{p}.bn.num_batches_tracked"),
            vec![],
            EntryKind::BatchCounter,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TResNetConfig;

    #[test]
    fn tresnet_m_counts_match_timm() {
        let layout = Layout::new(&TResNetConfig::variant("tresnet_m").unwrap()).unwrap();
        let manifest = Manifest::of(&layout);
        assert_eq!(manifest.param_count(), 31_389_032);
        assert_eq!(manifest.entries.len(), 434);
    }
}
