//! A child process with a time limit; its whole process group is killed when
//! the limit expires.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;

use crate::TransportError;

/// Lines of stderr kept in error messages.
const STDERR_TAIL_LINES: usize = 20;

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

/// The last lines of a child's stderr, as text.
pub(crate) fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    lines[start..].join("\n")
}

/// Raw result of [`run`].
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

/// Why [`run`] gave up.
pub(crate) enum RunError {
    Spawn(std::io::Error),
    Io(std::io::Error),
    Timeout,
}

/// Runs `command` in its own process group with `stdin`, collecting output;
/// kills the group after `timeout`.
pub(crate) fn run(mut command: Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Finished, RunError> {
    command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().map_err(RunError::Spawn)?;
    let stdin_thread = match (stdin.map(<[u8]>::to_vec), child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => Some(std::thread::spawn(move || {
            // A child that exits without reading closes the pipe: not an error here.
            let _ = pipe.write_all(&bytes);
        })),
        _ => None,
    };
    let out_thread = reader(child.stdout.take());
    let err_thread = reader(child.stderr.take());
    let status = match child.wait_timeout(timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            kill_group(&mut child);
            drop(join(out_thread));
            drop(join(err_thread));
            return Err(RunError::Timeout);
        }
        Err(e) => {
            kill_group(&mut child);
            return Err(RunError::Io(e));
        }
    };
    // A grandchild that still holds the pipes gets until the deadline (at
    // most 2 s), then its group is killed.
    let grace = Instant::now() + Duration::from_secs(2);
    while !(finished(&out_thread) && finished(&err_thread)) {
        if Instant::now() >= grace {
            let _ = rustix::process::kill_process_group(pid_of(&child), rustix::process::Signal::KILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Some(t) = stdin_thread {
        let _ = t.join();
    }
    Ok(Finished {
        status,
        stdout: join(out_thread),
        stderr: join(err_thread),
    })
}

fn pid_of(child: &Child) -> rustix::process::Pid {
    i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .unwrap_or_else(rustix::process::getpid)
}

fn kill_group(child: &mut Child) {
    let _ = rustix::process::kill_process_group(pid_of(child), rustix::process::Signal::KILL);
    let _ = child.kill();
    let _ = child.wait();
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|mut p| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            buf
        })
    })
}

fn finished(t: &Option<JoinHandle<Vec<u8>>>) -> bool {
    t.as_ref().is_none_or(JoinHandle::is_finished)
}

fn join(t: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    t.and_then(|t| t.join().ok()).unwrap_or_default()
}
