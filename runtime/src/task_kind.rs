//! What a model's outputs mean: one class per image, several, or boxes.

use serde::{Deserialize, Serialize};

/// The task a model (or a training run) serves. Spelled `single_label`, `multi_label` and
/// `detection` everywhere: flags, recipes, bundle `config.json` files and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "clap", value(rename_all = "snake_case"))]
pub enum TaskKind {
    /// One class per image (softmax).
    SingleLabel,
    /// Any number of classes per image (sigmoid).
    MultiLabel,
    /// Boxes with classes (FPN + FCOS head).
    Detection,
}

impl TaskKind {
    /// The name used in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::SingleLabel => "single_label",
            Self::MultiLabel => "multi_label",
            Self::Detection => "detection",
        }
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_the_display_names() {
        for task in [
            TaskKind::SingleLabel,
            TaskKind::MultiLabel,
            TaskKind::Detection,
        ] {
            let json = serde_json::to_string(&task).unwrap();
            assert_eq!(json, format!("\"{task}\""));
            assert_eq!(serde_json::from_str::<TaskKind>(&json).unwrap(), task);
        }
    }
}
