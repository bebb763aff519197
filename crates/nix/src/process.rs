//! A process runner with a hard timeout.
//!
//! The child runs in its own process group; on timeout the whole group gets SIGKILL, so a
//! grandchild (`ssh` under `nix copy`, `git-remote-http` under `git push`) cannot keep the
//! pipes open. Error messages show the command line, never the environment: pass secrets
//! through [`Run::env`], not through arguments.
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use wait_timeout::ChildExt as _;

use crate::error::ProcessError;

/// How many trailing lines of stderr an error keeps.
const STDERR_TAIL_LINES: usize = 20;

/// One invocation of an external program.
#[derive(Clone, Debug)]
pub struct Run {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

/// What a successful run printed.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// Standard output, as bytes.
    pub stdout: Vec<u8>,
    /// Standard error, as bytes.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Standard output as text (lossy), trimmed of the final newline.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim_end().to_owned()
    }
}

impl Run {
    /// A run of `program` with a default timeout of ten minutes.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            cwd: None,
            stdin: None,
            timeout: Duration::from_secs(600),
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the child (never shown in errors).
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env.push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    /// Removes an inherited environment variable.
    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Self {
        self.env_remove.push(k.as_ref().to_owned());
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Feeds these bytes to the child's standard input.
    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    /// Sets the timeout after which the child's process group is killed.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The command line, for messages: program and arguments, shell-quoted where needed.
    pub fn command_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(self.args.iter())
            .map(|a| quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs to completion; a non-zero exit is an error.
    pub fn run(&self) -> Result<Output, ProcessError> {
        let (status, out) = self.run_unchecked()?;
        if status.success() {
            Ok(out)
        } else {
            Err(ProcessError::Failed {
                command: self.command_line(),
                status: status.to_string(),
                stderr_tail: tail(&out.stderr),
            })
        }
    }

    /// Runs to completion and returns the exit status whatever it is (a timeout is still
    /// an error).
    pub fn run_unchecked(&self) -> Result<(std::process::ExitStatus, Output), ProcessError> {
        let command = self.command_line();
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            command: command.clone(),
            source,
        })?;
        let io_err = |source| ProcessError::Io {
            command: command.clone(),
            source,
        };
        let stdin_thread = match (self.stdin.clone(), child.stdin.take()) {
            (Some(bytes), Some(mut pipe)) => Some(std::thread::spawn(move || {
                // A child that exits early closes the pipe; that is not our error.
                let _ = pipe.write_all(&bytes);
            })),
            _ => None,
        };
        let out_thread = reader(child.stdout.take());
        let err_thread = reader(child.stderr.take());
        let waited = child.wait_timeout(self.timeout).map_err(io_err);
        let status = match waited {
            Ok(Some(status)) => status,
            Ok(None) | Err(_) => {
                kill_group(&mut child);
                let stderr = join(err_thread);
                drop(join(out_thread));
                waited?;
                return Err(ProcessError::Timeout {
                    command,
                    after: self.timeout,
                    stderr_tail: tail(&stderr),
                });
            }
        };
        // The direct child is gone. A grandchild that still holds our pipes gets a short
        // grace period, then its group (which it keeps alive, so the id cannot have been
        // reused) is killed.
        let grace = std::time::Instant::now() + Duration::from_secs(2);
        while !(finished(&out_thread) && finished(&err_thread)) {
            if std::time::Instant::now() >= grace {
                let _ = rustix::process::kill_process_group(
                    pid_of(&child),
                    rustix::process::Signal::KILL,
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(t) = stdin_thread {
            let _ = t.join();
        }
        Ok((
            status,
            Output {
                stdout: join(out_thread),
                stderr: join(err_thread),
            },
        ))
    }
}

fn pid_of(child: &Child) -> rustix::process::Pid {
    // A live child's pid is never 0, but do not unwrap: fall back to our own group id,
    // which kill_process_group would refuse for a non-member anyway.
    rustix::process::Pid::from_raw(child.id() as i32).unwrap_or_else(rustix::process::getpid)
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

/// The last [`STDERR_TAIL_LINES`] lines of a child's stderr, as text.
pub fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    lines[start..].join("\n")
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn output_and_exit_status_are_reported() {
        let out = Run::new("sh").args(["-c", "echo out; echo err >&2"]).run().unwrap();
        assert_eq!(out.stdout_text(), "out");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
        let e = Run::new("sh").args(["-c", "echo boom >&2; exit 3"]).run().unwrap_err();
        assert!(matches!(&e, ProcessError::Failed { status, .. } if status.contains('3')));
        assert_eq!(e.stderr_tail(), "boom");
        assert!(e.to_string().contains("sh -c 'echo boom >&2; exit 3'"), "{e}");
    }

    #[test]
    fn a_hanging_child_and_its_grandchildren_are_killed_at_the_timeout() {
        let started = Instant::now();
        // The grandchild `sleep` inherits stdout; without the group kill, reading stdout
        // would block for 30 s.
        let e = Run::new("sh")
            .args(["-c", "sleep 30 & sleep 30"])
            .timeout(Duration::from_millis(300))
            .run()
            .unwrap_err();
        assert!(matches!(e, ProcessError::Timeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn environment_is_passed_but_never_shown() {
        let r = Run::new("sh")
            .args(["-c", "printf %s \"$SECRET\""])
            .env("SECRET", "hunter2");
        assert_eq!(r.run().unwrap().stdout_text(), "hunter2");
        assert!(!r.command_line().contains("hunter2"));
        let e = Run::new("sh")
            .args(["-c", "exit 1"])
            .env("SECRET", "hunter2")
            .run()
            .unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("exit 1") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn stdin_is_fed() {
        let out = Run::new("cat").stdin(b"abc".to_vec()).run().unwrap();
        assert_eq!(out.stdout, b"abc");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let e = Run::new("/nonexistent/prog").run().unwrap_err();
        assert!(matches!(e, ProcessError::Spawn { .. }));
    }
}
