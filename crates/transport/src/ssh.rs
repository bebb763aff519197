//! A host reached with the system's OpenSSH client.

use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use wait_timeout::ChildExt;

use crate::process::{self, Output, tail};
use crate::{Transport, TransportError, shell_quote};

/// Exit status `ssh` uses for its own errors (connection, authentication).
const SSH_ERROR: i32 = 255;

/// Where to connect: `ssh://[user@]host[:port]`. Built only by
/// [`SshTarget::parse`] (or [`SshTarget::from_parts`], which goes through
/// it), so a host that `ssh` would read as an option (`-oProxyCommand=…`)
/// never reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    user: Option<String>,
    host: String,
    port: Option<u16>,
}

impl SshTarget {
    /// Login user; `None` lets `ssh` (and its config) decide.
    #[must_use]
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Host name, address (IPv6 without brackets), or a `Host` alias of the
    /// ssh config.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Port; `None` lets `ssh` (and its config) decide.
    #[must_use]
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// A target from its parts (an IPv6 address with or without brackets),
    /// checked like [`SshTarget::parse`].
    ///
    /// # Errors
    /// [`TransportError::InvalidArgument`] for a host or user `ssh` would
    /// misread.
    pub fn from_parts(user: Option<&str>, host: &str, port: Option<u16>) -> Result<SshTarget, TransportError> {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if bare.contains(['@', '/', '[', ']']) {
            return Err(TransportError::InvalidArgument(format!(
                "bad ssh host {host:?}: a host name or address, without user, path or brackets inside"
            )));
        }
        let host = if bare.contains(':') { format!("[{bare}]") } else { bare.to_owned() };
        let mut text = String::from("ssh://");
        if let Some(u) = user {
            text.push_str(u);
            text.push('@');
        }
        text.push_str(&host);
        if let Some(p) = port {
            text.push_str(&format!(":{p}"));
        }
        SshTarget::parse(&text)
    }

    /// The `ssh://[user@]host` store URI `nix copy` takes (IPv6 in
    /// brackets; the port goes in `NIX_SSHOPTS`).
    #[must_use]
    pub fn store_uri(&self) -> String {
        let mut s = String::from("ssh://");
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        if self.host.contains(':') {
            s.push_str(&format!("[{}]", self.host));
        } else {
            s.push_str(&self.host);
        }
        s
    }

    /// Parses `ssh://[user@]host[:port]` (an IPv6 address in brackets:
    /// `ssh://[fe80::1]:22`).
    ///
    /// # Errors
    /// [`TransportError::InvalidArgument`] for anything else.
    pub fn parse(text: &str) -> Result<SshTarget, TransportError> {
        let bad = |why: &str| {
            TransportError::InvalidArgument(format!(
                "bad ssh target {text:?}: {why} (expected ssh://[user@]host[:port])"
            ))
        };
        let rest = text.strip_prefix("ssh://").ok_or_else(|| bad("no ssh:// scheme"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(bad("a path is not allowed"));
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((user, hp)) if !user.is_empty() => (Some(user.to_owned()), hp),
            Some(_) => return Err(bad("empty user")),
            None => (None, rest),
        };
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (host, after) = inner.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            };
            (host, port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let bracketed = hostport.starts_with('[');
        if host.is_empty()
            || host.starts_with('-')
            || host.chars().any(|c| c.is_whitespace() || c.is_control() || "@/[]'\"`$;&|<>\\".contains(c))
            || (!bracketed && host.contains(':'))
        {
            return Err(bad("bad host"));
        }
        let port =
            port.map(|p| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad("bad port"))).transpose()?;
        if user
            .as_deref()
            .is_some_and(|u| u.starts_with('-') || u.contains(|c: char| c.is_whitespace() || c.is_control()))
        {
            return Err(bad("bad user"));
        }
        Ok(SshTarget { user, host: host.to_owned(), port })
    }
}

impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ssh://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// A running ControlMaster and the private directory of its socket.
#[derive(Debug)]
struct Master {
    dir: tempfile::TempDir,
}

impl Master {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("m")
    }
}

/// A host reached with `ssh`. See the crate documentation for the choices.
#[derive(Debug)]
pub struct Ssh {
    target: SshTarget,
    options: Vec<String>,
    connect_timeout: Duration,
    multiplex: bool,
    master: Mutex<Option<Master>>,
}

impl Ssh {
    /// A host at `target`; `options` are passed to every `ssh` invocation
    /// before fleetgate's own (e.g. `["-F", "/path/ssh_config"]`, or
    /// `["-o", "Port=2222"]`).
    #[must_use]
    pub fn new(target: SshTarget, options: Vec<String>) -> Ssh {
        Ssh { target, options, connect_timeout: Duration::from_secs(10), multiplex: true, master: Mutex::new(None) }
    }

    /// Sets `ConnectTimeout` (default 10 s; whole seconds, at least 1).
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Ssh {
        self.connect_timeout = timeout;
        self
    }

    /// Turns connection sharing (ControlMaster) on or off (default on).
    #[must_use]
    pub fn with_multiplexing(mut self, on: bool) -> Ssh {
        self.multiplex = on;
        self
    }

    /// The target.
    #[must_use]
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// The control socket of the running ControlMaster, if one is running
    /// (none is started): another `ssh` (e.g. `nix copy`'s, through
    /// `NIX_SSHOPTS`) given `-o ControlMaster=no -o ControlPath=…` rides the
    /// same login instead of logging in again — and logs in by itself if the
    /// master has gone.
    #[must_use]
    pub fn control_path(&self) -> Option<PathBuf> {
        self.master.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map(Master::socket)
    }

    /// Logs in now and keeps the login as the shared connection (the
    /// ControlMaster later commands ride), so that the first command does
    /// not wait for it; nothing is run on the host. A no-op without
    /// multiplexing or when the connection is up.
    ///
    /// # Errors
    /// [`TransportError::Unreachable`] (a later command tries again), or a
    /// timeout after `timeout`.
    pub fn connect(&self, timeout: Duration) -> Result<(), TransportError> {
        self.control_socket(timeout).map(|_| ())
    }

    /// `ssh` with the caller's options, fleetgate's defaults and the target's
    /// user and port, ready for more options then the destination.
    fn base(&self) -> Command {
        let mut command = Command::new("ssh");
        command.args(&self.options);
        let secs = self.connect_timeout.as_secs().max(1);
        command.args(["-o", "BatchMode=yes", "-o", &format!("ConnectTimeout={secs}"), "-T"]);
        if let Some(user) = &self.target.user {
            command.args(["-l", user]);
        }
        if let Some(port) = self.target.port {
            command.args(["-p", &port.to_string()]);
        }
        command
    }

    fn unreachable(&self, detail: String) -> TransportError {
        TransportError::Unreachable {
            target: self.describe(),
            detail: if detail.trim().is_empty() {
                "ssh failed without a message".to_owned()
            } else {
                detail.trim().to_owned()
            },
        }
    }

    /// The control socket of a running master, starting one if needed;
    /// `None` without multiplexing.
    fn control_socket(&self, timeout: Duration) -> Result<Option<PathBuf>, TransportError> {
        if !self.multiplex {
            return Ok(None);
        }
        let mut master = self.master.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(m) = master.as_ref() {
            return Ok(Some(m.socket()));
        }
        let dir = tempfile::Builder::new().prefix("fleetgate-ssh-").tempdir().map_err(|source| TransportError::Io {
            what: "creating a directory for the ssh control socket".to_owned(),
            source,
        })?;
        let started = Master { dir };
        let log = started.dir.path().join("log");
        let mut command = self.base();
        command
            .args(["-M", "-N", "-f", "-o", "ControlPersist=yes"])
            .arg("-o")
            .arg(format!("ControlPath={}", started.socket().display()))
            .arg("-E")
            .arg(&log)
            .arg(&self.target.host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child =
            command.spawn().map_err(|source| TransportError::Spawn { program: "ssh".to_owned(), source })?;
        // With -f, ssh forks into the background once authenticated and the
        // process we started exits: 0 when connected, 255 when not.
        let status = match child.wait_timeout(timeout) {
            Ok(Some(status)) => status,
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TransportError::Timeout {
                    target: self.describe(),
                    command: "ssh -M (connecting)".to_owned(),
                    after: timeout,
                });
            }
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TransportError::Io { what: "waiting for ssh".to_owned(), source });
            }
        };
        if !status.success() {
            let detail = std::fs::read(&log).map(|b| tail(&b)).unwrap_or_default();
            return Err(self.unreachable(detail));
        }
        let socket = started.socket();
        *master = Some(started);
        Ok(Some(socket))
    }

    fn stop_master(&self) {
        let mut master = self.master.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(m) = master.take() {
            let mut command = self.base();
            command
                .arg("-o")
                .arg(format!("ControlPath={}", m.socket().display()))
                .args(["-O", "exit"])
                .arg(&self.target.host);
            let _ = fleetgate_process::run_command(command, None, Duration::from_secs(10));
        }
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        self.stop_master();
    }
}

impl Transport for Ssh {
    fn describe(&self) -> String {
        self.target.to_string()
    }

    /// Runs `argv` on the host: each word is quoted for the remote shell.
    /// An exit status of 255 is `ssh`'s own failure and is reported as
    /// [`TransportError::Unreachable`]; commands run through this transport
    /// must not use 255 themselves.
    fn run(&self, argv: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Result<Output, TransportError> {
        if argv.is_empty() {
            return Err(TransportError::InvalidArgument("empty command".to_owned()));
        }
        let remote: Vec<String> = argv.iter().map(|w| shell_quote(w)).collect();
        let remote = remote.join(" ");
        let socket = self.control_socket(timeout)?;
        let mut command = self.base();
        if let Some(socket) = socket {
            command.args(["-o", "ControlMaster=no"]).arg("-o").arg(format!("ControlPath={}", socket.display()));
        }
        command.arg(&self.target.host).arg("--").arg(&remote);
        let out = process::run(command, stdin, timeout, self.describe(), remote)?;
        if out.status == Some(SSH_ERROR) {
            return Err(self.unreachable(tail(&out.stderr)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::SshTarget;

    #[test]
    fn parses_ssh_targets() {
        let t = SshTarget::parse("ssh://root@web1:2222").expect("valid");
        assert_eq!((t.user(), t.host(), t.port()), (Some("root"), "web1", Some(2222)));
        assert_eq!(t.store_uri(), "ssh://root@web1");
        let t = SshTarget::from_parts(Some("root"), "fd00::1", Some(22)).expect("IPv6");
        assert_eq!(
            (t.host(), t.to_string(), t.store_uri()),
            ("fd00::1", "ssh://root@[fd00::1]:22".to_owned(), "ssh://root@[fd00::1]".to_owned())
        );
        assert_eq!(SshTarget::from_parts(None, "[fd00::1]", None).expect("bracketed").host(), "fd00::1");
        for bad in ["-oProxyCommand=touch /tmp/x", "host;reboot", "a b", "", "h@x"] {
            assert!(SshTarget::from_parts(Some("root"), bad, None).is_err(), "{bad:?} must be rejected");
        }
        assert!(SshTarget::from_parts(Some("-oX"), "h", None).is_err());
        let t = SshTarget::parse("ssh://web1").expect("valid");
        assert_eq!((t.user(), t.host(), t.port()), (None, "web1", None));
        let t = SshTarget::parse("ssh://admin@[fe80::1]:22").expect("valid");
        assert_eq!((t.host(), t.port()), ("fe80::1", Some(22)));
        assert_eq!(t.to_string(), "ssh://admin@[fe80::1]:22");
        for bad in [
            "web1",
            "ssh://",
            "ssh://@h",
            "ssh://h:0",
            "ssh://h:x",
            "ssh://-oProxyCommand=x",
            "ssh://h/path",
            "ssh://[::1",
        ] {
            assert!(SshTarget::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
