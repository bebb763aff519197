//! What the agent tells the server after every attempt: exactly the report
//! schema of the status model, [`fleetgate_status::report::ReportV2`]
//! (`{"v":2,…}`: desired commit and path, current, booted, the boot loader's
//! default entry, boot debt, a pending reboot and why, the last result with
//! its findings, the profile's generations, the agent's version; documented in
//! docs/status.md, validated by the server with
//! [`fleetgate_status::AgentReport::parse`]). This module only builds it from
//! the agent's state and its view of the host, within the schema's bounds.
//!
//! A server that only reads version 1 (the `channel serve` of before the
//! status model) gets [`to_v1`] instead ([`crate::queue`] decides); the status
//! crate still reads version 1, so the fallback stays.

use fleetgate_facts::{Finding, Severity};
pub use fleetgate_status::report::{
    MAX_BODY, MAX_EVIDENCE, MAX_FINDINGS, MAX_GENERATIONS, MAX_LINE, MAX_TEXT, MAX_WORD, ReportV1, ReportV2 as Report,
    ReportedDesired as Desired, ReportedResult as ResultRecord, VERSION, is_commit, is_store_path,
};
pub use fleetgate_status::{BootDebt, DefaultEntry, GenerationRecord, Outcome, PendingReboot, RebootReason};

use crate::config::AgentConfig;
use crate::host::View;
use crate::state::AgentState;

/// The version-1 `message`'s bound (the status crate's v1 validation).
const MAX_V1_MESSAGE: usize = 4096;

/// `text` cut to at most `max` characters (the schema counts characters).
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

/// One line (no control characters), at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    cut(&text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>(), max)
}

/// Text (control characters but newlines and tabs replaced), at most `max` characters.
fn clean(text: &str, max: usize) -> String {
    cut(&text.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { ' ' } else { c }).collect::<String>(), max)
}

/// A finding cut to the report's bounds.
#[must_use]
pub fn bounded(f: &Finding) -> Finding {
    let id: String =
        f.id.chars().filter(|c| c.is_ascii_alphanumeric() || ".-_+:@/".contains(*c)).take(MAX_WORD).collect();
    Finding {
        id: if id.is_empty() { "agent.finding".to_owned() } else { id },
        severity: f.severity,
        message: clean(&f.message, MAX_TEXT),
        evidence: f.evidence.iter().take(MAX_EVIDENCE).map(|e| one_line(e, MAX_LINE)).collect(),
        fix: f.fix.as_deref().map(|x| clean(x, MAX_TEXT)),
    }
}

/// A result at `at`, its message bounded.
#[must_use]
pub fn result(
    outcome: Outcome,
    at: u64,
    system: Option<&str>,
    commit: Option<&str>,
    message: impl Into<String>,
) -> ResultRecord {
    ResultRecord {
        outcome,
        at: i64::try_from(at).unwrap_or(i64::MAX),
        system: system.map(str::to_owned),
        commit: commit.map(str::to_owned),
        message: Some(clean(&message.into(), MAX_TEXT)),
        findings: Vec::new(),
    }
}

/// What the agent adds to a [`ResultRecord`].
pub trait ResultExt {
    /// With findings (errors first, bounded).
    #[must_use]
    fn with_findings(self, findings: &[Finding]) -> Self;
    /// The findings of severity error.
    fn errors(&self) -> impl Iterator<Item = &Finding>;
}

impl ResultExt for ResultRecord {
    fn with_findings(mut self, findings: &[Finding]) -> ResultRecord {
        let mut f: Vec<&Finding> = findings.iter().collect();
        f.sort_by_key(|f| std::cmp::Reverse(f.severity));
        self.findings = f.into_iter().take(MAX_FINDINGS).map(bounded).collect();
        self
    }

    fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Error)
    }
}

/// The version-1 body for an old server: the outcome's word, the commit of
/// the running system when the agent knows it, the system, a message.
#[must_use]
pub fn to_v1(report: &Report) -> ReportV1 {
    let commit = match (&report.desired, &report.current) {
        (Some(d), Some(c)) if &d.system == c => d.commit.clone(),
        _ => None,
    };
    let mut message = report.result.as_ref().and_then(|r| r.message.clone()).unwrap_or_default();
    if let Some(p) = &report.pending_reboot {
        message = format!("{message} (reboot pending: {})", p.detail.as_deref().unwrap_or("waiting"));
    }
    ReportV1 {
        status: report.result.as_ref().map_or("ok", |r| r.outcome.as_str()).to_owned(),
        commit,
        system: report.current.clone().filter(|s| is_store_path(s)),
        message: (!message.trim().is_empty()).then(|| cut(message.trim(), MAX_V1_MESSAGE)),
    }
}

/// What changed between reports (everything but the time).
#[must_use]
pub fn digest(report: &Report) -> String {
    let mut copy = report.clone();
    copy.time = 0;
    crate::accept::digest(&serde_json::to_string(&copy).unwrap_or_default())
}

/// A store path the schema takes (`/nix/store/<hash>-<name>`), else nothing:
/// a host whose links point elsewhere reports "unknown", not a refused report.
fn path(s: &str) -> Option<String> {
    is_store_path(s).then(|| s.to_owned())
}

/// A full commit id the schema takes, else nothing.
fn full_commit(c: &str) -> Option<String> {
    is_commit(c).then(|| c.to_owned())
}

fn push_first(r: &mut ResultRecord, finding: Finding) {
    r.findings.insert(0, bounded(&finding));
    r.findings.truncate(MAX_FINDINGS);
}

/// The last result as reported: the stale-manifest and state-reset warnings
/// first, fields the schema would refuse dropped rather than sent.
fn reported_result(cfg: &AgentConfig, state: &AgentState, now: u64) -> Option<ResultRecord> {
    let mut r = state.last_result.clone()?;
    r.system = r.system.as_deref().and_then(path);
    r.commit = r.commit.as_deref().and_then(full_commit);
    r.findings = r.findings.iter().take(MAX_FINDINGS).map(bounded).collect();
    let stale =
        state.desired.as_ref().is_some_and(|d| crate::accept::age(&d.manifest, now) > cfg.stale_after.as_secs());
    if stale {
        let text = format!(
            "the newest manifest is older than {} s: CI may be dead, or updates withheld",
            cfg.stale_after.as_secs()
        );
        push_first(&mut r, Finding::new("manifest.stale", Severity::Warning, text));
    }
    if let Some(reset) = &state.reset {
        push_first(&mut r, Finding::new("agent.state-reset", Severity::Warning, reset.clone()));
    }
    Some(r)
}

/// The profile's generations as the timeline has them (the newest
/// [`MAX_GENERATIONS`]): which one is booted and which the default, which
/// failed here. Whether another one ever booted or was ever the default is
/// not known here (`None`, never `false`).
fn timeline(state: &AgentState, view: &View) -> Vec<GenerationRecord> {
    let default = view.default_generation();
    let skip = view.generations.len().saturating_sub(MAX_GENERATIONS);
    view.generations
        .iter()
        .skip(skip)
        .filter_map(|(number, system)| {
            Some(GenerationRecord {
                number: *number,
                system: path(system)?,
                booted: (system == &view.state.booted).then_some(true),
                default: (default == Some(*number)).then_some(true),
                failed: state.bad(system).is_some(),
                created_at: None,
            })
        })
        .collect()
}

fn findings(report: &mut Report) -> Option<&mut Vec<Finding>> {
    report.result.as_mut().map(|r| &mut r.findings)
}

fn body_size(report: &Report) -> usize {
    serde_json::to_vec(report).map_or(usize::MAX, |b| b.len())
}

/// `report` within the server's [`MAX_BODY`]: the field bounds allow more
/// (32 findings of 16 evidence lines), so it gives up, until it fits, the
/// findings' evidence (fewer lines each), then long messages and fixes, then
/// the last findings, then the oldest generations of the timeline.
fn fit(mut report: Report) -> Report {
    for keep in [8, 4, 2, 1, 0] {
        if body_size(&report) <= MAX_BODY {
            return report;
        }
        for f in findings(&mut report).into_iter().flatten() {
            f.evidence.truncate(keep);
        }
    }
    for f in findings(&mut report).into_iter().flatten() {
        f.message = cut(&f.message, MAX_LINE);
        f.fix = f.fix.as_deref().map(|x| cut(x, MAX_LINE));
    }
    while body_size(&report) > MAX_BODY && findings(&mut report).is_some_and(|f| f.pop().is_some()) {}
    let excess = report.generations.len();
    for _ in 0..excess {
        if body_size(&report) <= MAX_BODY {
            break;
        }
        report.generations.remove(0);
    }
    report
}

/// The report of `state` and `view` at `now`, within the schema's bounds
/// and the server's [`MAX_BODY`].
#[must_use]
pub fn build(cfg: &AgentConfig, state: &AgentState, view: Option<&View>, now: u64) -> Report {
    fit(Report {
        v: VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        time: i64::try_from(now).unwrap_or(i64::MAX),
        desired: state.desired.as_ref().and_then(|d| {
            Some(Desired {
                commit: full_commit(&d.manifest.commit),
                system: path(&d.manifest.system)?,
                since: i64::try_from(d.manifest.created_at).ok(),
            })
        }),
        current: view.and_then(|v| path(&v.state.current)),
        booted: view.and_then(|v| path(&v.state.booted)),
        default: view.and_then(|v| {
            v.default.as_ref().map(|d| DefaultEntry {
                entry: one_line(&d.entry, MAX_LINE),
                generation: v.default_generation(),
                system: d.system.as_deref().and_then(path),
            })
        }),
        boot_debt: view.and_then(View::boot_debt).map(|debt| {
            debt.into_iter()
                .take(MAX_GENERATIONS)
                .map(|(generation, system)| BootDebt { generation, system: path(&system), made_default_at: None })
                .collect()
        }),
        pending_reboot: state.pending_reboot.as_ref().map(|p| PendingReboot {
            reasons: if p.reasons.is_empty() { vec![RebootReason::Staged] } else { p.reasons.clone() },
            detail: Some(one_line(&p.why, MAX_LINE)),
        }),
        result: reported_result(cfg, state, now),
        generations: view.map(|v| timeline(state, v)).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_findings_and_the_v1_body() {
        let long = "x".repeat(5000);
        let f = Finding::new("initrd.missing-modules", Severity::Error, long.clone())
            .with_evidence((0..40).map(|i| format!("line {i}")));
        let r = result(Outcome::Blocked, 9, Some("/nix/store/a"), Some("c"), long).with_findings(&vec![f; 50]);
        assert_eq!(r.findings.len(), MAX_FINDINGS);
        assert_eq!(r.findings[0].evidence.len(), MAX_EVIDENCE);
        assert!(r.message.as_ref().is_some_and(|m| m.chars().count() <= MAX_TEXT && m.ends_with("...")));
        assert_eq!(r.errors().count(), MAX_FINDINGS);
        let sys = "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-nixos-system-web1";
        let report = Report {
            v: VERSION,
            agent_version: "0.1.0".into(),
            time: 5,
            desired: Some(Desired { commit: Some("a".repeat(40)), system: sys.into(), since: Some(1) }),
            current: Some(sys.into()),
            booted: None,
            default: None,
            boot_debt: None,
            pending_reboot: Some(PendingReboot {
                reasons: vec![RebootReason::Kernel],
                detail: Some("outside 01:00-05:00".into()),
            }),
            result: Some(result(Outcome::Applied, 5, Some(sys), None, "switched")),
            generations: Vec::new(),
        };
        let v1 = to_v1(&report);
        assert_eq!(
            (v1.status.as_str(), v1.commit.as_deref(), v1.system.as_deref()),
            ("applied", Some(&*"a".repeat(40)), Some(sys))
        );
        assert!(v1.message.as_deref().is_some_and(|m| m.contains("outside 01:00-05:00")));
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["v"], 2);
        assert_eq!(json["result"]["outcome"], "applied");
        let mut later = report.clone();
        later.time = 99;
        assert_eq!(digest(&later), digest(&report), "the time alone is no change");
    }

    #[test]
    fn one_line_and_clean_replace_control_characters() {
        assert_eq!(one_line("a\nb\tc\u{1b}", 10), "a b c ");
        assert_eq!(clean("a\nb\u{7}", 10), "a\nb ");
        assert_eq!(cut(&"é".repeat(10), 5), "éé...");
        assert_eq!(bounded(&Finding::new("<x>", Severity::Info, "m")).id, "x");
        assert_eq!(bounded(&Finding::new("<>", Severity::Info, "m")).id, "agent.finding");
    }

    #[test]
    fn a_report_full_to_every_field_bound_is_trimmed_to_the_servers_body_limit() {
        let sys = "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-nixos-system-web1";
        let f = Finding::new("initrd.missing-modules", Severity::Error, "m".repeat(MAX_TEXT))
            .with_evidence((0..MAX_EVIDENCE).map(|_| "e".repeat(MAX_LINE)))
            .with_fix("f".repeat(MAX_TEXT));
        let mut last = result(Outcome::Blocked, 9, Some(sys), None, "m");
        last.findings = vec![f.clone(); MAX_FINDINGS];
        let full = Report {
            v: VERSION,
            agent_version: "0.1.0".into(),
            time: 5,
            desired: None,
            current: Some(sys.into()),
            booted: None,
            default: None,
            boot_debt: None,
            pending_reboot: None,
            result: Some(last),
            generations: Vec::new(),
        };
        assert!(body_size(&full) > 4 * MAX_BODY, "the field bounds alone allow more than the body limit");
        let fitted = fit(full.clone());
        assert!(body_size(&fitted) <= MAX_BODY);
        let kept = &fitted.result.as_ref().expect("result").findings;
        assert_eq!(kept.len(), MAX_FINDINGS, "evidence goes first, findings stay");
        assert!(kept.iter().all(|f| f.evidence.len() <= 1), "{}", kept[0].evidence.len());
        let small = Report { result: Some(result(Outcome::Applied, 1, Some(sys), None, "ok")), ..full };
        assert_eq!(fit(small.clone()), small, "a report that fits is left alone");
    }
}
