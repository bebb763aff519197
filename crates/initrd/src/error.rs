//! Typed errors, each carrying the position where the problem was found.

use std::fmt;
use std::io;

use crate::Compression;

/// Where in the image something happened.
///
/// `offset` counts bytes of the segment's *decompressed* stream (for an
/// uncompressed segment that is the same as the byte offset in the file);
/// `segment_offset` is the byte offset in the file where the segment starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Index of the segment (0-based, in file order).
    pub segment: usize,
    /// Compression of the segment.
    pub compression: Compression,
    /// Byte offset in the file where the segment starts.
    pub segment_offset: u64,
    /// Byte offset within the segment's (decompressed) data stream.
    pub offset: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.compression == Compression::None {
            write!(f, "byte {} (segment {}, uncompressed)", self.offset, self.segment)
        } else {
            write!(
                f,
                "decompressed byte {} of segment {} ({} stream starting at file byte {})",
                self.offset, self.segment, self.compression, self.segment_offset
            )
        }
    }
}

/// Everything that can go wrong while reading an initramfs image.
///
/// Every variant names the position (a file byte offset or a [`Location`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The image file is not a regular file (a FIFO, a device, a
    /// directory), or cannot be opened.
    #[error(transparent)]
    File(#[from] fleetgate_files::ReadError),

    /// The image is longer than [`crate::Options::max_image_bytes`].
    #[error("the image is larger than {max} bytes, more than an initrd can be: refusing to read further")]
    ImageTooLarge {
        /// The limit.
        max: u64,
    },

    /// The compressed segments unpack to more than
    /// [`crate::Options::max_unpacked_bytes`].
    #[error(
        "the image unpacks to more than {max} bytes (at {at}), more than an initrd can: refusing to unpack further"
    )]
    UnpackedTooLarge {
        /// The limit.
        max: u64,
        /// Where the limit was reached.
        at: Location,
    },

    /// The image holds more module files, symbolic links and module
    /// directories than a [`crate::ModuleScan`] keeps track of.
    #[error(
        "the image holds more module files, symbolic links and module directories than fleetgate keeps track of (at most {max_paths}, with {max_bytes} bytes of paths): refusing to use more memory"
    )]
    TooManyEntries {
        /// The limit on paths.
        max_paths: usize,
        /// The limit on bytes of paths and link targets.
        max_bytes: usize,
    },

    /// Reading the underlying file failed.
    #[error("I/O error reading the image near file byte {offset}")]
    Io {
        /// File byte offset up to which the image had been read.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The image ends in the middle of something.
    #[error("truncated image: it ends inside {what} at {at}")]
    Truncated {
        /// What was being read (e.g. "a cpio header", "file data").
        what: &'static str,
        /// Where the data ran out.
        at: Location,
    },

    /// The compressed data of a segment is corrupt (or uses a feature the
    /// decoder refuses, such as a window larger than the memory limit).
    #[error(
        "corrupt {compression} data in the segment starting at file byte {segment_offset} (after {decompressed} decompressed bytes)"
    )]
    Decompress {
        /// Compression of the segment.
        compression: Compression,
        /// File byte offset where the segment starts.
        segment_offset: u64,
        /// Decompressed bytes consumed before the error.
        decompressed: u64,
        /// The decoder's error.
        #[source]
        source: io::Error,
    },

    /// Bytes at a segment boundary are neither zero padding, a cpio archive,
    /// nor the magic of a known compression format.
    #[error("bad magic at file byte {offset}: {found:02x?} is neither a cpio archive nor a known compression format")]
    BadMagic {
        /// File byte offset of the unrecognised bytes.
        offset: u64,
        /// Up to the first 6 bytes found there.
        found: Vec<u8>,
    },

    /// A segment uses a compression format this crate does not decode:
    /// either one the kernel cannot unpack either (the LZ4 frame format,
    /// which would make the kernel fail at boot), or one fleetgate cannot
    /// check (lzo). `reason` says which.
    #[error("unsupported compression {name} (magic {magic:02x?}) at file byte {offset}: {reason}")]
    UnsupportedCompression {
        /// Name of the format recognised by its magic.
        name: &'static str,
        /// Why it is refused (e.g. "the kernel cannot unpack it: ...").
        reason: &'static str,
        /// The magic bytes found.
        magic: Vec<u8>,
        /// File byte offset of the segment.
        offset: u64,
    },

    /// A cpio archive in a format the kernel does not unpack (old binary or
    /// odc/"070707"); the kernel only accepts newc ("070701") and crc ("070702").
    #[error("unsupported cpio format {format} at {at}; the kernel only unpacks newc/crc (`cpio -H newc`)")]
    UnsupportedCpioFormat {
        /// "odc" or "old binary".
        format: &'static str,
        /// Where the header starts.
        at: Location,
    },

    /// Inside an archive, the next header does not start with a cpio magic.
    #[error("expected a cpio header at {at}, found {found:02x?}")]
    BadHeaderMagic {
        /// Where the header should start.
        at: Location,
        /// The 6 bytes found instead.
        found: [u8; 6],
    },

    /// A header field is not valid (e.g. not 8 hex digits, or zero name size).
    #[error("bad cpio header field {field} = {value:?} at {at}")]
    BadHeaderField {
        /// Name of the field (as in `cpio(5)`: "c_mode", "c_namesize", ...).
        field: &'static str,
        /// The raw field text (lossily decoded).
        value: String,
        /// Where the header starts.
        at: Location,
    },

    /// The declared name size exceeds the configured cap.
    #[error("cpio entry name of {len} bytes exceeds the limit of {max} at {at}")]
    NameTooLong {
        /// Declared name size (including the NUL).
        len: u64,
        /// The configured cap ([`crate::Options::max_name_len`]).
        max: u64,
        /// Where the header starts.
        at: Location,
    },

    /// An entry name is not NUL-terminated.
    #[error("cpio entry name is not NUL-terminated at {at}")]
    NameNotTerminated {
        /// Where the header starts.
        at: Location,
    },

    /// Data of a "070702" (crc) archive member does not match its checksum.
    #[error("checksum mismatch for {path:?} at {at}: header says {expected:#010x}, data sums to {actual:#010x}")]
    ChecksumMismatch {
        /// Path of the entry (lossily decoded).
        path: String,
        /// Checksum from the header.
        expected: u32,
        /// Checksum computed over the data.
        actual: u32,
        /// Where the entry's header starts.
        at: Location,
    },

    /// Inside a compressed segment, outside any cpio archive (at its start
    /// or after a trailer), something other than zero padding, another
    /// archive, or the end of the stream.
    #[error("expected zero padding, a cpio archive or the end of the stream at {at}, found byte {found:#04x}")]
    Junk {
        /// Where the junk starts.
        at: Location,
        /// The first junk byte.
        found: u8,
    },

    /// After zero padding, the next cpio archive does not start on a 4-byte
    /// boundary (the kernel reports this as "broken padding").
    #[error("cpio archive after zero padding is not 4-byte aligned at {at}")]
    BrokenPadding {
        /// Where the misaligned archive starts.
        at: Location,
    },
}

impl Error {
    /// Converts the error into an [`io::Error`] (used by the `Read` impl of
    /// entry data); the original error stays reachable as the inner error.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            Error::Io { source, .. } => source,
            other => {
                let kind = match other {
                    Error::Truncated { .. } => io::ErrorKind::UnexpectedEof,
                    _ => io::ErrorKind::InvalidData,
                };
                io::Error::new(kind, other)
            }
        }
    }
}
