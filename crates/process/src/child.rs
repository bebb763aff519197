//! The runner itself: spawn in a new process group, feed, capture, wait, kill.
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use wait_timeout::ChildExt as _;

use crate::{Output, ProcessError};

/// How many trailing lines of stderr an error keeps.
pub const STDERR_TAIL_LINES: usize = 20;

/// How long a grandchild may keep the output pipes open after the child itself exited.
const GRACE: Duration = Duration::from_secs(2);

/// Runs `command` to completion in its own process group and returns its exit status
/// whatever it is, with everything it printed.
///
/// Standard input is `stdin` (or `/dev/null`); standard output and error are captured.
/// Whatever `command` had configured for the three standard streams and its process group
/// is replaced. When `timeout` expires, the child's whole process group is killed.
///
/// # Errors
/// [`ProcessError::Spawn`] if the program cannot be started, [`ProcessError::Timeout`]
/// (with the stderr written so far) when the timeout expires, [`ProcessError::Io`] if
/// waiting fails. Never [`ProcessError::Failed`]: a non-zero exit is returned as a status.
pub fn run_command(
    mut command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<(ExitStatus, Output), ProcessError> {
    let line = command_line(&command);
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
        command: line.clone(),
        source,
    })?;
    let feeder = match (stdin, child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => {
            let bytes = bytes.to_vec();
            Some(std::thread::spawn(move || {
                // A child that exits without reading closes the pipe; that is not our error.
                let _ = pipe.write_all(&bytes);
            }))
        }
        _ => None,
    };
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let status = match child.wait_timeout(timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            kill(&mut child);
            drop(join(stdout));
            return Err(ProcessError::Timeout {
                command: line,
                after: timeout,
                stderr_tail: tail(&join(stderr)),
            });
        }
        Err(source) => {
            kill(&mut child);
            drop(join(stdout));
            drop(join(stderr));
            return Err(ProcessError::Io {
                command: line,
                source,
            });
        }
    };
    // The direct child is gone. A grandchild that still holds our pipes gets a short grace
    // period, then its group (which it keeps alive, so the id cannot have been reused) is
    // killed.
    let deadline = Instant::now() + GRACE;
    while !(finished(&stdout) && finished(&stderr)) {
        if Instant::now() >= deadline {
            kill_group(&child);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Some(t) = feeder {
        let _ = t.join();
    }
    Ok((
        status,
        Output {
            stdout: join(stdout),
            stderr: join(stderr),
        },
    ))
}

/// The command line of `command`, for messages: program and arguments, shell-quoted where
/// needed. Never the environment.
#[must_use]
pub fn command_line(command: &Command) -> String {
    quote_words(std::iter::once(command.get_program()).chain(command.get_args()))
}

/// The last [`STDERR_TAIL_LINES`] lines of a child's stderr, as text.
#[must_use]
pub fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    lines[start..].join("\n")
}

/// Words joined by spaces, each shell-quoted where needed.
pub(crate) fn quote_words<'a>(words: impl IntoIterator<Item = &'a OsStr>) -> String {
    words
        .into_iter()
        .map(|w| quote(&w.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@+,%^".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The child's process group: it leads one of its own, so the group id is its pid.
/// `None` only for a pid that is not a valid positive `pid_t`, which the OS never hands
/// out; then nothing is signalled (never fall back to our own group).
fn group_of(child: &Child) -> Option<Pid> {
    i32::try_from(child.id()).ok().and_then(Pid::from_raw)
}

fn kill_group(child: &Child) {
    if let Some(group) = group_of(child) {
        let _ = rustix::process::kill_process_group(group, Signal::KILL);
    }
}

/// Kills the child's whole group, then the child itself, and reaps it.
fn kill(child: &mut Child) {
    kill_group(child);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn a_non_zero_exit_is_a_status_not_an_error() {
        let (status, out) = run_command(
            sh("cat; echo err >&2; exit 3"),
            Some(b"in"),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(out.stdout, b"in");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn stdin_is_fed_and_otherwise_empty() {
        let big = vec![b'x'; 1 << 20]; // more than a pipe buffer
        let (_, out) =
            run_command(Command::new("cat"), Some(&big), Duration::from_secs(30)).unwrap();
        assert_eq!(out.stdout.len(), big.len());
        let (_, out) = run_command(Command::new("cat"), None, Duration::from_secs(30)).unwrap();
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn the_timeout_kills_grandchildren_and_keeps_the_stderr_tail() {
        let started = Instant::now();
        // The grandchild `sleep` inherits stdout; without the group kill, reading stdout
        // would block for 30 s.
        let e = run_command(
            sh("echo started >&2; sleep 30 & sleep 30"),
            None,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(
            matches!(&e, ProcessError::Timeout { after, .. } if *after == Duration::from_millis(300)),
            "{e}"
        );
        assert_eq!(e.stderr_tail(), "started");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_grandchild_holding_the_pipes_after_the_child_exits_is_killed() {
        let started = Instant::now();
        let (status, out) =
            run_command(sh("echo hi; sleep 30 &"), None, Duration::from_secs(60)).unwrap();
        assert!(status.success());
        assert_eq!(out.stdout, b"hi\n");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let e = run_command(
            Command::new("/nonexistent/prog"),
            None,
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(
            matches!(&e, ProcessError::Spawn { command, .. } if command == "/nonexistent/prog"),
            "{e:?}"
        );
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let kept = tail(text.as_bytes());
        assert_eq!(kept.lines().count(), STDERR_TAIL_LINES);
        assert!(
            kept.starts_with("line 11\n") && kept.ends_with("line 30"),
            "{kept}"
        );
        assert_eq!(tail(b""), "");
    }

    #[test]
    fn command_lines_are_quoted_and_leave_out_the_environment() {
        let mut c = sh("echo 'hi'");
        c.arg("").env("SECRET", "hunter2");
        assert_eq!(command_line(&c), r#"sh -c 'echo '\''hi'\''' ''"#);
    }
}
