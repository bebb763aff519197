//! The fleet: hosts in name order, a summary, whether it is converged (the exit code of
//! `fleetgate status`), and the JSON document.
//!
//! Exit codes of `fleetgate status`:
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | every selected host is `converged` |
//! | 1 | at least one host is `failed` or `blocked`: a human must act |
//! | 2 | the status could not be read (bad options, no source, server refused) |
//! | 3 | none failed or blocked, but not every host is converged (pending reboots, in flight, stale, unreachable, unknown) |
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::HostStatus;
use crate::state::State;

/// Version of the fleet JSON document.
pub const FORMAT: u32 = 1;

/// Exit code: converged.
pub const EXIT_CONVERGED: u8 = 0;
/// Exit code: a host failed or is blocked.
pub const EXIT_ACTION: u8 = 1;
/// Exit code: not converged yet.
pub const EXIT_NOT_CONVERGED: u8 = 3;

/// Counts over the fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Hosts.
    pub hosts: usize,
    /// Hosts per state (every state present, zeros included).
    pub states: BTreeMap<State, usize>,
    /// Hosts carrying boot debt.
    pub hosts_with_boot_debt: usize,
    /// Generations of boot debt, over the fleet.
    pub boot_debt: usize,
    /// Hosts with a pending reboot.
    pub pending_reboots: usize,
    /// Age in seconds of the oldest manifest.
    pub oldest_manifest_age: Option<i64>,
    /// True if every host is converged.
    pub converged: bool,
}

/// The fleet's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// [`FORMAT`].
    pub format: u32,
    /// When it was put together (Unix seconds).
    pub generated_at: i64,
    /// The summary.
    pub summary: Summary,
    /// The hosts, by name.
    pub hosts: Vec<HostStatus>,
}

impl FleetStatus {
    /// The fleet of `hosts` (sorted by name here).
    #[must_use]
    pub fn new(mut hosts: Vec<HostStatus>, generated_at: i64) -> FleetStatus {
        hosts.sort_by(|a, b| a.host.cmp(&b.host));
        let summary = summarize(&hosts.iter().collect::<Vec<_>>());
        FleetStatus { format: FORMAT, generated_at, summary, hosts }
    }

    /// The exit code of `fleetgate status` for this fleet.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        if self.hosts.iter().any(|h| h.state.needs_action()) {
            EXIT_ACTION
        } else if self.summary.converged {
            EXIT_CONVERGED
        } else {
            EXIT_NOT_CONVERGED
        }
    }
}

/// Counts `hosts`.
#[must_use]
pub fn summarize(hosts: &[&HostStatus]) -> Summary {
    let mut states: BTreeMap<State, usize> = State::ALL.into_iter().map(|s| (s, 0)).collect();
    for h in hosts {
        *states.entry(h.state).or_default() += 1;
    }
    Summary {
        hosts: hosts.len(),
        hosts_with_boot_debt: hosts.iter().filter(|h| h.debt_count() > 0).count(),
        boot_debt: hosts.iter().map(|h| h.debt_count()).sum(),
        pending_reboots: hosts.iter().filter(|h| h.pending_reboot.is_some()).count(),
        oldest_manifest_age: hosts.iter().filter_map(|h| h.manifest_age).max(),
        converged: !hosts.is_empty() && hosts.iter().all(|h| h.state == State::Converged),
        states,
    }
}

/// `*` and `?` glob matching (host names, tags).
#[must_use]
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    // Iterative matcher with one backtrack point: linear in practice, no recursion.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some(pi);
                mark = ti;
                pi += 1;
            }
            Some(&c) if c == b'?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some(s) => {
                    pi = s + 1;
                    mark += 1;
                    ti = mark;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether a host is selected by `on` (`@tag` globs or name globs, comma-separated; empty
/// selects every host). `tags` are the host's tags.
#[must_use]
pub fn selected(on: &[String], host: &str, tags: &[String]) -> bool {
    on.is_empty()
        || on.iter().flat_map(|o| o.split(',')).filter(|o| !o.is_empty()).any(|o| match o.strip_prefix('@') {
            Some(tag) => tags.iter().any(|t| glob_match(tag, t)),
            None => glob_match(o, host),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, state: State) -> HostStatus {
        let mut h = HostStatus::new(name);
        h.state = state;
        h
    }

    #[test]
    fn exit_codes_say_whether_the_fleet_is_converged() {
        let f = |states: &[State]| {
            let hosts = states.iter().enumerate().map(|(i, s)| host(&format!("h{i}"), *s)).collect();
            FleetStatus::new(hosts, 0).exit_code()
        };
        assert_eq!(f(&[State::Converged, State::Converged]), EXIT_CONVERGED);
        assert_eq!(f(&[State::Converged, State::PendingReboot]), EXIT_NOT_CONVERGED);
        assert_eq!(f(&[State::Unreachable, State::Blocked]), EXIT_ACTION);
        assert_eq!(f(&[]), EXIT_NOT_CONVERGED, "an empty fleet is not converged");
    }

    #[test]
    fn summary_counts_every_state() {
        let s = summarize(&[&host("a", State::Stale), &host("b", State::Stale)]);
        assert_eq!(s.states[&State::Stale], 2);
        assert_eq!(s.states[&State::Converged], 0);
        assert_eq!(s.states.len(), State::ALL.len());
    }

    #[test]
    fn selection_by_glob_and_tag() {
        let tags = vec!["web".to_owned(), "eu-west".to_owned()];
        assert!(selected(&[], "x", &[]));
        assert!(selected(&["web*".into()], "web12", &[]));
        assert!(!selected(&["db?".into()], "db12", &[]));
        assert!(selected(&["db*,@eu-*".into()], "web1", &tags));
        assert!(!selected(&["@db".into()], "web1", &tags));
        assert!(glob_match("*a*b*", "xxaxxbxx") && !glob_match("*a*b", "ab_"));
        // Many stars finish quickly either way (no exponential backtracking).
        assert!(glob_match(&"*a".repeat(30), &"a".repeat(60)));
        assert!(!glob_match(&"*a".repeat(30), &"a".repeat(29)));
    }
}
