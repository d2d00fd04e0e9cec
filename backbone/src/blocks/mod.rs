//! Residual blocks and their shortcuts.

mod residual_block;
mod shortcut;

pub use residual_block::ResidualBlock;
pub use shortcut::Shortcut;
