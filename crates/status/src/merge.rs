//! Putting the sources together: a manifest sets the desired system, an agent report what
//! the host runs and its last result, a deploy record what `fleetgate deploy` did, live
//! facts (see [`crate::live`]) what is true right now.
//!
//! Order of trust, when sources disagree: live facts (read just now) over the newest
//! agent report over deploy history; the desired system comes from the signed manifest
//! when there is one, else from the agent's own view of it, else from the last deploy.
use crate::model::{Desired, DesiredSource, HostStatus, LastResult, Outcome, Source};
use crate::report::{AgentReport, v1_outcome};

/// Sets the desired system from a manifest made at `created_at`, seen at `now`.
pub fn apply_manifest(h: &mut HostStatus, commit: &str, system: &str, created_at: i64, now: i64) {
    h.desired = Some(Desired {
        commit: Some(commit.to_owned()),
        system: system.to_owned(),
        since: Some(created_at),
        source: DesiredSource::Manifest,
    });
    h.manifest_age = Some((now - created_at).max(0));
}

/// Folds an agent report received at `received_at` into `h` (reports are applied oldest
/// first; a newer one replaces what an older one said).
pub fn apply_report(h: &mut HostStatus, report: &AgentReport, received_at: i64) {
    h.seen(received_at);
    match report {
        AgentReport::V1(r) => {
            if r.system.is_some() {
                h.current.clone_from(&r.system);
            }
            h.offer_result(LastResult {
                outcome: v1_outcome(&r.status),
                at: received_at,
                system: r.system.clone(),
                commit: r.commit.clone(),
                message: Some(match &r.message {
                    Some(m) => format!("{}: {m}", r.status),
                    None => r.status.clone(),
                }),
                findings: Vec::new(),
                source: Source::Agent,
            });
        }
        AgentReport::V2(r) => {
            h.agent_version = Some(r.agent_version.clone());
            h.current.clone_from(&r.current);
            h.booted.clone_from(&r.booted);
            h.default.clone_from(&r.default);
            h.boot_debt.clone_from(&r.boot_debt);
            h.pending_reboot.clone_from(&r.pending_reboot);
            if !r.generations.is_empty() {
                h.generations.clone_from(&r.generations);
            }
            if let Some(d) = &r.desired
                && h.desired.as_ref().is_none_or(|have| have.source != DesiredSource::Manifest)
            {
                h.desired = Some(Desired {
                    commit: d.commit.clone(),
                    system: d.system.clone(),
                    since: d.since,
                    source: DesiredSource::Agent,
                });
            }
            if let Some(res) = &r.result {
                // The agent's clock may be off: a result is never dated after its arrival.
                h.offer_result(LastResult {
                    outcome: res.outcome,
                    at: res.at.min(received_at),
                    system: res.system.clone(),
                    commit: res.commit.clone(),
                    message: res.message.clone(),
                    findings: res.findings.clone(),
                    source: Source::Agent,
                });
            }
        }
    }
}

/// One host's record of a `fleetgate deploy` run (from the history database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRecord {
    /// When the run started.
    pub at: i64,
    /// Its outcome (`deployed`, `up-to-date`, `blocked`, `failed`, `unreachable`, `skipped`).
    pub outcome: String,
    /// The system it deployed.
    pub new_system: Option<String>,
    /// The system the host ran at its end.
    pub running_system: Option<String>,
    /// Whether it was rolled back.
    pub rolled_back: bool,
    /// What happened.
    pub message: String,
    /// The plan's findings.
    pub findings: Vec<fleetgate_facts::Finding>,
}

/// Folds a deploy record into `h`: the deployed system is desired unless a manifest says
/// otherwise; an unreachable host is marked so; a newer source's facts are kept.
pub fn apply_deploy(h: &mut HostStatus, r: &DeployRecord) {
    let outcome = match r.outcome.as_str() {
        "deployed" => Outcome::Applied,
        "up-to-date" => Outcome::UpToDate,
        "blocked" => Outcome::Blocked,
        "unreachable" => Outcome::Unreachable,
        "skipped" => Outcome::Skipped,
        _ if r.rolled_back => Outcome::RolledBack,
        _ => Outcome::Failed,
    };
    if let Some(system) = &r.new_system
        && h.desired.as_ref().is_none_or(|d| d.source == DesiredSource::Deploy && d.since.is_none_or(|s| s <= r.at))
    {
        h.desired =
            Some(Desired { commit: None, system: system.clone(), since: Some(r.at), source: DesiredSource::Deploy });
    }
    if outcome == Outcome::Unreachable {
        h.unreachable(r.at, &r.message);
    } else {
        let newer = h.last_seen.is_none_or(|s| s <= r.at);
        h.seen(r.at);
        if newer && r.running_system.is_some() {
            h.current.clone_from(&r.running_system);
        }
    }
    h.offer_result(LastResult {
        outcome,
        at: r.at,
        system: r.new_system.clone(),
        commit: None,
        message: Some(r.message.clone()),
        findings: r.findings.clone(),
        source: Source::Deploy,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DefaultEntry;
    use crate::report::{ReportV1, ReportV2};

    const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web1";
    const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-web1";

    #[test]
    fn a_v1_report_sets_what_runs_and_the_last_result() {
        let mut h = HostStatus::new("web1");
        let r = ReportV1 { status: "ok".into(), commit: None, system: Some(A.into()), message: None };
        apply_report(&mut h, &AgentReport::V1(r), 50);
        assert_eq!(h.current.as_deref(), Some(A));
        assert_eq!(h.last_result.as_ref().map(|r| r.outcome), Some(Outcome::Applied));
        assert_eq!(h.last_seen, Some(50));
    }

    #[test]
    fn the_manifest_outranks_the_agents_view_of_the_desired_system() {
        let mut h = HostStatus::new("web1");
        apply_manifest(&mut h, &"c".repeat(40), B, 100, 160);
        assert_eq!(h.manifest_age, Some(60));
        let r = ReportV2 {
            v: 2,
            agent_version: "0.1.0".into(),
            time: 150,
            desired: Some(crate::report::ReportedDesired { commit: None, system: A.into(), since: None }),
            current: Some(A.into()),
            booted: Some(A.into()),
            default: Some(DefaultEntry { entry: "e".into(), generation: None, system: Some(A.into()) }),
            boot_debt: Some(vec![]),
            pending_reboot: None,
            result: None,
            generations: vec![],
        };
        apply_report(&mut h, &AgentReport::V2(Box::new(r)), 150);
        assert_eq!(h.desired.as_ref().map(|d| d.system.as_str()), Some(B));
        assert_eq!(h.agent_version.as_deref(), Some("0.1.0"));
    }

    #[test]
    fn a_deploy_that_could_not_reach_the_host_marks_it_unreachable_until_it_is_seen() {
        let mut h = HostStatus::new("db1");
        let record = |at, outcome: &str| DeployRecord {
            at,
            outcome: outcome.into(),
            new_system: Some(A.into()),
            running_system: None,
            rolled_back: false,
            message: "ssh: connect timed out".into(),
            findings: vec![],
        };
        apply_deploy(&mut h, &record(100, "unreachable"));
        assert_eq!(h.unreachable_since, Some(100));
        assert_eq!(h.unreachable_why.as_deref(), Some("ssh: connect timed out"), "what the deploy said");
        assert_eq!(h.desired.as_ref().map(|d| d.source), Some(DesiredSource::Deploy));
        apply_deploy(&mut h, &record(200, "deployed"));
        assert_eq!(h.unreachable_since, None);
        assert_eq!(h.unreachable_why, None, "seen since: the reason goes with the mark");
        assert_eq!(h.last_result.as_ref().map(|r| r.outcome), Some(Outcome::Applied));
    }
}
