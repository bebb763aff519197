//! Small files fleetgate is handed by an operator or a CI system — key files here;
//! callers use it for events, token files and manifests — read safely: only a regular
//! file is read (a FIFO would block forever, `/dev/zero` never ends, a directory is a
//! mistake worth naming), and never more than a cap fit for its kind.
//!
//! The file is opened with `O_NONBLOCK` and its type checked on the open descriptor
//! (`fstat`), so swapping a FIFO in after a check cannot make the open hang.
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Why a small file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SmallFileError {
    /// It cannot be opened (missing, permissions, …).
    #[error("cannot open {}", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// It is a directory, FIFO, device or socket.
    #[error("{} is a {kind}, not a regular file", .path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// `directory`, `FIFO`, `character device`, `block device`, `socket`.
        kind: &'static str,
    },
    /// It is larger than the cap.
    #[error("{} is larger than {limit} bytes", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        limit: u64,
    },
    /// Reading failed part way.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl SmallFileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Open { path, .. }
            | Self::NotRegular { path, .. }
            | Self::TooLarge { path, .. }
            | Self::Read { path, .. } => path,
        }
    }
}

/// What a non-regular file is, in words.
fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Reads a regular file of at most `limit` bytes (symbolic links are followed).
pub fn read_small_file(path: &Path, limit: u64) -> Result<Vec<u8>, SmallFileError> {
    let owned = || path.to_owned();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|source| SmallFileError::Open { path: owned(), source })?;
    let meta = file.metadata().map_err(|source| SmallFileError::Open { path: owned(), source })?;
    if !meta.file_type().is_file() {
        return Err(SmallFileError::NotRegular { path: owned(), kind: kind_of(meta.file_type()) });
    }
    if meta.len() > limit {
        return Err(SmallFileError::TooLarge { path: owned(), limit });
    }
    // The size may change while reading (a log being appended to): read one byte more
    // than allowed to notice.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| SmallFileError::Read { path: owned(), source })?;
    if bytes.len() as u64 > limit {
        return Err(SmallFileError::TooLarge { path: owned(), limit });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_small_file(&p, 5).ok(), Some(b"12345".to_vec()));
        assert!(matches!(read_small_file(&p, 4), Err(SmallFileError::TooLarge { limit: 4, .. })));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert_eq!(read_small_file(&link, 5).ok(), Some(b"12345".to_vec()));
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
        let e = read_small_file(&fifo, 10).err().map(|e| e.to_string());
        assert_eq!(e, Some(format!("{} is a FIFO, not a regular file", fifo.display())));
        let e = read_small_file(dir.path(), 10).err().map(|e| e.to_string());
        assert_eq!(e, Some(format!("{} is a directory, not a regular file", dir.path().display())));
        let e = read_small_file(Path::new("/dev/zero"), 10).err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("/dev/zero is a character device, not a regular file"));
        let missing = dir.path().join("missing");
        assert!(matches!(read_small_file(&missing, 10), Err(SmallFileError::Open { .. })));
    }
}
