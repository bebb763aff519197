//! The protocol between lab commands and a host's supervisor: one JSON
//! request line, one JSON response line, over the host's `vmm.sock`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The power state of a lab host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Power {
    /// Powered off.
    Off,
    /// Firmware, stage 1 or stage 2 are running.
    Booting,
    /// Up: services started, sshd listening.
    Running,
    /// Stuck in stage 1 (waiting for the root device), until power-cycled.
    Hung,
    /// Emergency mode (stage 1 or 2 failed), until power-cycled.
    Emergency,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    pub host: String,
    pub power: Power,
    /// Boot attempts since the lab came up.
    pub boots: u64,
    /// `/proc/sys/kernel/random/boot_id` of the current boot.
    pub boot_id: Option<String>,
    /// Boot loader entry of the current boot.
    pub entry: Option<String>,
    /// System toplevel of the current boot.
    pub toplevel: Option<String>,
    /// Why the host is hung or in emergency mode.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// A clean reboot, as if the host ran `reboot`.
    Reboot,
    /// Cut power and turn it back on (works on a hung host).
    PowerCycle,
    PowerOff,
    PowerOn,
    /// Stop the host and the supervisor (used by `down`).
    Shutdown,
    /// Wait until the host made at least `min_boots` boot attempts and is in one
    /// of `states`.
    Wait {
        min_boots: u64,
        states: Vec<Power>,
        timeout_ms: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub status: Option<HostStatus>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the supervisor of {host} at {socket} (is the lab up? `fleetgate-lab status`)")]
    Connect { host: String, socket: String, source: std::io::Error },
    #[error("talking to the supervisor of {host}")]
    Io { host: String, source: std::io::Error },
    #[error("the supervisor of {host} sent a malformed answer: {detail}")]
    Protocol { host: String, detail: String },
    #[error("{host}: {message}")]
    Refused { host: String, message: String },
}

/// Sends one request and returns the host's status after it was handled.
pub fn request(host: &str, socket: &Path, request: &Request, timeout: Duration) -> Result<HostStatus, ControlError> {
    let io = |source| ControlError::Io { host: host.to_owned(), source };
    let mut stream = UnixStream::connect(socket).map_err(|source| ControlError::Connect {
        host: host.to_owned(),
        socket: socket.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(Duration::from_secs(10))).map_err(io)?;
    let mut line = serde_json::to_string(request)
        .map_err(|e| ControlError::Protocol { host: host.to_owned(), detail: e.to_string() })?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    let response: Response = serde_json::from_str(&answer)
        .map_err(|e| ControlError::Protocol { host: host.to_owned(), detail: format!("{e}: {answer:?}") })?;
    match (response.ok, response.status) {
        (true, Some(status)) => Ok(status),
        (_, _) => Err(ControlError::Refused {
            host: host.to_owned(),
            message: response.error.unwrap_or_else(|| "no status".into()),
        }),
    }
}
