//! Writing a file so that readers see the old content or the new, never a part, and so that no
//! planted file can redirect the write.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The suffix of this workspace's temporary files (`.<name>.<random>.partial`).
pub const TEMPORARY_SUFFIX: &str = ".partial";

/// How hard [`atomic_write`] works to survive a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The file's data and the directory entry are synced to disk before returning: for
    /// checkpoints, records and anything whose loss loses work.
    Durable,
    /// Atomic replacement only (a crash may leave the old file): for outputs that are cheap to
    /// recompute, such as reports and plots.
    Atomic,
}

/// Writes `path` through `write`, atomically.
///
/// The data goes to a new file `.<name>.<12 random characters>.partial` in `path`'s directory,
/// created exclusively (`O_CREAT | O_EXCL`, so neither an existing file nor a planted symlink is
/// opened), then renamed over `path` (a symlink at `path` is replaced, not followed). An existing
/// file's permissions are kept; a new file gets `0644` less the umask. On any error the temporary
/// file is removed and `path` is untouched.
pub fn atomic_write<T>(
    path: &Path,
    durability: Durability,
    write: impl FnOnce(&mut BufWriter<tempfile::NamedTempFile>) -> io::Result<T>,
) -> io::Result<T> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let dir = directory_of(path);
    let mut builder = tempfile::Builder::new();
    let prefix = format!(".{}.", name.to_string_lossy());
    builder
        .prefix(&prefix)
        .suffix(TEMPORARY_SUFFIX)
        .rand_bytes(12);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::symlink_metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map_or(0o644, |m| m.permissions().mode() & 0o7777);
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    let temporary = builder.tempfile_in(&dir)?;
    let mut writer = BufWriter::new(temporary);
    let value = write(&mut writer)?;
    writer.flush()?;
    let temporary = writer.into_inner().map_err(|e| e.into_error())?;
    if durability == Durability::Durable {
        temporary.as_file().sync_all()?;
    }
    temporary.persist(path).map_err(|e| e.error)?;
    if durability == Durability::Durable {
        sync_directory(&dir)?;
    }
    Ok(value)
}

/// The directory holding `path` (`.` for a bare file name).
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes a rename in `dir` durable.
fn sync_directory(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Removes the temporary files a killed [`atomic_write`] of `path` left behind
/// (`.<name>.*.partial`, regular files only; symlinks are never followed) and returns how many.
/// Call it only while holding the output's [`crate::OutputLock`]: another writer's temporary file
/// looks the same.
pub fn remove_stale_temporaries(path: &Path) -> io::Result<usize> {
    let Some(name) = path.file_name() else {
        return Ok(0);
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let mut removed = 0;
    let entries = match std::fs::read_dir(directory_of(path)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if file_name.starts_with(&prefix)
            && file_name.ends_with(TEMPORARY_SUFFIX)
            && entry.file_type()?.is_file()
        {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        let out = dir.path().join("tags.jsonl");
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        // The old predictable name, planted too.
        std::os::unix::fs::symlink(&victim, dir.path().join(format!(".tags.jsonl.{}.tmp", 1)))
            .unwrap();
        atomic_write(&out, Durability::Durable, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "new");
        assert!(!std::fs::symlink_metadata(&out).unwrap().is_symlink());
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("report.json");
        std::fs::write(&out, "old").unwrap();
        let err = atomic_write(&out, Durability::Atomic, |w| {
            w.write_all(b"half")?;
            Err::<(), _>(io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk on fire"));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn permissions_are_kept_and_stale_temporaries_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("best.safetensors");
        std::fs::write(&out, "old").unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o640)).unwrap();
        atomic_write(&out, Durability::Atomic, |w| w.write_all(b"new")).unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        std::fs::write(dir.path().join(".best.safetensors.Ab3dE.partial"), "x").unwrap();
        std::fs::write(dir.path().join(".other.Ab3dE.partial"), "x").unwrap();
        assert_eq!(remove_stale_temporaries(&out).unwrap(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
