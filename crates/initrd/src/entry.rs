//! Metadata of one archive member.

use std::borrow::Cow;

use crate::Compression;

/// File type, from the `S_IFMT` bits of the mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// Regular file.
    Regular,
    /// Directory.
    Directory,
    /// Symbolic link (its target is the entry's data).
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Named pipe.
    Fifo,
    /// Socket.
    Socket,
    /// Any other value of the `S_IFMT` bits.
    Unknown(u32),
}

impl FileType {
    /// Decodes the file type from a full `st_mode` value.
    pub fn from_mode(mode: u32) -> FileType {
        match mode & 0o170_000 {
            0o100_000 => FileType::Regular,
            0o040_000 => FileType::Directory,
            0o120_000 => FileType::Symlink,
            0o020_000 => FileType::CharDevice,
            0o060_000 => FileType::BlockDevice,
            0o010_000 => FileType::Fifo,
            0o140_000 => FileType::Socket,
            other => FileType::Unknown(other),
        }
    }
}

/// cpio header format of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CpioFormat {
    /// "070701", `cpio -H newc`.
    Newc,
    /// "070702", `cpio -H crc`: newc plus a checksum of the data.
    Crc,
}

/// One member of an archive: its header fields plus where it was found.
///
/// The path is kept as the raw bytes stored in the archive (names need not
/// be UTF-8), with any leading `./` removed; use [`Entry::path_bytes`],
/// [`Entry::path_str`] or [`Entry::path_lossy`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    pub(crate) path: Vec<u8>,
    pub(crate) link_target: Vec<u8>,
    pub(crate) has_link_target: bool,
    /// Full `st_mode` (file type and permission bits).
    pub mode: u32,
    /// Size of the entry's data in bytes.
    pub size: u64,
    /// Inode number (entries with equal `ino` and `nlink > 1` are hard links;
    /// only the last one carries the data).
    pub ino: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u32,
    /// Major number of the device the file was on.
    pub dev_major: u32,
    /// Minor number of the device the file was on.
    pub dev_minor: u32,
    /// For device nodes: major number.
    pub rdev_major: u32,
    /// For device nodes: minor number.
    pub rdev_minor: u32,
    /// The header's checksum field (only meaningful for [`CpioFormat::Crc`]).
    pub checksum: u32,
    /// Header format.
    pub format: CpioFormat,
    /// Index of the segment (0-based, in file order) holding the entry.
    pub segment: usize,
    /// Compression of that segment.
    pub compression: Compression,
    /// File byte offset where that segment starts.
    pub segment_offset: u64,
    /// Offset of the entry's header within the segment's decompressed stream.
    pub header_offset: u64,
}

impl Entry {
    pub(crate) fn empty() -> Entry {
        Entry {
            path: Vec::new(),
            link_target: Vec::new(),
            has_link_target: false,
            mode: 0,
            size: 0,
            ino: 0,
            uid: 0,
            gid: 0,
            nlink: 0,
            mtime: 0,
            dev_major: 0,
            dev_minor: 0,
            rdev_major: 0,
            rdev_minor: 0,
            checksum: 0,
            format: CpioFormat::Newc,
            segment: 0,
            compression: Compression::None,
            segment_offset: 0,
            header_offset: 0,
        }
    }

    /// The path as stored (minus a leading `./`), as raw bytes.
    pub fn path_bytes(&self) -> &[u8] {
        &self.path
    }

    /// The path, if it is valid UTF-8.
    pub fn path_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.path).ok()
    }

    /// The path, with invalid UTF-8 replaced by U+FFFD.
    pub fn path_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.path)
    }

    /// The path as an OS path (lossless on Unix).
    #[cfg(unix)]
    pub fn path(&self) -> &std::path::Path {
        use std::os::unix::ffi::OsStrExt;
        std::path::Path::new(std::ffi::OsStr::from_bytes(&self.path))
    }

    /// File type from the mode.
    pub fn file_type(&self) -> FileType {
        FileType::from_mode(self.mode)
    }

    /// Permission bits (`mode & 0o7777`).
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }

    /// For a symlink: its target as raw bytes. `None` for other entries and
    /// for targets longer than [`crate::Options::max_symlink_len`] (whose
    /// data can still be read through the entry's reader).
    pub fn symlink_target(&self) -> Option<&[u8]> {
        self.has_link_target.then_some(self.link_target.as_slice())
    }
}

/// Removes every leading `./` (and a lone `.` stays `.`), like `cpio -t`
/// listings do not.
pub(crate) fn normalise_path(raw: &[u8]) -> &[u8] {
    let mut p = raw;
    while let Some(rest) = p.strip_prefix(b"./") {
        p = rest;
        while let Some(rest) = p.strip_prefix(b"/") {
            p = rest;
        }
    }
    if p.is_empty() && !raw.is_empty() { b"." } else { p }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_strips_leading_dot_slash_only() {
        assert_eq!(normalise_path(b"./lib/modules"), b"lib/modules");
        assert_eq!(normalise_path(b"././a"), b"a");
        assert_eq!(normalise_path(b".//a"), b"a");
        assert_eq!(normalise_path(b"."), b".");
        assert_eq!(normalise_path(b"./"), b".");
        assert_eq!(normalise_path(b"lib/./x"), b"lib/./x");
        assert_eq!(normalise_path(b"/abs"), b"/abs");
        assert_eq!(normalise_path(b".hidden"), b".hidden");
    }

    #[test]
    fn file_types_from_mode() {
        assert_eq!(FileType::from_mode(0o100_644), FileType::Regular);
        assert_eq!(FileType::from_mode(0o040_755), FileType::Directory);
        assert_eq!(FileType::from_mode(0o120_777), FileType::Symlink);
        assert_eq!(FileType::from_mode(0o020_600), FileType::CharDevice);
        assert_eq!(FileType::from_mode(0o060_600), FileType::BlockDevice);
        assert_eq!(FileType::from_mode(0o010_600), FileType::Fifo);
        assert_eq!(FileType::from_mode(0o140_600), FileType::Socket);
        assert_eq!(FileType::from_mode(0o170_000), FileType::Unknown(0o170_000));
    }
}
