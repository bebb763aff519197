//! Streaming reader for Linux initramfs images.
//!
//! An initramfs ("initrd") image is a concatenation of *segments*, each a
//! cpio archive that is either stored as is or compressed, optionally
//! separated by zero bytes. A typical distribution image has an
//! uncompressed "early" archive holding CPU microcode, followed by one
//! compressed archive with the real root filesystem. This crate reads such
//! an image front to back, in bounded memory, and yields every entry with
//! the segment it came from; entry data can be read on demand and is
//! otherwise skipped.
//!
//! # Format
//!
//! The rules follow the kernel's unpacker rather than any one userspace tool:
//! what the kernel cannot unpack is an error here too, so a module found in
//! an image is one the kernel will see.
//!
//! * Segments: at top level, zero bytes are skipped; `070701`/`070702` at a
//!   4-byte aligned offset starts an uncompressed archive, which ends at its
//!   `TRAILER!!!` entry; anything else is identified by its magic bytes and
//!   decompressed as one stream (one gzip member, one zstd frame, one xz
//!   stream, ...), after which scanning resumes right behind that stream.
//!   Inside a decompressed stream, archives may follow each other after zero
//!   padding. See the kernel's `init/initramfs.c` (`unpack_to_rootfs`) and
//!   `lib/decompress.c`, and Debian's `unmkinitramfs`.
//! * Compression: gzip, zstd, xz, legacy lzma, LZ4 legacy (`lz4 -l`),
//!   bzip2. The standard LZ4 *frame* format (`lz4` without `-l`, magic
//!   `04 22 4d 18`) is reported as [`Error::UnsupportedCompression`]: the
//!   kernel's `lib/decompress.c` hands every LZ4 stream to `unlz4`, which
//!   reads only the legacy format, so such an image does not boot. lzo,
//!   which the kernel does unpack, is also recognised but not decoded, and
//!   reported the same way.
//! * cpio: the "new ASCII" format, `newc` (`070701`) and `crc` (`070702`,
//!   whose data checksum is verified), as described in `cpio(5)` and the
//!   kernel's `Documentation/driver-api/early-userspace/buffer-format.rst`.
//!   The old binary and odc (`070707`) formats, which the kernel does not
//!   unpack either, are rejected with [`Error::UnsupportedCpioFormat`].
//!
//! Paths are kept as the raw bytes stored in the archive, minus a leading
//! `./`, so names that are not UTF-8 survive unchanged.
//!
//! # Safety against hostile input
//!
//! No input makes the reader panic. Sizes taken from the input never decide
//! an allocation on their own: names are capped by
//! [`Options::max_name_len`], symlink targets are only read up to
//! [`Options::max_symlink_len`], file data is streamed, and decoders are
//! memory-limited ([`Options::decoder_memory_limit`], zstd windows up to
//! 128 MiB, LZ4 blocks up to 8 MiB). Every error is an [`Error`] that says
//! where in the file (or in which segment's decompressed stream) it
//! happened.
//!
//! # Examples
//!
//! List an image:
//!
//! ```no_run
//! for entry in fleetgate_initrd::list("/boot/initrd.img")? {
//!     println!("{} {:?} {}", entry.path_lossy(), entry.file_type(), entry.compression);
//! }
//! # Ok::<(), fleetgate_initrd::Error>(())
//! ```
//!
//! Find the kernel modules it carries:
//!
//! ```no_run
//! let modules = fleetgate_initrd::kernel_modules("/boot/initrd.img")?;
//! assert!(modules.contains("virtio_blk"));
//! # Ok::<(), fleetgate_initrd::Error>(())
//! ```

mod compression;
mod entry;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod input;
mod lz4_legacy;
mod modules;
mod reader;

use std::path::Path;

pub use compression::Compression;
pub use entry::{CpioFormat, Entry, FileType};
pub use error::{Error, Location};
pub use modules::{KernelModules, MAX_KEPT_BYTES, MAX_KEPT_PATHS, ModuleFile, ModuleScan, module_name};
pub use reader::{Entries, EntryReader, Options, Reader};

/// Lists every entry of the image at `path` (data is skipped, symlink
/// targets are read).
pub fn list(path: impl AsRef<Path>) -> Result<Vec<Entry>, Error> {
    Reader::open(path)?.entries().collect()
}

/// Finds the kernel modules and kernel version directories in the image at
/// `path`, in one streaming pass, in memory bounded by [`ModuleScan`]'s
/// limits and [`Options`]' (`path` must be a regular file). See
/// [`ModuleScan`] for the rules.
pub fn kernel_modules(path: impl AsRef<Path>) -> Result<KernelModules, Error> {
    let mut reader = Reader::open(path)?;
    let mut scan = ModuleScan::new();
    while let Some(entry) = reader.next_entry()? {
        scan.add(entry.entry())?;
    }
    Ok(scan.finish())
}
