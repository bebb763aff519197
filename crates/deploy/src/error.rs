//! Errors of the deploy library. Per-host failures are not errors: they end
//! up in the [`crate::report::HostReport`] of that host. These are the
//! failures that stop a run before any host is touched.

use std::path::PathBuf;

use fleetgate_nix::NixError;

/// Why a deploy could not start (or its record could not be kept).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// `fleetgate.toml` could not be read.
    #[error("cannot read {}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// `fleetgate.toml` is not valid.
    #[error("{}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// The flake could not be evaluated.
    #[error(
        "evaluating {what} failed; run `nix --extra-experimental-features 'nix-command flakes' eval {installable}` to see the whole error"
    )]
    Eval {
        /// What was being evaluated.
        what: String,
        /// The installable.
        installable: String,
        /// What nix said.
        #[source]
        source: NixError,
    },
    /// Nix output that cannot be understood.
    #[error("unexpected output of {what}: {message}")]
    NixOutput {
        /// The command.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A host was asked for that the flake does not define.
    #[error("the flake defines no host {host:?}; it has: {known}")]
    UnknownHost {
        /// The name asked for.
        host: String,
        /// The hosts it has.
        known: String,
    },
    /// The selection matched nothing.
    #[error("no host matches {0}; check the names, tags (@tag) and globs")]
    NothingSelected(String),
    /// Command-line or configuration values that do not fit together.
    #[error("{0}")]
    Usage(String),
    /// `--resume` without a previous run.
    #[error("there is no earlier run to resume in {}", path.display())]
    NothingToResume {
        /// The history database.
        path: PathBuf,
    },
    /// The history database failed.
    #[error("history database {}", path.display())]
    History {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The history database directory could not be created.
    #[error("cannot create {}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}
