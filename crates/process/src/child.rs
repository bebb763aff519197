//! The runner itself: spawn in a new process group, feed, capture, wait, kill.
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use wait_timeout::ChildExt as _;

use crate::capture::{Captured, MAX_STDOUT, finished, join, keep_tail, line_reader, stderr_reader, stdout_reader};
use crate::live::LiveGroup;
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
    command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<(ExitStatus, Output), ProcessError> {
    run_command_capped(command, stdin, timeout, MAX_STDOUT)
}

/// [`run_command`] with standard output capped at `cap` bytes.
pub(crate) fn run_command_capped(
    command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
    cap: usize,
) -> Result<(ExitStatus, Output), ProcessError> {
    let Spawned { line, mut child, feeder, stdout, live: _live } = spawn(command, stdin, cap)?;
    let stderr = stderr_reader(child.stderr.take());
    let status = match child.wait_timeout(timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            kill(&mut child);
            drop(join(stdout));
            return Err(ProcessError::Timeout { command: line, after: timeout, stderr_tail: tail(&join(stderr)) });
        }
        Err(source) => {
            kill(&mut child);
            drop(join(stdout));
            drop(join(stderr));
            return Err(ProcessError::Io { command: line, source });
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
    let stdout = whole(join(stdout), line, cap)?;
    Ok((status, Output { stdout, stderr: join(stderr) }))
}

/// Like [`run_command`], and hands every line of standard error to `on_stderr_line` as it
/// arrives (without its `\n`), on the calling thread. The returned [`Output`] still holds
/// the whole of standard error.
///
/// The deadline is the same: `timeout` for the child itself, then the same short grace
/// for a grandchild holding the pipes. `on_stderr_line` is never called after this
/// function returned, and a slow callback does not stretch the deadline (the child is
/// killed on time; lines already read are still handed over before the error returns).
///
/// # Errors
/// As [`run_command`].
pub fn run_command_streaming(
    command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
    on_stderr_line: &mut dyn FnMut(&[u8]),
) -> Result<(ExitStatus, Output), ProcessError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let Spawned { line, mut child, feeder, stdout, live: _live } = spawn(command, stdin, MAX_STDOUT)?;
    let lines = line_reader(child.stderr.take());
    let mut stderr = Vec::new();
    let mut deliver = |chunk: Vec<u8>, stderr: &mut Vec<u8>| {
        let text = chunk.strip_suffix(b"\n").unwrap_or(&chunk);
        on_stderr_line(text);
        keep_tail(stderr, &chunk);
    };
    let mut status = None;
    let mut grace_until: Option<Instant> = None;
    // Lines until standard error closes, watching the child and the deadline on the way.
    while let Some(rx) = &lines {
        let now = Instant::now();
        if status.is_none() {
            match child.try_wait() {
                Ok(Some(s)) => {
                    status = Some(s);
                    grace_until = Some(now + GRACE);
                }
                Ok(None) if now >= deadline => {
                    kill(&mut child);
                    drop(join(stdout));
                    // The group is dead: what is left in the pipe is still handed over.
                    drain(rx, &mut |chunk| deliver(chunk, &mut stderr));
                    return Err(ProcessError::Timeout { command: line, after: timeout, stderr_tail: tail(&stderr) });
                }
                Ok(None) => {}
                Err(source) => {
                    kill(&mut child);
                    drop(join(stdout));
                    return Err(ProcessError::Io { command: line, source });
                }
            }
        }
        if let Some(until) = grace_until {
            if now >= until {
                kill_group(&child);
                drain(rx, &mut |chunk| deliver(chunk, &mut stderr));
                break;
            }
        }
        let limit = grace_until.unwrap_or(deadline);
        let wait = TICK.min(limit.saturating_duration_since(now));
        match rx.recv_timeout(wait) {
            Ok(chunk) => deliver(chunk, &mut stderr),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Standard error is closed (or was never there); the child may still run.
    let status = match status {
        Some(s) => s,
        None => match child.wait_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Some(s)) => s,
            Ok(None) => {
                kill(&mut child);
                drop(join(stdout));
                return Err(ProcessError::Timeout { command: line, after: timeout, stderr_tail: tail(&stderr) });
            }
            Err(source) => {
                kill(&mut child);
                drop(join(stdout));
                return Err(ProcessError::Io { command: line, source });
            }
        },
    };
    let until = grace_until.unwrap_or_else(|| Instant::now() + GRACE);
    while !finished(&stdout) {
        if Instant::now() >= until {
            kill_group(&child);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Some(t) = feeder {
        let _ = t.join();
    }
    let stdout = whole(join(stdout), line, MAX_STDOUT)?;
    Ok((status, Output { stdout, stderr }))
}

/// Standard output, if it was read whole.
fn whole(out: Captured, command: String, cap: usize) -> Result<Vec<u8>, ProcessError> {
    if out.overflowed { Err(ProcessError::OutputTooLarge { command, limit: cap }) } else { Ok(out.bytes) }
}

/// Hands over the lines still in the channel after the child's group was killed, for at
/// most [`GRACE`] (a process that left the group could keep the pipe open forever).
fn drain(rx: &mpsc::Receiver<Vec<u8>>, deliver: &mut dyn FnMut(Vec<u8>)) {
    let until = Instant::now() + GRACE;
    loop {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(chunk) => deliver(chunk),
            Err(_) => return,
        }
    }
}

/// How often [`run_command_streaming`] looks at the child while waiting for lines.
const TICK: Duration = Duration::from_millis(50);

/// A child started in its own group, standard input being fed, standard output read.
struct Spawned {
    line: String,
    child: Child,
    feeder: Option<JoinHandle<()>>,
    stdout: Option<JoinHandle<Captured>>,
    /// Registered until the child is reaped (dropped at the end of the run).
    live: LiveGroup,
}

/// Spawns `command` in a new process group with stdin fed from `stdin` (or `/dev/null`)
/// and stdout and stderr piped; stdout is already being read.
fn spawn(mut command: Command, stdin: Option<&[u8]>, cap: usize) -> Result<Spawned, ProcessError> {
    let line = command_line(&command);
    command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().map_err(|source| ProcessError::Spawn { command: line.clone(), source })?;
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
    let stdout = stdout_reader(child.stdout.take(), group_of(&child), cap);
    let live = LiveGroup::register(group_of(&child));
    Ok(Spawned { line, child, feeder, stdout, live })
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
    words.into_iter().map(|w| shell_quote(&w.to_string_lossy())).collect::<Vec<_>>().join(" ")
}

/// Quotes one word for a POSIX shell (`'…'`, with `'` as `'\''`); words made
/// only of characters no shell treats specially are left as they are. The
/// one quoter of fleetgate: command lines in messages here, and commands
/// sent to a remote shell (`fleetgate-transport`). `^` is quoted: the
/// Bourne shell reads it as a pipe.
#[must_use]
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe { word.to_owned() } else { format!("'{}'", word.replace('\'', "'\\''")) }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    /// Every read bounded: a child printing without end is killed at the cap
    /// (not at the deadline, not after filling memory).
    #[test]
    fn endless_standard_output_is_cut_at_the_cap_and_the_child_killed() {
        let started = Instant::now();
        let err = run_command_capped(sh("yes"), None, Duration::from_secs(120), 1 << 20).expect_err("too large");
        assert!(matches!(err, ProcessError::OutputTooLarge { limit, .. } if limit == 1 << 20), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(60), "killed at the cap, not at the deadline");
        // Exactly at the cap is still whole.
        let (_, out) = run_command_capped(sh("head -c 1048576 /dev/zero"), None, Duration::from_secs(60), 1 << 20)
            .expect("at the cap");
        assert_eq!(out.stdout.len(), 1 << 20);
    }

    #[test]
    fn endless_standard_error_keeps_its_tail_until_the_deadline() {
        let err = run_command(sh("yes 'last words' >&2"), None, Duration::from_secs(2)).expect_err("timeout");
        assert!(
            matches!(&err, ProcessError::Timeout { stderr_tail, .. } if stderr_tail.ends_with("last words")),
            "{err:?}"
        );
        let mut seen = 0usize;
        let err = run_command_streaming(sh("yes 'more' >&2"), None, Duration::from_secs(2), &mut |_| seen += 1)
            .expect_err("timeout");
        assert!(matches!(err, ProcessError::Timeout { .. }), "{err:?}");
        assert!(seen > 1000, "lines were streamed: {seen}");
    }

    #[test]
    fn a_non_zero_exit_is_a_status_not_an_error() {
        let (status, out) = run_command(sh("cat; echo err >&2; exit 3"), Some(b"in"), Duration::from_secs(30)).unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(out.stdout, b"in");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn stdin_is_fed_and_otherwise_empty() {
        let big = vec![b'x'; 1 << 20]; // more than a pipe buffer
        let (_, out) = run_command(Command::new("cat"), Some(&big), Duration::from_secs(30)).unwrap();
        assert_eq!(out.stdout.len(), big.len());
        let (_, out) = run_command(Command::new("cat"), None, Duration::from_secs(30)).unwrap();
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn the_timeout_kills_grandchildren_and_keeps_the_stderr_tail() {
        let started = Instant::now();
        // The grandchild `sleep` inherits stdout; without the group kill, reading stdout
        // would block for 30 s.
        let e = run_command(sh("echo started >&2; sleep 30 & sleep 30"), None, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(&e, ProcessError::Timeout { after, .. } if *after == Duration::from_millis(300)), "{e}");
        assert_eq!(e.stderr_tail(), "started");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_grandchild_holding_the_pipes_after_the_child_exits_is_killed() {
        let started = Instant::now();
        let (status, out) = run_command(sh("echo hi; sleep 30 &"), None, Duration::from_secs(60)).unwrap();
        assert!(status.success());
        assert_eq!(out.stdout, b"hi\n");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn streamed_lines_arrive_while_the_child_runs() {
        let dir = tempfile_dir();
        let flag = dir.join("seen-a");
        // The child waits for a file the callback creates when it sees the first line:
        // without streaming this would only end at the timeout.
        let script =
            format!("echo a >&2; while [ ! -e '{}' ]; do sleep 0.05; done; echo out; printf b >&2", flag.display());
        let mut seen = Vec::new();
        let started = Instant::now();
        let (status, out) = run_command_streaming(sh(&script), None, Duration::from_secs(30), &mut |l| {
            if l == b"a" {
                std::fs::write(&flag, "").unwrap();
            }
            seen.push(String::from_utf8_lossy(l).into_owned());
        })
        .unwrap();
        assert!(status.success());
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(seen, ["a", "b"], "the last line needs no newline");
        assert_eq!(out.stderr, b"a\nb");
        assert_eq!(out.stdout, b"out\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn streaming_keeps_the_deadline_kills_grandchildren_and_the_tail() {
        let started = Instant::now();
        let mut seen = Vec::new();
        let e = run_command_streaming(
            sh("echo started >&2; sleep 30 & sleep 30"),
            None,
            Duration::from_millis(300),
            &mut |l| seen.push(l.to_vec()),
        )
        .unwrap_err();
        assert!(matches!(&e, ProcessError::Timeout { .. }), "{e}");
        assert_eq!(e.stderr_tail(), "started");
        assert_eq!(seen, [b"started".to_vec()]);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn streaming_a_grandchild_holding_stderr_after_the_child_exits_is_killed() {
        let started = Instant::now();
        let (status, out) =
            run_command_streaming(sh("echo hi >&2; exit 4; "), None, Duration::from_secs(60), &mut |_| {}).unwrap();
        assert_eq!(status.code(), Some(4));
        assert_eq!(out.stderr, b"hi\n");
        let (status, out) =
            run_command_streaming(sh("echo hi >&2; sleep 30 &"), None, Duration::from_secs(60), &mut |_| {}).unwrap();
        assert!(status.success());
        assert_eq!(out.stderr, b"hi\n");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn streaming_a_missing_program_is_a_spawn_error() {
        let e = run_command_streaming(Command::new("/nonexistent/prog"), None, Duration::from_secs(5), &mut |_| {})
            .unwrap_err();
        assert!(matches!(e, ProcessError::Spawn { .. }), "{e:?}");
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "fleetgate-process-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let e = run_command(Command::new("/nonexistent/prog"), None, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(&e, ProcessError::Spawn { command, .. } if command == "/nonexistent/prog"), "{e:?}");
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let kept = tail(text.as_bytes());
        assert_eq!(kept.lines().count(), STDERR_TAIL_LINES);
        assert!(kept.starts_with("line 11\n") && kept.ends_with("line 30"), "{kept}");
        assert_eq!(tail(b""), "");
    }

    #[test]
    fn words_are_quoted_unless_every_character_is_safe() {
        assert_eq!(shell_quote("abc/d-e.f_g=h:i,j+k@l%m"), "abc/d-e.f_g=h:i,j+k@l%m");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        for unsafe_char in ['^', '$', '`', '"', '\\', '*', '?', '[', '~', '#', '&', ';', '|', '<', '>', '(', '!', '\n']
        {
            let word = format!("a{unsafe_char}b");
            assert!(shell_quote(&word).starts_with('\''), "{word:?}");
        }
    }

    #[test]
    fn command_lines_are_quoted_and_leave_out_the_environment() {
        let mut c = sh("echo 'hi'");
        c.arg("").env("SECRET", "hunter2");
        assert_eq!(command_line(&c), r#"sh -c 'echo '\''hi'\''' ''"#);
    }
}
