//! The fleet for people: a table that fits 80 columns on a terminal, plain `key=value`
//! lines otherwise (one per host, for grep and logs). JSON is [`crate::FleetStatus`]'s
//! serde form.
//!
//! Systems are shown by the first 7 characters of their store hash — enough to see
//! which of desired, current, booted and default agree. `=` in a column means "same as
//! desired".
use std::fmt::Write as _;

use crate::fleet::FleetStatus;
use crate::model::{HostStatus, short_hash};
use crate::state::duration;

/// The table width.
pub const WIDTH: usize = 80;

/// A system in a column: its short hash, `=` when it is the desired one, `-` unknown.
fn system_cell(system: Option<&str>, desired: Option<&str>) -> String {
    match system {
        None => "-".to_owned(),
        Some(s) if Some(s) == desired => "=".to_owned(),
        Some(s) => short_hash(s).to_owned(),
    }
}

fn debt_cell(h: &HostStatus) -> String {
    match &h.boot_debt {
        None => "?".to_owned(),
        Some(d) => d.len().to_string(),
    }
}

fn seen_cell(h: &HostStatus, now: i64) -> String {
    h.last_seen.map_or_else(|| "never".to_owned(), |s| duration(now - s))
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The table: one row per host, then why each host that is not converged is so (one
/// line each), then the summary line. Fits [`WIDTH`] columns.
#[must_use]
pub fn table(fleet: &FleetStatus) -> String {
    let now = fleet.generated_at;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<14} {:<7} {:<7} {:<7} {:<7} {:>4} {:>6}",
        "HOST", "STATE", "DESIRED", "CURRENT", "BOOTED", "DEFAULT", "DEBT", "SEEN"
    );
    for h in &fleet.hosts {
        let desired = h.desired.as_ref().map(|d| d.system.as_str());
        let _ = writeln!(
            out,
            "{:<16} {:<14} {:<7} {:<7} {:<7} {:<7} {:>4} {:>6}",
            cut(&h.host, 16),
            h.state.as_str(),
            desired.map_or("-", short_hash),
            system_cell(h.current.as_deref(), desired),
            system_cell(h.booted.as_deref(), desired),
            system_cell(h.default.as_ref().and_then(|d| d.system.as_deref()), desired),
            debt_cell(h),
            cut(&seen_cell(h, now), 6),
        );
    }
    let notes: Vec<&HostStatus> = fleet.hosts.iter().filter(|h| h.state != crate::state::State::Converged).collect();
    if !notes.is_empty() {
        out.push('\n');
    }
    for h in notes {
        let _ = writeln!(out, "{}", cut(&format!("{}: {}", h.host, h.why), WIDTH));
    }
    let _ = writeln!(out, "{}", summary_line(fleet));
    out
}

/// Plain lines: one `key=value` line per host, then the summary.
#[must_use]
pub fn plain(fleet: &FleetStatus) -> String {
    let now = fleet.generated_at;
    let mut out = String::new();
    for h in &fleet.hosts {
        let desired = h.desired.as_ref().map(|d| d.system.as_str());
        let reboot = h
            .pending_reboot
            .as_ref()
            .map_or_else(|| "no".to_owned(), |p| p.reasons.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","));
        let _ = writeln!(
            out,
            "host={} state={} desired={} current={} booted={} default={} debt={} reboot={} seen={} why={:?}",
            h.host,
            h.state.as_str(),
            desired.unwrap_or("-"),
            h.current.as_deref().unwrap_or("-"),
            h.booted.as_deref().unwrap_or("-"),
            h.default.as_ref().map_or("-", |d| d.entry.as_str()),
            debt_cell(h),
            reboot,
            h.last_seen.map_or_else(|| "never".to_owned(), |s| format!("{}s", now - s)),
            h.why,
        );
    }
    let _ = writeln!(out, "{}", summary_line(fleet));
    out
}

/// `3 hosts: 1 converged, 1 pending-reboot, 1 blocked; boot debt 2 generations on 1 host`.
#[must_use]
pub fn summary_line(fleet: &FleetStatus) -> String {
    let s = &fleet.summary;
    let states: Vec<String> =
        s.states.iter().filter(|(_, n)| **n > 0).map(|(state, n)| format!("{n} {}", state.as_str())).collect();
    let mut line =
        format!("{} host(s): {}", s.hosts, if states.is_empty() { "none".to_owned() } else { states.join(", ") });
    if s.boot_debt > 0 {
        let _ = write!(line, "; boot debt {} generation(s) on {} host(s)", s.boot_debt, s.hosts_with_boot_debt);
    }
    if s.converged {
        line.push_str(" — converged");
    }
    line
}

/// The details of one host, for `fleetgate status HOST` on a terminal.
#[must_use]
pub fn host_details(h: &HostStatus, now: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: {} — {}", h.host, h.state.as_str(), h.why);
    let line = |out: &mut String, key: &str, value: &str| {
        let _ = writeln!(out, "  {key:<15} {value}");
    };
    if let Some(d) = &h.desired {
        let since = d.since.map_or_else(String::new, |s| format!(" (since {} ago)", duration(now - s)));
        line(&mut out, "desired", &format!("{}{since}", d.system));
    }
    line(&mut out, "current", h.current.as_deref().unwrap_or("-"));
    line(&mut out, "booted", h.booted.as_deref().unwrap_or("-"));
    if let Some(d) = &h.default {
        line(&mut out, "default", &format!("{} {}", d.entry, d.system.as_deref().unwrap_or("")));
    }
    if let Some(p) = &h.pending_reboot {
        let words: Vec<&str> = p.reasons.iter().map(|r| r.as_str()).collect();
        line(&mut out, "pending reboot", &words.join(", "));
    }
    for f in h.last_result.iter().flat_map(|r| &r.findings) {
        let _ = writeln!(out, "  [{}] {}: {}", f.severity.as_str(), f.id, f.message);
        if let Some(fix) = &f.fix {
            let _ = writeln!(out, "      fix: {fix}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Desired;
    use crate::state::State;

    #[test]
    fn every_table_line_fits_80_columns() {
        let mut h = HostStatus::new("a-very-long-host-name-indeed");
        h.state = State::PendingReboot;
        h.why = "x".repeat(200);
        h.desired = Some(Desired {
            commit: None,
            system: "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system".into(),
            since: None,
            source: crate::model::DesiredSource::Manifest,
        });
        h.last_seen = Some(0);
        let fleet = FleetStatus::new(vec![h], 10_000_000);
        let text = table(&fleet);
        for l in text.lines().filter(|l| !l.contains("host(s)")) {
            assert!(l.chars().count() <= WIDTH, "{l:?}");
        }
        assert!(text.contains("aaaaaaa"));
    }
}
