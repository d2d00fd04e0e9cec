//! One writer per output file.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// An exclusive lock on an output, held while it lives: the lock file `.<name>.lock` beside the
/// output, locked with the operating system's advisory file lock (released by the kernel when the
/// process dies, so a killed run never leaves a stale lock).
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
    path: PathBuf,
}

impl OutputLock {
    /// Locks `output`, or fails at once with `WouldBlock` naming the output when another process
    /// (or another lock in this one) holds it. A symlink planted at the lock file's name is refused.
    pub fn acquire(output: &Path) -> io::Result<Self> {
        let name = output.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no file", output.display()),
            )
        })?;
        let path = output.with_file_name(format!(".{}.lock", name.to_string_lossy()));
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NOFOLLOW).mode(0o644);
        }
        let file = options.open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another run is writing {} (it holds {}); wait for it to finish or choose \
                     another output",
                    output.display(),
                    path.display()
                ),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tags.jsonl");
        let first = OutputLock::acquire(&out).unwrap();
        let err = OutputLock::acquire(&out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(err.to_string().contains("another run is writing"));
        drop(first);
        OutputLock::acquire(&out).unwrap();
    }
}
