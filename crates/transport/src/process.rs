//! [`Output`], and running a local child through [`fleetgate_process`] (its own process
//! group, killed whole when the time limit expires) with the result and errors in this
//! crate's terms.

use std::process::Command;
use std::time::Duration;

use fleetgate_process::ProcessError;
pub(crate) use fleetgate_process::tail;

use crate::TransportError;

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Where it ran ([`crate::Transport::describe`]).
    pub target: String,
    /// The command, for messages.
    pub command: String,
    /// Exit code; `None` if it was killed by a signal.
    pub status: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Whether it exited with status 0.
    #[must_use]
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Standard output as text (lossy).
    #[must_use]
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// `self` if it succeeded, else [`TransportError::CommandFailed`].
    ///
    /// # Errors
    /// [`TransportError::CommandFailed`] for a non-zero exit or a signal.
    pub fn check(self) -> Result<Output, TransportError> {
        if self.success() {
            return Ok(self);
        }
        Err(TransportError::CommandFailed {
            target: self.target.clone(),
            command: self.command.clone(),
            status: match self.status {
                Some(code) => format!("exit status {code}"),
                None => "killed by a signal".to_owned(),
            },
            stderr: tail(&self.stderr),
        })
    }
}

/// Runs the local `command` with `stdin` (killed, with its process group, after
/// `timeout`) on behalf of `shown` on `target`, the names the result and errors carry.
/// A non-zero exit is not an error here.
pub(crate) fn run(
    command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
    target: String,
    shown: String,
) -> Result<Output, TransportError> {
    let program = command.get_program().to_string_lossy().into_owned();
    match fleetgate_process::run_command(command, stdin, timeout) {
        Ok((status, out)) => {
            Ok(Output { target, command: shown, status: status.code(), stdout: out.stdout, stderr: out.stderr })
        }
        Err(ProcessError::Spawn { source, .. }) => Err(TransportError::Spawn { program, source }),
        Err(ProcessError::Io { source, .. }) => {
            Err(TransportError::Io { what: format!("waiting for `{program}`"), source })
        }
        Err(ProcessError::Timeout { .. }) => Err(TransportError::Timeout { target, command: shown, after: timeout }),
        Err(ProcessError::OutputTooLarge { limit, .. }) => {
            Err(TransportError::OutputTooLarge { target, command: shown, limit })
        }
        // `run_command` reports a non-zero exit as a status; should that change, this is
        // what it means here.
        Err(ProcessError::Failed { status, stderr_tail, .. }) => {
            Err(TransportError::CommandFailed { target, command: shown, status, stderr: stderr_tail })
        }
    }
}
