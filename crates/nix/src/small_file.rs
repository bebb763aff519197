//! Small files fleetgate is handed by an operator or a CI system — key files here;
//! callers use it for events, token files and manifests — read safely through
//! [`fleetgate_files`]: only a regular file is read (a FIFO would block forever,
//! `/dev/zero` never ends, a directory is a mistake worth naming), never more than a
//! cap fit for its kind, and an open cannot block. This module only gives the callers
//! of this crate an error that says whether the file was missing ([`SmallFileError::Open`]).
use std::path::{Path, PathBuf};

use fleetgate_files::{FileKind, Limit, ReadError};

/// Why a small file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SmallFileError {
    /// It cannot be opened or read (missing, permissions, …).
    #[error("cannot open {}", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// It is a directory, FIFO, device or socket.
    #[error("{} is {kind}, not a regular file", .path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: FileKind,
    },
    /// It is larger than the cap.
    #[error("{} is larger than {limit} bytes", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        limit: u64,
    },
}

impl SmallFileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Open { path, .. } | Self::NotRegular { path, .. } | Self::TooLarge { path, .. } => path,
        }
    }
}

/// Reads a regular file of at most `limit` bytes (symbolic links are followed).
pub fn read_small_file(path: &Path, limit: u64) -> Result<Vec<u8>, SmallFileError> {
    fleetgate_files::read(path, Limit::new(limit, "a small file")).map_err(|e| match e {
        ReadError::Io { path, source } => SmallFileError::Open { path, source },
        ReadError::NotRegular { path, kind } => SmallFileError::NotRegular { path, kind },
        ReadError::TooLarge { path, .. } => SmallFileError::TooLarge { path, limit },
        other => {
            SmallFileError::Open { path: other.path().to_owned(), source: std::io::Error::other(other.to_string()) }
        }
    })
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
        assert_eq!(e, Some(format!("{} is a FIFO (named pipe), not a regular file", fifo.display())));
        let e = read_small_file(dir.path(), 10).err().map(|e| e.to_string());
        assert_eq!(e, Some(format!("{} is a directory, not a regular file", dir.path().display())));
        let e = read_small_file(Path::new("/dev/zero"), 10).err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("/dev/zero is a character device, not a regular file"));
        let missing = dir.path().join("missing");
        assert!(matches!(read_small_file(&missing, 10), Err(SmallFileError::Open { .. })));
    }
}
