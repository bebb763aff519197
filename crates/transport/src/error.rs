//! The errors of this crate.

use std::time::Duration;

/// What can go wrong talking to a host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The host could not be reached or we could not log in: nothing ran.
    #[error("{target} is unreachable: {detail}")]
    Unreachable {
        /// The target, as [`crate::Transport::describe`] says it.
        target: String,
        /// What ssh said (the tail of its log or stderr).
        detail: String,
    },
    /// The call did not finish in time and was killed.
    #[error("{target}: `{command}` timed out after {}s", after.as_secs_f64())]
    Timeout {
        /// The target.
        target: String,
        /// The command.
        command: String,
        /// The time limit.
        after: Duration,
    },
    /// The command ran and exited unsuccessfully.
    #[error("{target}: `{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The target.
        target: String,
        /// The command.
        command: String,
        /// Exit status (`exit status 1`, `killed by signal 9`).
        status: String,
        /// The tail of its stderr.
        stderr: String,
    },
    /// The command printed more than fleetgate reads and was killed.
    #[error("{target}: `{command}` printed more than {limit} bytes and was killed")]
    OutputTooLarge {
        /// The target.
        target: String,
        /// The command.
        command: String,
        /// The cap ([`fleetgate_process::MAX_STDOUT`]).
        limit: usize,
    },
    /// A local program (`ssh`, `sh`) could not be started.
    #[error("cannot start `{program}`")]
    Spawn {
        /// The program.
        program: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A local I/O error (pipes, temporary directory).
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A target or argument that cannot be used (bad `ssh://` URL, a path
    /// that is not UTF-8).
    #[error("{0}")]
    InvalidArgument(String),
}

impl TransportError {
    /// Whether the host could not be reached (nothing ran).
    #[must_use]
    pub fn is_unreachable(&self) -> bool {
        matches!(self, TransportError::Unreachable { .. })
    }
}
