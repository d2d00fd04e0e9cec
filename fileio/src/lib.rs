//! # tresnet-io
//!
//! The file operations every crate of the workspace shares, written for files that may come from
//! an attacker and for runs that may be killed at any moment:
//!
//! - [`open_regular`] / [`read_limited`]: only regular files (a FIFO or `/dev/zero` named as a
//!   photo or an annotation file is refused without blocking), read through a size limit;
//! - [`atomic_write`]: a temporary file with an unpredictable name, created exclusively in the
//!   target's directory (a planted symlink cannot redirect it), synced, then renamed into place;
//! - [`OutputLock`]: one writer per output, a second one is refused with a clear message;
//! - [`csv_field`] / [`csv_records`]: CSV written and read back exactly (quoted names with commas,
//!   quotes and newlines);
//! - [`env_limit`]: input limits that the `TRESNET_MAX_*` environment variables raise.

mod atomic_write;
mod csv_text;
mod env_limit;
mod output_lock;
mod regular_file;

pub use atomic_write::{Durability, TEMPORARY_SUFFIX, atomic_write, remove_stale_temporaries};
pub use csv_text::{csv_field, csv_records};
pub use env_limit::{env_limit, parse_limit};
pub use output_lock::OutputLock;
pub use regular_file::{open_regular, read_limited, read_text_limited};
