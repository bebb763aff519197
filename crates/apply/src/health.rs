//! Health checks that decide whether a new generation is kept: units that
//! must be active, `systemctl is-system-running` not worse than before,
//! commands on the host, and TCP/HTTP probes from where the engine runs.
//! The host-side checks run over a *new* login, so they also prove that a
//! new login works after the change.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use fleetgate_transport::{Transport, shell_quote as q};

use crate::scripts::Layout;

/// What must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthChecks {
    /// Units that must be active.
    pub units: Vec<String>,
    /// Shell commands on the host that must exit 0.
    pub commands: Vec<String>,
    /// `host:port` that must accept a TCP connection.
    pub tcp: Vec<String>,
    /// `http://` URLs that must answer 2xx.
    pub http: Vec<String>,
}

/// How bad a `systemctl is-system-running` answer is (lower is better).
#[must_use]
pub fn rank(state: &str) -> u8 {
    match state.trim() {
        "running" => 0,
        "starting" | "initializing" => 1,
        "degraded" => 2,
        _ => 3,
    }
}

/// `systemctl is-system-running` on the host (`unknown` if it cannot say).
pub fn system_state(t: &dyn Transport, layout: &Layout, timeout: Duration) -> String {
    let script = format!("{}systemctl is-system-running 2>/dev/null || true\n", layout.tools(&[]));
    t.run(&["/bin/sh", "-s"], Some(script.as_bytes()), timeout)
        .map(|o| o.stdout_text().trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn remote_script(checks: &HealthChecks, layout: &Layout) -> String {
    let mut s = layout.tools(&[]);
    s.push_str("echo \"state=$(systemctl is-system-running 2>/dev/null)\"\n");
    for unit in &checks.units {
        s.push_str(&format!(
            "systemctl is-active {u} >/dev/null 2>&1 || echo \"unit={u_raw} is $(systemctl is-active {u} 2>/dev/null)\"\n",
            u = q(unit),
            u_raw = unit.replace(['"', '$', '`', '\\'], "")
        ));
    }
    for (i, cmd) in checks.commands.iter().enumerate() {
        s.push_str(&format!("( {cmd} ) >/dev/null 2>&1 </dev/null || echo \"command={i} exit=$?\"\n"));
    }
    s
}

/// One round of checks; returns what failed (empty: healthy).
pub fn check_once(
    checks: &HealthChecks,
    t: &dyn Transport,
    layout: &Layout,
    baseline: &str,
    timeout: Duration,
) -> Vec<String> {
    let mut failed = Vec::new();
    match t.run(&["/bin/sh", "-s"], Some(remote_script(checks, layout).as_bytes()), timeout) {
        Err(e) => failed.push(format!(
            "cannot run the checks over a new login: {}",
            e.to_string().lines().next().unwrap_or_default()
        )),
        Ok(out) => {
            for line in out.stdout_text().lines() {
                if let Some(state) = line.strip_prefix("state=") {
                    let state = if state.trim().is_empty() { "unknown" } else { state.trim() };
                    if rank(state) > rank(baseline) {
                        failed.push(format!(
                            "systemctl is-system-running says {state} (it said {baseline} before the deploy)"
                        ));
                    }
                } else if let Some(unit) = line.strip_prefix("unit=") {
                    failed.push(format!("unit {unit}, must be active"));
                } else if let Some(rest) = line.strip_prefix("command=") {
                    let (i, exit) = rest.split_once(' ').unwrap_or((rest, ""));
                    let cmd = i.parse::<usize>().ok().and_then(|i| checks.commands.get(i)).cloned().unwrap_or_default();
                    failed.push(format!("health command `{cmd}` failed ({exit})"));
                }
            }
        }
    }
    for address in &checks.tcp {
        if let Err(e) = tcp(address, timeout.min(Duration::from_secs(10))) {
            failed.push(format!("TCP {address}: {e}"));
        }
    }
    for url in &checks.http {
        if let Err(e) = http(url, timeout.min(Duration::from_secs(10))) {
            failed.push(format!("HTTP {url}: {e}"));
        }
    }
    failed
}

fn tcp(address: &str, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<_> = address.to_socket_addrs().map_err(|e| e.to_string())?.collect();
    let mut last = "no address".to_owned();
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// A plain `http://` GET; 2xx is healthy.
fn http(url: &str, timeout: Duration) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs are probed")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address = if authority.contains(':') { authority.to_owned() } else { format!("{authority}:80") };
    let mut stream = tcp(&address, timeout)?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: fleetgate\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') { Ok(()) } else { Err(format!("answered {}", line.lines().next().unwrap_or("nothing"))) }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn states_rank() {
        assert!(rank("running") < rank("degraded") && rank("degraded") < rank("offline"));
        assert_eq!(rank("starting"), rank("initializing"));
    }

    #[test]
    fn commands_and_probes_run_locally() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten().take(2) {
                // Read the whole request head before answering: closing a socket
                // with unread bytes sends a reset.
                let mut request = Vec::new();
                let mut buf = [0u8; 256];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nok");
            }
        });
        let checks = HealthChecks {
            commands: vec!["true".into(), "exit 7".into()],
            tcp: vec![format!("127.0.0.1:{port}")],
            http: vec![format!("http://127.0.0.1:{port}/health")],
            units: vec![],
        };
        let failed =
            check_once(&checks, &fleetgate_transport::Local, &Layout::default(), "unknown", Duration::from_secs(10));
        assert_eq!(failed, ["health command `exit 7` failed (exit=7)"], "{failed:?}");
    }
}
