//! Prometheus metrics, in the text exposition format, after every poll:
//! written atomically to a textfile (node_exporter's textfile collector) or
//! served on a loopback port (`GET /metrics`, one small thread, every
//! connection bounded in time and size). Names follow comin's where they fit
//! (`comin_need_to_reboot`, `comin_deployment_info`, …) with fleetgate's
//! prefix.
//!
//! | metric | meaning |
//! |---|---|
//! | `fleetgate_need_to_reboot` | 1 while the desired system waits for a reboot |
//! | `fleetgate_deployment_info{commit,status}` | 1, labelled with the desired commit and the last result |
//! | `fleetgate_last_fetch_failed` | 1 when the last poll got no answer from the manifest source |
//! | `fleetgate_last_apply_failed` | 1 when the last result is a failure (failed, rolled back, blocked) |
//! | `fleetgate_manifest_age_seconds` | now − the desired manifest's `created_at` |
//! | `fleetgate_manifest_stale` | 1 when that age is beyond `stale_after` |
//! | `fleetgate_boot_debt` | generations made default and not booted since (−1: cannot tell) |
//! | `fleetgate_bad_paths` | store paths that failed here and are never tried again |
//! | `fleetgate_reports_queued` | reports waiting for the server |
//! | `fleetgate_suspended` | 1 while upgrades are suspended |
//! | `fleetgate_last_poll_timestamp_seconds` | when the last poll ended |
//! | `fleetgate_agent_info{version}` | 1 |

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::AgentConfig;
use crate::host::View;
use crate::report::Outcome;
use crate::state::{AgentState, StateError, write_atomically};

/// What the metrics are made of.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The configuration.
    pub cfg: &'a AgentConfig,
    /// The state after the poll.
    pub state: &'a AgentState,
    /// Where the host stands.
    pub view: Option<&'a View>,
    /// Whether upgrades are suspended.
    pub suspended: bool,
    /// Reports waiting.
    pub queued: usize,
    /// Now (Unix seconds).
    pub now: u64,
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, i64)]) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
    for (labels, v) in samples {
        out.push_str(&format!("{name}{labels} {v}\n"));
    }
}

/// The text exposition of the metrics.
#[must_use]
pub fn render(i: &Inputs<'_>) -> String {
    let mut out = String::new();
    let b = |x: bool| vec![(String::new(), i64::from(x))];
    let age = i.state.desired.as_ref().map(|d| crate::accept::age(&d.manifest, i.now));
    gauge(
        &mut out,
        "fleetgate_need_to_reboot",
        "1 while the desired system waits for a reboot",
        &b(i.state.pending_reboot.is_some()),
    );
    let commit = i.state.desired.as_ref().map_or("", |d| d.manifest.commit.as_str());
    let status = i.state.last_result.as_ref().map_or("none", |r| r.outcome.as_str());
    gauge(
        &mut out,
        "fleetgate_deployment_info",
        "The desired commit and the last result",
        &[(format!("{{commit=\"{}\",status=\"{}\"}}", label(commit), label(status)), 1)],
    );
    gauge(
        &mut out,
        "fleetgate_last_fetch_failed",
        "1 when the last fetch of the manifest failed",
        &b(i.state.fetch.error.is_some()),
    );
    let failed = i
        .state
        .last_result
        .as_ref()
        .is_some_and(|r| matches!(r.outcome, Outcome::Failed | Outcome::RolledBack | Outcome::Blocked));
    gauge(&mut out, "fleetgate_last_apply_failed", "1 when the last result is a failure", &b(failed));
    if let Some(age) = age {
        gauge(
            &mut out,
            "fleetgate_manifest_age_seconds",
            "Seconds since the desired manifest was made",
            &[(String::new(), i64::try_from(age).unwrap_or(i64::MAX))],
        );
        gauge(
            &mut out,
            "fleetgate_manifest_stale",
            "1 when the manifest is older than stale_after",
            &b(age > i.cfg.stale_after.as_secs()),
        );
    }
    let debt = i.view.and_then(View::boot_debt).map_or(-1, |d| i64::try_from(d.len()).unwrap_or(i64::MAX));
    gauge(
        &mut out,
        "fleetgate_boot_debt",
        "Generations made default and not booted since (-1: cannot tell)",
        &[(String::new(), debt)],
    );
    gauge(
        &mut out,
        "fleetgate_bad_paths",
        "Store paths that failed here and are not tried again",
        &[(String::new(), i64::try_from(i.state.bad.len()).unwrap_or(i64::MAX))],
    );
    gauge(
        &mut out,
        "fleetgate_reports_queued",
        "Reports waiting for the server",
        &[(String::new(), i64::try_from(i.queued).unwrap_or(i64::MAX))],
    );
    gauge(&mut out, "fleetgate_suspended", "1 while upgrades are suspended", &b(i.suspended));
    gauge(
        &mut out,
        "fleetgate_last_poll_timestamp_seconds",
        "When the last poll ended",
        &[(String::new(), i64::try_from(i.now).unwrap_or(i64::MAX))],
    );
    gauge(
        &mut out,
        "fleetgate_agent_info",
        "The agent",
        &[(format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")), 1)],
    );
    out
}

/// Writes the textfile atomically.
///
/// # Errors
/// [`StateError::Io`].
pub fn write_textfile(path: &std::path::Path, text: &str) -> Result<(), StateError> {
    write_atomically(path, text.as_bytes(), 0o644)
}

/// The latest metrics, shared with the loopback server.
pub type Shared = Arc<Mutex<String>>;

/// Serves `GET /metrics` on `addr` (loopback) from a thread of its own.
///
/// # Errors
/// The bind error.
pub fn serve(addr: SocketAddr, shared: Shared) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("metrics".into()).stack_size(64 << 10).spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::with_capacity(512);
            let mut buf = [0u8; 512];
            while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let ok = head.starts_with(b"GET /metrics ") || head.starts_with(b"GET / ");
            let body = if ok { shared.lock().map(|t| t.clone()).unwrap_or_default() } else { "not found\n".to_owned() };
            let status = if ok { "200 OK" } else { "404 Not Found" };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::PendingReboot;

    #[test]
    fn metrics_say_what_the_state_says_and_are_served_on_loopback() {
        let cfg = crate::config::sample();
        let mut state = AgentState {
            pending_reboot: Some(PendingReboot {
                system: "/s".into(),
                why: "w".into(),
                reasons: vec![],
                since: 1,
                under: None,
            }),
            ..AgentState::default()
        };
        state.fetch.error = Some("down".into());
        let text = render(&Inputs { cfg: &cfg, state: &state, view: None, suspended: false, queued: 2, now: 5 });
        for line in [
            "fleetgate_need_to_reboot 1",
            "fleetgate_deployment_info{commit=\"\",status=\"none\"} 1",
            "fleetgate_last_fetch_failed 1",
            "fleetgate_last_apply_failed 0",
            "fleetgate_boot_debt -1",
            "fleetgate_reports_queued 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        let shared: Shared = Arc::new(Mutex::new(text.clone()));
        let addr = serve("127.0.0.1:0".parse().expect("addr"), shared).expect("serves");
        let mut c = std::net::TcpStream::connect(addr).expect("connect");
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
        let mut answer = String::new();
        c.read_to_string(&mut answer).expect("read");
        assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with(&text), "{answer}");
    }
}
