//! Error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading a system toplevel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SystemError {
    /// Reading a file or directory failed (other than it being absent where
    /// absence is allowed).
    #[error("cannot read {}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A file of the toplevel is not a regular file, or larger than its
    /// kind may be (see [`crate::limits`]).
    #[error(transparent)]
    File(#[from] fleetgate_files::ReadError),
    /// The path is not a directory.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The directory has none of the files every NixOS system toplevel has
    /// (`nixos-version`, `init-interface-version`, `boot.json`).
    #[error("{} is not a NixOS system: it has no nixos-version, init-interface-version or boot.json", .0.display())]
    NotASystem(PathBuf),
    /// A file this accessor needs is absent.
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    /// `boot.json` is not a bootspec document this crate understands.
    #[error("{} is not a valid bootspec document: {reason}", path.display())]
    Bootspec {
        /// The `boot.json` path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `switch-inhibitors` is not a JSON object of strings.
    #[error("{} is not a JSON object of strings: {reason}", path.display())]
    Inhibitors {
        /// The `switch-inhibitors` path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A line of `etc/fstab` cannot be parsed.
    #[error("{}:{line}: {reason}", path.display())]
    Fstab {
        /// The fstab path.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// `kernel-modules/lib/modules` does not hold exactly one kernel version.
    #[error("{}: {reason}", path.display())]
    KernelModules {
        /// The `lib/modules` directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = SystemError> = std::result::Result<T, E>;
