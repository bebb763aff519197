//! Error type of this crate.

use std::path::PathBuf;

use crate::ModuleName;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmodError {
    /// A file every kernel modules directory has is missing.
    #[error("{} is not a usable kernel modules directory: {file} is missing", dir.display())]
    MissingFile {
        /// The directory that was opened.
        dir: PathBuf,
        /// The missing file's name, e.g. `modules.dep`.
        file: &'static str,
    },
    /// The path given to [`crate::ModuleIndex::load`] is not a directory.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The directory's name is not a kernel version (`lib/modules/<kver>`).
    #[error("cannot tell the kernel version from the directory name {}", .0.display())]
    NoKernelVersion(PathBuf),
    /// Reading a file failed for another reason than its absence.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A metadata file is not a regular file, or larger than
    /// [`crate::MAX_METADATA_FILE`].
    #[error(transparent)]
    File(#[from] fleetgate_files::ReadError),
    /// The module is neither in `modules.dep` nor built into the kernel.
    #[error("module {0} is neither in modules.dep nor built into the kernel")]
    UnknownModule(ModuleName),
}

/// Result alias of this crate.
pub type Result<T, E = KmodError> = std::result::Result<T, E>;
