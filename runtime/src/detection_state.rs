//! The weights of a detector: a backbone in timm's names plus the FPN and FCOS head tensors.

use tresnet::weights::StateDict;

/// Name prefixes of a detector's head tensors (everything else belongs to the backbone).
pub const DETECTION_PREFIXES: [&str; 2] = ["fpn.", "fcos."];

/// Splits a state dict into the backbone's tensors and the detection head's (`fpn.*`, `fcos.*`,
/// names kept whole).
pub fn split_detection_state(mut state: StateDict) -> (StateDict, StateDict) {
    let mut head = StateDict::new();
    for prefix in DETECTION_PREFIXES {
        for (k, v) in state.take_prefix(prefix).iter() {
            head.insert(format!("{prefix}{k}"), v.clone());
        }
    }
    (state, head)
}
