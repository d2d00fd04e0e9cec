//! Opening and reading files that must be regular files, within a size limit.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Opens `path` for reading if it is a regular file (symlinks to one are followed).
///
/// The file is opened without blocking, so a FIFO cannot hang the caller, and its type is checked
/// on the open handle, so it cannot be swapped between the check and the read. Directories,
/// FIFOs, sockets and devices are refused with `InvalidInput`.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = open_nonblocking(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file (a {})", describe(kind)),
        ));
    }
    Ok(file)
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    File::open(path)
}

fn describe(kind: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "FIFO";
        }
        if kind.is_char_device() {
            return "character device";
        }
        if kind.is_block_device() {
            return "block device";
        }
        if kind.is_socket() {
            return "socket";
        }
    }
    if kind.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// The bytes of the regular file `path`, refusing it (`InvalidData`) when it holds more than
/// `max_bytes`. The limit is enforced on what is read, not on the size the file reports, so a file
/// that grows while it is read is refused too.
pub fn read_limited(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let declared = file.metadata()?.len();
    if declared > max_bytes {
        return Err(too_large(declared, max_bytes));
    }
    let mut bytes = Vec::with_capacity(declared as usize);
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64, max_bytes));
    }
    Ok(bytes)
}

/// [`read_limited`] as UTF-8 text (`InvalidData` naming the byte offset when it is not).
pub fn read_text_limited(path: &Path, max_bytes: u64) -> io::Result<String> {
    String::from_utf8(read_limited(path, max_bytes)?).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

fn too_large(size: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("file holds {size} bytes or more, above the limit of {max} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("photo.jpg");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file system entry.
        let made = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(made, 0);
        let err = read_limited(&fifo, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        let err = read_limited(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let err = read_limited(dir.path(), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
    }

    #[test]
    fn the_size_limit_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_limited(&path, 10).unwrap().len(), 10);
        assert!(
            read_limited(&path, 9)
                .unwrap_err()
                .to_string()
                .contains("limit of 9")
        );
        std::fs::write(&path, b"ok\xff").unwrap();
        assert!(
            read_text_limited(&path, 10)
                .unwrap_err()
                .to_string()
                .contains("byte 2")
        );
    }
}
