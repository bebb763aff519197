//! `GET /metrics`: fleet gauges in Prometheus' text exposition format (version 0.0.4),
//! for a reader that sees every host (a scoped token would see partial fleet numbers;
//! it is refused).
//!
//! - `fleetgate_hosts{state="…"}`: hosts per state (every state, zeros included);
//! - `fleetgate_oldest_manifest_age_seconds`: the age of the oldest manifest (absent
//!   when there is none);
//! - `fleetgate_boot_debt_generations`: generations made default but never booted, over
//!   the fleet; `fleetgate_hosts_with_boot_debt`: hosts carrying some;
//! - `fleetgate_pending_reboots`: hosts that need a reboot.
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetgate_status::Summary;

use crate::routes::error;
use crate::state::{AppState, blocking};
use crate::status_routes::{unauthorized, viewer};

pub(crate) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(viewer) = viewer(&state, &headers) else { return unauthorized() };
    if !viewer.sees_all() {
        return error(StatusCode::FORBIDDEN, "/metrics needs a read token for every host");
    }
    let summary = blocking(state, |s| {
        s.refresh(false)?;
        s.fleet.summary()
    })
    .await;
    match summary {
        Ok(summary) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))],
            exposition(&summary),
        )
            .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.chain()),
    }
}

/// The summary as Prometheus text.
#[must_use]
pub fn exposition(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP fleetgate_hosts Hosts per state.\n# TYPE fleetgate_hosts gauge");
    for (state, n) in &s.states {
        let _ = writeln!(out, "fleetgate_hosts{{state=\"{}\"}} {n}", state.as_str());
    }
    if let Some(age) = s.oldest_manifest_age {
        let _ = writeln!(
            out,
            "# HELP fleetgate_oldest_manifest_age_seconds Age of the oldest manifest.\n\
             # TYPE fleetgate_oldest_manifest_age_seconds gauge\nfleetgate_oldest_manifest_age_seconds {age}"
        );
    }
    let gauges = [
        ("fleetgate_boot_debt_generations", "Generations made default but never booted, over the fleet.", s.boot_debt),
        ("fleetgate_hosts_with_boot_debt", "Hosts with boot debt.", s.hosts_with_boot_debt),
        ("fleetgate_pending_reboots", "Hosts that need a reboot.", s.pending_reboots),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use fleetgate_status::{HostStatus, State};

    use super::*;

    #[test]
    fn every_state_has_a_line_and_gauges_follow_the_summary() {
        let mut h = HostStatus::new("web1");
        h.state = State::PendingReboot;
        h.boot_debt = Some(vec![fleetgate_status::BootDebt { generation: 3, system: None, made_default_at: None }]);
        h.manifest_age = Some(42);
        let text = exposition(&fleetgate_status::fleet::summarize(&[&h]));
        assert!(text.contains("fleetgate_hosts{state=\"pending-reboot\"} 1\n"), "{text}");
        assert!(text.contains("fleetgate_hosts{state=\"converged\"} 0\n"));
        assert!(text.contains("fleetgate_oldest_manifest_age_seconds 42\n"));
        assert!(text.contains("fleetgate_boot_debt_generations 1\n"));
        assert!(text.lines().all(|l| l.starts_with('#') || l.split(' ').count() == 2), "{text}");
    }
}
