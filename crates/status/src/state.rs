//! A host's state in one word, and its precedence.
//!
//! The state answers "what does this host need from me?", so when several conditions
//! hold the most urgent wins. Precedence, highest first:
//!
//! | state | when | what to do |
//! | --- | --- | --- |
//! | `failed` | the last attempt at the desired system failed or was rolled back, and the host does not run it | read the findings and the message; push a fix (a newer commit is tried by itself) |
//! | `blocked` | the pre-flight check refused the desired system; nothing was applied | fix the configuration (the findings say how) |
//! | `unreachable` | fleetgate tried to reach the host (SSH, a deploy) and could not, after its last sign of life | look at the machine or its network |
//! | `stale` | nothing was heard from it for longer than [`Thresholds::stale_after`], or it has not taken the desired system for that long without saying why | look at its agent (or run `--live`) |
//! | `pending-reboot` | it runs or has staged the desired system, but needs a reboot to finish (kernel, initrd, inhibitor, staged) | reboot it, or let its reboot window come |
//! | `in-flight` | the desired system is newer than what it runs, and recent (or an apply is reported under way) | wait |
//! | `converged` | it runs the desired system, boots it next, and needs no reboot | nothing |
//! | `unknown` | no desired system is known for it, or nothing at all | publish a manifest or deploy it |
//!
//! *Unreachable* and *stale* are told apart: unreachable is a failed attempt to reach the
//! host; stale is silence. Neither is *in flight*, which is a recent change on its way.
//! `converged` ranks below `stale` and `unreachable` on purpose: a host is only called
//! converged on fresh knowledge. Boot debt does not change the state (a converged host
//! can carry it); it is shown next to it and counted in the summary.
use serde::{Deserialize, Serialize};

use crate::model::{HostStatus, Outcome, PendingReboot, RebootReason};

/// A host's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// The last attempt failed or was rolled back.
    Failed,
    /// The pre-flight check refused the desired system.
    Blocked,
    /// The last attempt to reach it failed.
    Unreachable,
    /// Not heard of for too long, or stuck without saying why.
    Stale,
    /// Needs a reboot to finish.
    PendingReboot,
    /// A change on its way.
    InFlight,
    /// Runs and boots the desired system.
    Converged,
    /// No desired system known.
    Unknown,
}

impl State {
    /// Every state, in precedence order (highest first).
    pub const ALL: [State; 8] = [
        State::Failed,
        State::Blocked,
        State::Unreachable,
        State::Stale,
        State::PendingReboot,
        State::InFlight,
        State::Converged,
        State::Unknown,
    ];

    /// The state's word.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            State::Failed => "failed",
            State::Blocked => "blocked",
            State::Unreachable => "unreachable",
            State::Stale => "stale",
            State::PendingReboot => "pending-reboot",
            State::InFlight => "in-flight",
            State::Converged => "converged",
            State::Unknown => "unknown",
        }
    }

    /// Parses a state's word.
    #[must_use]
    pub fn parse(word: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == word)
    }

    /// Needs a human now (failed, blocked).
    #[must_use]
    pub fn needs_action(self) -> bool {
        matches!(self, State::Failed | State::Blocked)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When silence becomes `stale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Seconds without news (or without progress towards the desired system) after which
    /// a host is `stale` (default one hour: agents report at every poll).
    pub stale_after: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { stale_after: 3600 }
    }
}

/// Derives the state (and its one-line reason) of a host from what is known, at `now`.
#[must_use]
pub fn derive(h: &HostStatus, now: i64, t: Thresholds) -> (State, String) {
    let desired = h.desired.as_ref().map(|d| d.system.as_str());
    let runs_desired = desired.is_some() && h.current.as_deref() == desired;
    if let Some(r) = &h.last_result {
        let about_desired = desired.is_none() || r.system.is_none() || r.system.as_deref() == desired;
        if r.outcome.is_failure() && about_desired && !runs_desired {
            return (State::Failed, format!("{} {}", r.outcome.as_str(), message_or(r.message.as_deref())));
        }
        if r.outcome == Outcome::Blocked && about_desired && !runs_desired {
            let first = r.findings.iter().find(|f| f.severity == fleetgate_facts::Severity::Error);
            let why = first.map_or_else(|| message_or(r.message.as_deref()), |f| f.id.clone());
            return (State::Blocked, format!("refused by the pre-flight check: {why}"));
        }
    }
    if let Some(since) = h.unreachable_since {
        let why = h.unreachable_why.as_deref().map_or_else(String::new, |w| format!(": {w}"));
        return (State::Unreachable, format!("could not be reached {}{why}", ago(now - since)));
    }
    let Some(desired) = desired else {
        return match h.last_seen {
            Some(_) => (State::Unknown, "no desired system: no manifest, no deploy".to_owned()),
            None => (State::Unknown, "nothing is known about it".to_owned()),
        };
    };
    match h.last_seen {
        None => return (State::Stale, "never heard of since its desired system was set".to_owned()),
        Some(seen) if now - seen > t.stale_after => {
            return (State::Stale, format!("last heard of {}", ago(now - seen)));
        }
        Some(_) => {}
    }
    if let Some(p) = pending(h, desired) {
        let words: Vec<&str> = p.reasons.iter().map(|r| r.as_str()).collect();
        return (State::PendingReboot, format!("needs a reboot: {}", words.join(", ")));
    }
    if !runs_desired {
        let in_progress = h.last_result.as_ref().is_some_and(|r| r.outcome == Outcome::InProgress);
        let since = h.desired.as_ref().and_then(|d| d.since);
        return match since {
            Some(since) if !in_progress && now - since > t.stale_after => {
                (State::Stale, format!("has not taken the desired system, desired for {}", duration(now - since)))
            }
            _ => (State::InFlight, "the desired system is on its way".to_owned()),
        };
    }
    if let Some(default) = h.default.as_ref().and_then(|d| d.system.as_deref())
        && default != desired
    {
        return (State::InFlight, "runs the desired system, but does not boot it next yet".to_owned());
    }
    (State::Converged, "runs the desired system and boots it next".to_owned())
}

/// The host's pending reboot: the one reported, or the desired system staged as the
/// default while another one runs.
fn pending(h: &HostStatus, desired: &str) -> Option<PendingReboot> {
    if let Some(p) = &h.pending_reboot
        && !p.reasons.is_empty()
    {
        return Some(p.clone());
    }
    let staged =
        h.default.as_ref().and_then(|d| d.system.as_deref()) == Some(desired) && h.current.as_deref() != Some(desired);
    staged.then(|| PendingReboot { reasons: vec![RebootReason::Staged], detail: None })
}

fn message_or(message: Option<&str>) -> String {
    message.map_or_else(String::new, |m| m.lines().next().unwrap_or("").chars().take(120).collect())
}

/// `12 s`, `5 min`, `3 h`, `2 days`.
#[must_use]
pub fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

fn ago(secs: i64) -> String {
    format!("{} ago", duration(secs))
}

/// Sets `h.state` and `h.why` from what `h` holds, and the manifest's age, for `now`.
pub fn settle(h: &mut HostStatus, now: i64, t: Thresholds) {
    if let Some(d) = h.desired.as_ref().filter(|d| d.source == crate::model::DesiredSource::Manifest)
        && let Some(since) = d.since
    {
        h.manifest_age = Some((now - since).max(0));
    }
    let (state, why) = derive(h, now, t);
    h.state = state;
    h.why = why;
}

#[cfg(test)]
mod tests {
    use fleetgate_facts::{Finding, Severity};

    use super::*;
    use crate::model::{DefaultEntry, Desired, DesiredSource, LastResult, Source, UNREACHABLE_WHY_CHARS};

    const OLD: &str = "/nix/store/00000000000000000000000000000000-nixos-system-web1";
    const NEW: &str = "/nix/store/11111111111111111111111111111111-nixos-system-web1";
    const NOW: i64 = 1_000_000;

    fn host() -> HostStatus {
        let mut h = HostStatus::new("web1");
        h.desired =
            Some(Desired { commit: None, system: NEW.into(), since: Some(NOW - 60), source: DesiredSource::Manifest });
        h.current = Some(NEW.into());
        h.booted = Some(NEW.into());
        h.default = Some(DefaultEntry { entry: "e".into(), generation: Some(2), system: Some(NEW.into()) });
        h.last_seen = Some(NOW - 10);
        h
    }

    fn result(outcome: Outcome, system: &str) -> LastResult {
        LastResult {
            outcome,
            at: NOW - 5,
            system: Some(system.into()),
            commit: None,
            message: Some("health check nginx failed".into()),
            findings: vec![Finding::new("initrd.missing-modules", Severity::Error, "no virtio_blk")],
            source: Source::Agent,
        }
    }

    fn state(h: &HostStatus) -> State {
        derive(h, NOW, Thresholds::default()).0
    }

    #[test]
    fn a_host_running_and_booting_what_it_should_is_converged() {
        assert_eq!(state(&host()), State::Converged);
    }

    #[test]
    fn failure_and_refusal_win_while_the_host_does_not_run_the_desired_system() {
        let mut h = host();
        h.current = Some(OLD.into());
        h.default = None;
        h.last_result = Some(result(Outcome::RolledBack, NEW));
        h.unreachable_since = Some(NOW);
        assert_eq!(state(&h), State::Failed);
        h.last_result = Some(result(Outcome::Blocked, NEW));
        let (s, why) = derive(&h, NOW, Thresholds::default());
        assert_eq!((s, why.as_str()), (State::Blocked, "refused by the pre-flight check: initrd.missing-modules"));
        // A failure about an older system does not make the new desired one failed.
        h.last_result = Some(result(Outcome::Failed, OLD));
        assert_eq!(state(&h), State::Unreachable);
        // Once it runs the desired system, an old failure is history.
        h.unreachable_since = None;
        h.current = Some(NEW.into());
        h.last_result = Some(result(Outcome::Failed, NEW));
        assert_eq!(state(&h), State::Converged);
    }

    #[test]
    fn unreachable_is_a_failed_attempt_stale_is_silence_in_flight_is_recent() {
        let mut h = host();
        h.current = Some(OLD.into());
        h.default = None;
        assert_eq!(state(&h), State::InFlight);
        h.desired.as_mut().unwrap().since = Some(NOW - 7200);
        assert_eq!(state(&h), State::Stale, "not taken for two hours without a word");
        h.last_result = Some(result(Outcome::InProgress, NEW));
        assert_eq!(state(&h), State::InFlight, "an apply is reported under way");
        h.last_seen = Some(NOW - 7200);
        assert_eq!(state(&h), State::Stale);
        h.unreachable_since = Some(NOW - 30);
        let (s, why) = derive(&h, NOW, Thresholds::default());
        assert_eq!((s, why.as_str()), (State::Unreachable, "could not be reached 30 s ago"));
        h.unreachable(NOW - 20, "\n  ssh: connect to host db1 port 22: No route to host\r\nmore\n");
        let (s, why) = derive(&h, NOW, Thresholds::default());
        assert_eq!(
            (s, why.as_str()),
            (State::Unreachable, "could not be reached 20 s ago: ssh: connect to host db1 port 22: No route to host"),
            "the attempt's first line says why"
        );
        h.unreachable(NOW - 10, &"x\u{1b}".repeat(500));
        assert_eq!(
            h.unreachable_why.as_deref(),
            Some("x".repeat(UNREACHABLE_WHY_CHARS).as_str()),
            "bounded, no controls"
        );
        h.unreachable(NOW - 40, "older");
        assert_eq!(h.unreachable_since, Some(NOW - 10), "an older failure does not replace a newer one");
        h.seen(NOW - 5);
        assert_eq!((h.unreachable_since, h.unreachable_why.as_deref()), (None, None), "seen since");
        h.unreachable(NOW - 6, "before it was seen");
        assert_eq!(h.unreachable_since, None, "a failure before a sign of life is history");
    }

    #[test]
    fn a_staged_or_reported_reboot_is_pending() {
        let mut h = host();
        h.current = Some(OLD.into());
        let (s, why) = derive(&h, NOW, Thresholds::default());
        assert_eq!((s, why.as_str()), (State::PendingReboot, "needs a reboot: staged"));
        h.current = Some(NEW.into());
        h.pending_reboot =
            Some(PendingReboot { reasons: vec![RebootReason::Kernel, RebootReason::Initrd], detail: None });
        let (s, why) = derive(&h, NOW, Thresholds::default());
        assert_eq!((s, why.as_str()), (State::PendingReboot, "needs a reboot: kernel, initrd"));
    }

    #[test]
    fn running_but_not_booting_the_desired_system_is_not_converged() {
        let mut h = host();
        h.default = Some(DefaultEntry { entry: "e".into(), generation: Some(1), system: Some(OLD.into()) });
        assert_eq!(state(&h), State::InFlight);
    }

    #[test]
    fn no_desired_system_is_unknown() {
        let mut h = host();
        h.desired = None;
        assert_eq!(state(&h), State::Unknown);
        assert_eq!(state(&HostStatus::new("x")), State::Unknown);
    }

    #[test]
    fn words_round_trip_in_precedence_order() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!(State::ALL.windows(2).all(|w| w[0] < w[1]));
    }
}
