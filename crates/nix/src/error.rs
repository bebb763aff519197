//! Typed errors: a failed child process, and everything that can go wrong talking to Nix.

/// A child process that could not be run to a successful end (spawn failure, non-zero
/// exit, timeout, I/O), from [`fleetgate_process`].
pub use fleetgate_process::ProcessError;

/// Errors of the Nix wrapper.
#[derive(Debug, thiserror::Error)]
pub enum NixError {
    /// Running a Nix command failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// Nix printed something this crate does not understand.
    #[error("could not understand the output of `{command}`: {message}")]
    Parse {
        /// The command line.
        command: String,
        /// What was wrong.
        message: String,
    },
    /// The installed Nix is too old.
    #[error("Nix {found} is too old: fleetgate needs Nix 2.8 or newer")]
    UnsupportedVersion {
        /// The version that was found.
        found: String,
    },
    /// A key string is malformed.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    /// A key file cannot be used (boxed: it carries a path and a reason, and every
    /// `Result` of this crate would grow with it).
    #[error(transparent)]
    KeyFile(Box<crate::keys::KeyFileError>),
    /// A store URI is malformed.
    #[error("invalid store URI `{uri}`: {message}")]
    StoreUri {
        /// The URI as given.
        uri: String,
        /// What was wrong.
        message: String,
    },
    /// A hash string is malformed.
    #[error("invalid hash `{0}`")]
    Hash(String),
}

impl From<crate::keys::KeyFileError> for NixError {
    fn from(e: crate::keys::KeyFileError) -> Self {
        Self::KeyFile(Box::new(e))
    }
}
