//! `fleetgate-files`: reading files that come from places fleetgate does not
//! control — the small files of a system toplevel, a kernel's module
//! metadata, a facts document, an initrd image — so that none of them can
//! hang the process or exhaust its memory.
//!
//! * [`open_regular`] refuses anything but a regular file — FIFOs, character
//!   devices (`/dev/zero`), block devices, sockets, directories — and names
//!   what it found. Symbolic links are followed (a NixOS toplevel is made of
//!   them), so `ln -s /dev/zero boot.json` is refused as the character device
//!   it leads to. The file is looked at before it is opened (opening a device
//!   can have effects of its own) and opened with `O_NONBLOCK`, so that a
//!   FIFO swapped in between cannot block `open(2)` forever; the opened file
//!   is checked again.
//! * [`read`] and [`read_optional`] read at most a [`Limit`]: a file that is
//!   larger is [`ReadError::TooLarge`], and no allocation is ever larger than
//!   the limit. Each kind of file has its own limit, stated next to the code
//!   that reads it and in `docs/check.md`.
//!
//! `std::fs::read` does none of this: `fs::read("boot.json")` of a link to
//! `/dev/zero` grows until the process is killed, and of a FIFO it waits
//! for a writer forever.
//!
//! ```
//! use fleetgate_files::{Limit, ReadError, read};
//!
//! const VERSION: Limit = Limit::new(4096, "a version file");
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("nixos-version"), "25.05")?;
//! assert_eq!(read(&dir.path().join("nixos-version"), VERSION)?, b"25.05");
//! std::os::unix::fs::symlink("/dev/zero", dir.path().join("boot.json"))?;
//! let e = read(&dir.path().join("boot.json"), VERSION).unwrap_err();
//! assert!(matches!(e, ReadError::NotRegular { .. }), "{e}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::fs::{File, FileType, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// The most bytes a kind of file may have, and what that kind is called in
/// messages (`a bootspec document`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The largest accepted size, in bytes.
    pub bytes: u64,
    /// What the file is, with its article: `a kernel parameter file`.
    pub what: &'static str,
}

impl Limit {
    /// A limit of `bytes` for files of the kind `what`.
    #[must_use]
    pub const fn new(bytes: u64, what: &'static str) -> Limit {
        Limit { bytes, what }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human_size(self.bytes))
    }
}

/// What a path turned out to be, for [`ReadError::NotRegular`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A named pipe: reading it waits for a writer.
    Fifo,
    /// A character device (`/dev/zero` never ends).
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix socket.
    Socket,
    /// Anything else.
    Other,
}

impl FileKind {
    /// The kind of a (followed) file type.
    #[must_use]
    pub fn of(file_type: FileType) -> FileKind {
        if file_type.is_file() {
            FileKind::Regular
        } else if file_type.is_dir() {
            FileKind::Directory
        } else if file_type.is_fifo() {
            FileKind::Fifo
        } else if file_type.is_char_device() {
            FileKind::CharDevice
        } else if file_type.is_block_device() {
            FileKind::BlockDevice
        } else if file_type.is_socket() {
            FileKind::Socket
        } else {
            FileKind::Other
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Socket => "a socket",
            FileKind::Other => "not a file",
        })
    }
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The operating system refused (no such file, permission denied, …).
    #[error("cannot read {}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The path leads to something other than a regular file.
    #[error("{} is {kind}, not a regular file: refusing to read it", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: FileKind,
    },
    /// The file is larger than its kind may be.
    #[error("{} is larger than {limit}, more than {} can be: refusing to read it", path.display(), limit.what)]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The limit it exceeds.
        limit: Limit,
    },
}

impl ReadError {
    /// Whether the file does not exist (nor does a link's target).
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// The path the error is about.
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            ReadError::Io { path, .. } | ReadError::NotRegular { path, .. } | ReadError::TooLarge { path, .. } => path,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ReadError + '_ {
    move |source| ReadError::Io { path: path.to_path_buf(), source }
}

fn require_regular(path: &Path, meta: &Metadata) -> Result<(), ReadError> {
    match FileKind::of(meta.file_type()) {
        FileKind::Regular => Ok(()),
        kind => Err(ReadError::NotRegular { path: path.to_path_buf(), kind }),
    }
}

/// Opens `path` for reading if (after following links) it is a regular
/// file; see the crate documentation.
///
/// # Errors
/// [`ReadError::NotRegular`] for anything but a regular file,
/// [`ReadError::Io`] when it cannot be looked at or opened.
pub fn open_regular(path: &Path) -> Result<File, ReadError> {
    require_regular(path, &std::fs::metadata(path).map_err(io_error(path))?)?;
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| io_error(path)(e.into()))?;
    let file = File::from(fd);
    // What was opened may have been swapped in after the first look.
    require_regular(path, &file.metadata().map_err(io_error(path))?)?;
    Ok(file)
}

/// Reads the whole regular file at `path`, at most `limit` bytes.
///
/// # Errors
/// [`ReadError::TooLarge`] past the limit, and as [`open_regular`].
pub fn read(path: &Path, limit: Limit) -> Result<Vec<u8>, ReadError> {
    let file = open_regular(path)?;
    let too_large = || ReadError::TooLarge { path: path.to_path_buf(), limit };
    // The size only sizes the buffer; files such as /proc's claim 0 bytes.
    let size = file.metadata().map_err(io_error(path))?.len();
    if size > limit.bytes {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit.bytes.saturating_add(1)).read_to_end(&mut out).map_err(io_error(path))?;
    if out.len() as u64 > limit.bytes {
        return Err(too_large());
    }
    Ok(out)
}

/// [`read`], with a missing file (or a link to a missing file) as `None`.
///
/// # Errors
/// As [`read`].
pub fn read_optional(path: &Path, limit: Limit) -> Result<Option<Vec<u8>>, ReadError> {
    match read(path, limit) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Bytes as text: the files read here are ASCII or UTF-8 by format, and
/// anything else is replaced (U+FFFD), never rejected.
#[must_use]
pub fn lossy_text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// `4096` → `4 KiB`, `1048576` → `1 MiB`, `1000` → `1000 bytes`.
fn human_size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// Not part of the API: the hostile files every reader of untrusted files
/// is tested with, made the same way in every crate's tests.
#[doc(hidden)]
pub mod testing {
    use std::path::{Path, PathBuf};

    use rustix::fs::{CWD, FileType, Mode, mknodat};

    /// Makes, in `dir`, `name` three times over — a FIFO with no writer
    /// (`<name>.fifo`), a link to `/dev/zero` (`<name>.zero`) and a directory
    /// (`<name>.dir`) — and returns each with what its refusal says.
    ///
    /// # Panics
    /// When they cannot be made.
    #[must_use]
    pub fn hostile_files(dir: &Path, name: &str) -> [(PathBuf, &'static str); 3] {
        let fifo = dir.join(format!("{name}.fifo"));
        mknodat(CWD, &fifo, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).expect("mkfifo");
        let zero = dir.join(format!("{name}.zero"));
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("link to /dev/zero");
        let directory = dir.join(format!("{name}.dir"));
        std::fs::create_dir(&directory).expect("mkdir");
        [
            (fifo, "is a FIFO (named pipe), not a regular file"),
            (zero, "is a character device, not a regular file"),
            (directory, "is a directory, not a regular file"),
        ]
    }
}

#[cfg(test)]
mod tests;
