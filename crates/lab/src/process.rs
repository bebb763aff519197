//! Running the standard tools the lab is built from (`ip`, `losetup`,
//! `mkfs.ext4`, `nix`, `cpio`, `zstd`, `modprobe`…), always with a deadline.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// The output of a command that ran to completion with exit status 0.
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("could not start `{command}` (is it installed? `scripts/setup` installs every tool the lab needs)")]
    Spawn { command: String, source: std::io::Error },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed { command: String, status: ExitStatus, stderr: String },
    #[error("`{command}` did not finish within {timeout:?}; it was killed")]
    TimedOut { command: String, timeout: Duration },
    #[error("waiting for `{command}`")]
    Wait { command: String, source: std::io::Error },
}

/// A human-readable rendering of a command line for error messages.
pub fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Process groups of the commands running right now, so that an interrupted
/// `fleetgate-lab` can take them down with it ([`kill_running`]).
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Kills every command this process is running (their whole process groups):
/// what Ctrl-C would have done had they been in our process group.
pub fn kill_running() {
    if let Ok(running) = RUNNING.lock() {
        for pid in running.iter() {
            if let Some(pid) = i32::try_from(*pid).ok().and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// Runs `command` to completion, capturing its output; fails on a non-zero exit
/// or when `timeout` passes (the child is then killed).
pub fn run(command: &mut Command, timeout: Duration) -> Result<Output, ProcessError> {
    let (status, stdout, stderr) = run_status(command, timeout)?;
    if status.success() {
        Ok(Output { stdout, stderr })
    } else {
        Err(ProcessError::Failed { command: describe(command), status, stderr: tail(&stderr) })
    }
}

/// How many times [`run_nix`] starts a Nix command that found the store's
/// database busy.
const NIX_BUSY_ATTEMPTS: u32 = 5;

/// Like [`run`], for a `nix` command on the local store: when Nix gives up with
/// "SQLite database '…' is busy" — single-user Nix (no daemon, as on a new
/// Debian machine without systemd) lets concurrent processes trip over the
/// database's locks in paths its own busy-retry does not cover — the command
/// is started again, a few times, after a growing pause. Any other failure is
/// returned at once.
pub fn run_nix(command: &mut Command, timeout: Duration) -> Result<Output, ProcessError> {
    let mut attempt = 1;
    loop {
        match run(command, timeout) {
            Err(ProcessError::Failed { ref stderr, .. })
                if attempt < NIX_BUSY_ATTEMPTS && stderr.contains("SQLite database") && stderr.contains("is busy") =>
            {
                thread::sleep(Duration::from_millis(250 * u64::from(attempt)));
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Like [`run`], with `input` on the command's stdin.
pub fn run_with_input(command: &mut Command, input: &str, timeout: Duration) -> Result<Output, ProcessError> {
    let (status, stdout, stderr) = run_inner(command, Some(input.as_bytes().to_vec()), timeout)?;
    if status.success() {
        Ok(Output { stdout, stderr })
    } else {
        Err(ProcessError::Failed { command: describe(command), status, stderr: tail(&stderr) })
    }
}

/// Like [`run`], but a non-zero exit is returned rather than treated as an error.
pub fn run_status(command: &mut Command, timeout: Duration) -> Result<(ExitStatus, String, String), ProcessError> {
    run_inner(command, None, timeout)
}

fn run_inner(
    command: &mut Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(ExitStatus, String, String), ProcessError> {
    let name = describe(command);
    // Its own process group, so a timeout also kills grandchildren (`ssh`
    // under `nix copy`) that would otherwise keep the pipes open.
    let mut child = command
        .process_group(0)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ProcessError::Spawn { command: name.clone(), source })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A thread of its own: a child that does not read must not block us
        // past the deadline.
        thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        });
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let pid = child.id();
    if let Ok(mut running) = RUNNING.lock() {
        running.push(pid);
    }
    let status = wait_deadline(&mut child, timeout, &name);
    if let Ok(mut running) = RUNNING.lock() {
        running.retain(|p| *p != pid);
    }
    let status = status?;
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ok((status, stdout, stderr))
}

/// Waits for `child` until `timeout`; kills it when the deadline passes.
pub fn wait_deadline(child: &mut Child, timeout: Duration, name: &str) -> Result<ExitStatus, ProcessError> {
    // std has no blocking wait with a timeout for a child: poll it.
    let waited = poll_until(timeout, Duration::from_millis(50), || child.try_wait().transpose());
    match waited {
        Some(Ok(status)) => Ok(status),
        Some(Err(source)) => Err(ProcessError::Wait { command: name.to_owned(), source }),
        None => {
            kill_group(child);
            let _ = child.kill();
            let _ = child.wait();
            Err(ProcessError::TimedOut { command: name.to_owned(), timeout })
        }
    }
}

/// Calls `probe` until it answers or `timeout` passes, pausing in between:
/// 1 ms at first, doubling up to `max_pause`, so what is ready soon is seen
/// soon and what takes long costs little. `None` when the time ran out.
pub fn poll_until<T>(timeout: Duration, max_pause: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(answer) = probe() {
            return Some(answer);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(max_pause);
    }
}

/// SIGKILL to the child's process group, if it leads one.
fn kill_group(child: &Child) {
    let Some(pid) = i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw) else { return };
    if rustix::process::getpgid(Some(pid)).is_ok_and(|group| group == pid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The last lines of a tool's stderr: enough to say what went wrong.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let start = lines.len().saturating_sub(12);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A script that fails with `message` the first `failures` times it runs,
    /// counting its runs in `dir/runs`.
    fn flaky(dir: &std::path::Path, failures: u32, message: &str) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!(
            "n=$(cat '{d}/runs' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{d}/runs'; \
             if [ $n -le {failures} ]; then echo \"{message}\" >&2; exit 1; fi; echo done",
            d = dir.display()
        ));
        command
    }

    #[test]
    fn nix_commands_are_started_again_while_the_database_is_busy_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let runs = || std::fs::read_to_string(dir.path().join("runs")).unwrap().trim().to_owned();
        let busy = "error: SQLite database '/nix/var/nix/db/db.sqlite' is busy";
        let out = run_nix(&mut flaky(dir.path(), 2, busy), Duration::from_secs(10)).unwrap();
        assert_eq!((out.stdout.trim(), runs().as_str()), ("done", "3"));

        std::fs::remove_file(dir.path().join("runs")).unwrap();
        let err = run_nix(&mut flaky(dir.path(), 9, busy), Duration::from_secs(10)).unwrap_err();
        assert!(err.to_string().contains("is busy"), "{err}");
        assert_eq!(runs(), NIX_BUSY_ATTEMPTS.to_string(), "gives up after its attempts");

        std::fs::remove_file(dir.path().join("runs")).unwrap();
        let err =
            run_nix(&mut flaky(dir.path(), 1, "error: attribute 'x' missing"), Duration::from_secs(10)).unwrap_err();
        assert!(err.to_string().contains("attribute 'x' missing"), "{err}");
        assert_eq!(runs(), "1", "any other failure is returned at once");
    }

    #[test]
    fn captures_output_of_a_successful_command() {
        let out = run(Command::new("sh").args(["-c", "echo out; echo err >&2"]), Duration::from_secs(10)).unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn non_zero_exit_is_an_error_with_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"]), Duration::from_secs(10)).unwrap_err();
        match err {
            ProcessError::Failed { stderr, status, .. } => {
                assert_eq!(stderr, "boom");
                assert_eq!(status.code(), Some(3));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_command_past_its_deadline_is_killed() {
        let started = Instant::now();
        let err = run(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_timeout_also_kills_grandchildren_holding_the_pipes() {
        let started = Instant::now();
        let err = run(Command::new("sh").args(["-c", "sleep 30 & sleep 30"]), Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "a grandchild kept the pipes open");
    }

    #[test]
    fn polling_answers_once_ready_and_gives_up_at_the_deadline() {
        let mut calls = 0;
        let ready = poll_until(Duration::from_secs(10), Duration::from_millis(5), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(ready, Some(3));
        let started = Instant::now();
        let never: Option<()> = poll_until(Duration::from_millis(100), Duration::from_millis(20), || None);
        assert_eq!(never, None);
        assert!(started.elapsed() >= Duration::from_millis(100), "gave up early");
        assert!(started.elapsed() < Duration::from_secs(5), "overshot the deadline");
    }

    #[test]
    fn input_reaches_the_command_s_stdin() {
        let out = run_with_input(&mut Command::new("cat"), "fed\n", Duration::from_secs(10)).unwrap();
        assert_eq!(out.stdout, "fed\n");
    }

    #[test]
    fn a_missing_program_says_so() {
        let err = run(&mut Command::new("/nonexistent/tool"), Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("could not start"), "{err}");
    }
}
