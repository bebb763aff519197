//! The error of a child process that could not be run to a successful end.
use std::time::Duration;

/// A child process that could not be run to a successful end.
///
/// `command` is always the program and its arguments, never the environment.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started (missing binary, permissions).
    #[error("could not start `{command}`")]
    Spawn {
        /// The command line (program and arguments; never the environment).
        command: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The program ran but exited unsuccessfully.
    #[error("`{command}` failed ({status}){}", tail_suffix(.stderr_tail))]
    Failed {
        /// The command line.
        command: String,
        /// Exit status as printed by the OS (`exit status: 1`, `signal: 9`).
        status: String,
        /// The last lines of standard error.
        stderr_tail: String,
    },
    /// The program did not finish in time; its process group was killed.
    #[error("`{command}` did not finish within {:?} and was killed{}", .after, tail_suffix(.stderr_tail))]
    Timeout {
        /// The command line.
        command: String,
        /// The timeout that expired.
        after: Duration,
        /// The last lines of standard error, as far as they were written.
        stderr_tail: String,
    },
    /// The program printed more than fleetgate reads; its process group was killed.
    #[error("`{command}` printed more than {limit} bytes on standard output and was killed")]
    OutputTooLarge {
        /// The command line.
        command: String,
        /// The cap it passed.
        limit: usize,
    },
    /// Reading the child's output or waiting for it failed.
    #[error("I/O error while running `{command}`")]
    Io {
        /// The command line.
        command: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
}

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() { String::new() } else { format!(":\n{}", tail.trim_end()) }
}

impl ProcessError {
    /// The standard-error tail, when the process got far enough to write one.
    #[must_use]
    pub fn stderr_tail(&self) -> &str {
        match self {
            Self::Failed { stderr_tail, .. } | Self::Timeout { stderr_tail, .. } => stderr_tail,
            Self::Spawn { .. } | Self::Io { .. } | Self::OutputTooLarge { .. } => "",
        }
    }
}
