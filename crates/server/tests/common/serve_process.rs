//! `fleetgate-serve` (`fleetgate channel serve`) as a real process, for what only a process shows: its exit
//! code, its log, and what it does on SIGTERM. Every wait has a deadline and ends on an
//! observable event (a log line, the process's exit), never on a sleep.
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `serve`; killed (SIGKILL) and reaped on drop if still running.
pub struct ServeProcess {
    pid: i32,
    /// Where it listens (from its "listening on" line).
    pub addr: SocketAddr,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    exit: Receiver<ExitStatus>,
    exited: Option<ExitStatus>,
    /// Says when its stderr reached its end: every line is in `log`.
    stderr_done: Receiver<()>,
}

/// How a start went wrong: the process exited (code, its stderr).
#[derive(Debug)]
pub struct StartFailure {
    pub code: Option<i32>,
    pub stderr: String,
}

impl ServeProcess {
    /// Starts `fleetgate-serve --listen 127.0.0.1:0 ARGS…` in `cwd` and waits (at
    /// most 60 s) for it to say where it listens.
    pub fn start(cwd: &Path, args: &[&str]) -> Result<Self, StartFailure> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleetgate-serve"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(cwd)
            // Nix keeps its caches under $HOME: the test's directory, not the user's.
            .env("HOME", cwd)
            .env("XDG_CACHE_HOME", cwd.join(".cache"))
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("STATE_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let stderr = child.stderr.take().unwrap();
        let (line_tx, lines) = channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log_in = log.clone();
        let (done_tx, stderr_done) = channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log_in.lock().unwrap().push(line.clone());
                let _ = line_tx.send(line);
            }
            let _ = done_tx.send(());
        });
        let (exit_tx, exit) = channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        let mut server = Self { pid, addr: "0.0.0.0:0".parse().unwrap(), lines, log, exit, exited: None, stderr_done };
        let prefix = "listening on http://";
        match server.wait_line(Duration::from_secs(60), |l| l.contains(prefix)) {
            Some(line) => {
                let at = line.find(prefix).unwrap() + prefix.len();
                server.addr = line[at..].trim().parse().unwrap();
                Ok(server)
            }
            None => {
                let status = server.wait_exit(Duration::from_secs(10));
                Err(StartFailure { code: status.and_then(|s| s.code()), stderr: server.log() })
            }
        }
    }

    /// The next log line matching `want`, waiting at most `timeout` (earlier lines that do
    /// not match are skipped; all stay in [`ServeProcess::log`]).
    pub fn wait_line(&self, timeout: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return Some(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends a signal.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Its exit status, waiting at most `timeout`; `None` if it is still running. Once it
    /// has exited, its last log lines are read too (the exit can be seen before the pipe's
    /// end), so [`ServeProcess::log`] holds everything it wrote.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        if self.exited.is_none() {
            self.exited = self.exit.recv_timeout(timeout).ok();
            if self.exited.is_some() {
                let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(5));
                let _ = self.stderr_done.recv_timeout(left);
            }
        }
        self.exited
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if self.wait_exit(Duration::ZERO).is_none() {
            self.signal(rustix::process::Signal::KILL);
            let _ = self.wait_exit(Duration::from_secs(30));
        }
    }
}
