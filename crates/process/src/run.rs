//! [`Run`], a builder for one invocation of an external program.
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::child::quote_words;
use crate::{ProcessError, run_command, run_command_streaming, tail};

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

/// What a run printed.
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
    #[must_use]
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the child (never shown in errors).
    #[must_use]
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env.push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    /// Removes an inherited environment variable.
    #[must_use]
    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Self {
        self.env_remove.push(k.as_ref().to_owned());
        self
    }

    /// Sets the working directory.
    #[must_use]
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Feeds these bytes to the child's standard input (otherwise it reads `/dev/null`).
    #[must_use]
    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    /// Sets the timeout after which the child's process group is killed.
    #[must_use]
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The command line, for messages: program and arguments, shell-quoted where needed.
    #[must_use]
    pub fn command_line(&self) -> String {
        quote_words(std::iter::once(self.program.as_os_str()).chain(self.args.iter().map(OsString::as_os_str)))
    }

    /// Runs to completion; a non-zero exit is an error.
    ///
    /// # Errors
    /// [`ProcessError::Failed`] for a non-zero exit or a signal, and everything
    /// [`Run::run_unchecked`] returns.
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
    ///
    /// # Errors
    /// As [`run_command`]: [`ProcessError::Spawn`], [`ProcessError::Timeout`],
    /// [`ProcessError::Io`].
    pub fn run_unchecked(&self) -> Result<(ExitStatus, Output), ProcessError> {
        run_command(self.to_command(), self.stdin.as_deref(), self.timeout)
    }

    /// Like [`Run::run_unchecked`], and hands each line of standard error (without its
    /// `\n`) to `on_stderr_line` as the child writes it, on the calling thread — for
    /// progress from tools that report on stderr (`nix --log-format internal-json`). The
    /// timeout is the same hard deadline; [`Output::stderr`] still holds all of stderr.
    ///
    /// # Errors
    /// As [`Run::run_unchecked`].
    pub fn run_streaming_unchecked(
        &self,
        on_stderr_line: &mut dyn FnMut(&[u8]),
    ) -> Result<(ExitStatus, Output), ProcessError> {
        run_command_streaming(self.to_command(), self.stdin.as_deref(), self.timeout, on_stderr_line)
    }

    fn to_command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd
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
    fn a_failure_keeps_only_the_tail_of_stderr() {
        let e = Run::new("sh")
            .args(["-c", "i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo l$i >&2; done; exit 1"])
            .run()
            .unwrap_err();
        let kept = e.stderr_tail();
        assert_eq!(kept.lines().count(), crate::STDERR_TAIL_LINES);
        assert!(kept.starts_with("l11\n") && kept.ends_with("l30"), "{kept}");
        assert!(
            e.to_string().ends_with(
                ":\nl11\nl12\nl13\nl14\nl15\nl16\nl17\nl18\nl19\nl20\nl21\nl22\nl23\nl24\nl25\nl26\nl27\nl28\nl29\nl30"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_hanging_child_and_its_grandchildren_are_killed_at_the_timeout() {
        let started = Instant::now();
        // The grandchild `sleep` inherits stdout; without the group kill, reading stdout
        // would block for 30 s.
        let e =
            Run::new("sh").args(["-c", "sleep 30 & sleep 30"]).timeout(Duration::from_millis(300)).run().unwrap_err();
        assert!(matches!(e, ProcessError::Timeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn environment_is_passed_but_never_shown() {
        let r = Run::new("sh").args(["-c", "printf %s \"$SECRET\""]).env("SECRET", "hunter2");
        assert_eq!(r.run().unwrap().stdout_text(), "hunter2");
        assert!(!r.command_line().contains("hunter2"));
        let e = Run::new("sh").args(["-c", "exit 1"]).env("SECRET", "hunter2").run().unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("exit 1") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn env_remove_and_cwd_apply() {
        let dir = std::env::temp_dir();
        let out =
            Run::new("sh").args(["-c", "pwd; printf %s \"${HOME-unset}\""]).env_remove("HOME").cwd(&dir).run().unwrap();
        let text = out.stdout_text();
        let (pwd, home) = text.split_once('\n').unwrap();
        assert_eq!(std::fs::canonicalize(pwd).unwrap(), std::fs::canonicalize(&dir).unwrap());
        assert_eq!(home, "unset");
    }

    #[test]
    fn stdin_is_fed() {
        let out = Run::new("cat").stdin(b"abc".to_vec()).run().unwrap();
        assert_eq!(out.stdout, b"abc");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error_not_a_failure() {
        let e = Run::new("/nonexistent/prog").run().unwrap_err();
        assert!(matches!(e, ProcessError::Spawn { .. }), "{e:?}");
        assert_eq!(e.stderr_tail(), "");
        let e = Run::new("false").run().unwrap_err();
        assert!(matches!(e, ProcessError::Failed { .. }), "{e:?}");
    }
}
