//! What the agent tells the server after every attempt: the report, in the
//! shape of the status model's version 2 (`{"v":2,…}`: desired commit and
//! path, current, booted, the boot loader's default entry, boot debt, a
//! pending reboot and why, the last result with its findings, the agent's
//! version), bounded to that schema's limits. A server that only reads
//! version 1 (`{"status","commit","system","message"}`, the `channel serve`
//! of before) gets [`Report::to_v1`] instead ([`crate::queue`] decides).

use fleetgate_facts::{Finding, Severity};
use serde::{Deserialize, Serialize};

use crate::config::AgentConfig;
use crate::host::View;
use crate::state::AgentState;

/// The report version written.
pub const VERSION: u32 = 2;
/// Findings in one report (the server's bound).
pub const MAX_FINDINGS: usize = 32;
/// Evidence lines per finding.
pub const MAX_EVIDENCE: usize = 16;
/// A message or a finding's text.
pub const MAX_TEXT: usize = 2048;
/// An evidence line.
pub const MAX_LINE: usize = 512;

/// How an attempt ended (the status model's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The desired system runs (live switch, or verified reboot) and is the default.
    Applied,
    /// It already ran the desired system.
    UpToDate,
    /// An apply is under way (a reboot into it, say).
    InProgress,
    /// Applied, unhealthy, rolled back (or fell back at boot).
    RolledBack,
    /// The attempt failed (or the manifest or closure was refused).
    Failed,
    /// The pre-flight check refused the system: nothing applied.
    Blocked,
    /// Not attempted (suspended, a known-bad path, a reboot that waits).
    Skipped,
}

impl Outcome {
    /// The word.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::UpToDate => "up-to-date",
            Outcome::InProgress => "in-progress",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "failed",
            Outcome::Blocked => "blocked",
            Outcome::Skipped => "skipped",
        }
    }
}

/// The last result, as the state keeps it and the report carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// How it ended.
    pub outcome: Outcome,
    /// When (Unix seconds).
    pub at: i64,
    /// The system it was about.
    pub system: Option<String>,
    /// Its commit.
    pub commit: Option<String>,
    /// What happened.
    pub message: Option<String>,
    /// The findings it rests on (check findings, refusals).
    #[serde(default)]
    pub findings: Vec<Finding>,
}

/// What the host should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// The manifest's commit.
    pub commit: Option<String>,
    /// The manifest's system.
    pub system: String,
    /// The manifest's `created_at`.
    pub since: Option<i64>,
}

/// The boot loader's default entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultEntry {
    /// The entry.
    pub entry: String,
    /// Its profile generation, when known.
    pub generation: Option<u64>,
    /// Its system, when known.
    pub system: Option<String>,
}

/// A generation made the default and never booted since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootDebt {
    /// The profile generation.
    pub generation: u64,
    /// Its system.
    pub system: Option<String>,
    /// When it was made the default, if known.
    pub made_default_at: Option<i64>,
}

/// A reboot the host needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReboot {
    /// `kernel`, `initrd`, `inhibitor`, `staged`.
    pub reasons: Vec<String>,
    /// Why it waits.
    pub detail: Option<String>,
}

/// A version-2 report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// [`VERSION`].
    pub v: u32,
    /// `fleetgate --version`'s number.
    pub agent_version: String,
    /// When it was made (Unix seconds).
    pub time: i64,
    /// What the host should run.
    pub desired: Option<Desired>,
    /// `/run/current-system`.
    pub current: Option<String>,
    /// `/run/booted-system`.
    pub booted: Option<String>,
    /// The boot loader's default entry.
    pub default: Option<DefaultEntry>,
    /// Boot debt (absent: cannot tell).
    pub boot_debt: Option<Vec<BootDebt>>,
    /// A reboot that waits.
    pub pending_reboot: Option<PendingReboot>,
    /// The last result.
    pub result: Option<ResultRecord>,
}

/// The version-1 body of `channel serve` before the status model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportV1 {
    /// The outcome's word (or `ok`).
    pub status: String,
    /// The commit it runs, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The system it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// One paragraph.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// A finding cut to the report's bounds.
#[must_use]
pub fn bounded(f: &Finding) -> Finding {
    Finding {
        id: cut(&f.id, 128),
        severity: f.severity,
        message: cut(&f.message, MAX_TEXT),
        evidence: f.evidence.iter().take(MAX_EVIDENCE).map(|e| cut(e, MAX_LINE)).collect(),
        fix: f.fix.as_deref().map(|x| cut(x, MAX_TEXT)),
    }
}

impl ResultRecord {
    /// A result now.
    #[must_use]
    pub fn new(
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
            message: Some(cut(&message.into(), MAX_TEXT)),
            findings: Vec::new(),
        }
    }

    /// With findings (errors first, bounded).
    #[must_use]
    pub fn with_findings(mut self, findings: &[Finding]) -> ResultRecord {
        let mut f: Vec<&Finding> = findings.iter().collect();
        f.sort_by_key(|f| std::cmp::Reverse(f.severity));
        self.findings = f.into_iter().take(MAX_FINDINGS).map(bounded).collect();
        self
    }

    /// The findings of severity error.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Error)
    }
}

impl Report {
    /// The version-1 body for an old server: the outcome's word, the commit
    /// of the running system when the agent knows it, the system, a message.
    #[must_use]
    pub fn to_v1(&self) -> ReportV1 {
        let commit = match (&self.desired, &self.current) {
            (Some(d), Some(c)) if &d.system == c => d.commit.clone(),
            _ => None,
        };
        let mut message = self.result.as_ref().and_then(|r| r.message.clone()).unwrap_or_default();
        if let Some(p) = &self.pending_reboot {
            message = format!("{message} (reboot pending: {})", p.detail.as_deref().unwrap_or("waiting"));
        }
        ReportV1 {
            status: self.result.as_ref().map_or("ok", |r| r.outcome.as_str()).to_owned(),
            commit,
            system: self.current.clone().filter(|s| fleetgate_channel::store_path::validate(s).is_ok()),
            message: (!message.trim().is_empty()).then(|| cut(message.trim(), 4096)),
        }
    }

    /// What changed between reports (everything but the time).
    #[must_use]
    pub fn digest(&self) -> String {
        let mut copy = self.clone();
        copy.time = 0;
        crate::accept::digest(&serde_json::to_string(&copy).unwrap_or_default())
    }
}

/// The report of `state` and `view` at `now`.
#[must_use]
pub fn build(cfg: &AgentConfig, state: &AgentState, view: Option<&View>, now: u64) -> Report {
    let stale =
        state.desired.as_ref().is_some_and(|d| crate::accept::age(&d.manifest, now) > cfg.stale_after.as_secs());
    let mut result = state.last_result.clone();
    if stale {
        let finding = Finding::new(
            "manifest.stale",
            fleetgate_facts::Severity::Warning,
            format!(
                "the newest manifest is older than {} s: CI may be dead, or updates withheld",
                cfg.stale_after.as_secs()
            ),
        );
        result = result.map(|mut r| {
            r.findings.insert(0, finding);
            r.findings.truncate(MAX_FINDINGS);
            r
        });
    }
    if let (Some(reset), Some(r)) = (&state.reset, result.as_mut()) {
        r.findings.insert(0, Finding::new("agent.state-reset", fleetgate_facts::Severity::Warning, reset.clone()));
        r.findings.truncate(MAX_FINDINGS);
    }
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Report {
        v: VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        time: i64::try_from(now).unwrap_or(i64::MAX),
        desired: state.desired.as_ref().map(|d| Desired {
            commit: Some(d.manifest.commit.clone()),
            system: d.manifest.system.clone(),
            since: i64::try_from(d.manifest.created_at).ok(),
        }),
        current: view.and_then(|v| nonempty(&v.state.current)),
        booted: view.and_then(|v| nonempty(&v.state.booted)),
        default: view.and_then(|v| {
            v.default.as_ref().map(|d| DefaultEntry {
                entry: d.entry.clone(),
                generation: v.default_generation(),
                system: d.system.clone(),
            })
        }),
        boot_debt: view.and_then(View::boot_debt).map(|debt| {
            debt.into_iter()
                .take(128)
                .map(|(generation, system)| BootDebt { generation, system: Some(system), made_default_at: None })
                .collect()
        }),
        pending_reboot: state
            .pending_reboot
            .as_ref()
            .map(|p| PendingReboot { reasons: p.reasons.clone(), detail: Some(p.why.clone()) }),
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_findings_and_the_v1_body() {
        let long = "x".repeat(5000);
        let f = Finding::new("initrd.missing-modules", Severity::Error, long.clone())
            .with_evidence((0..40).map(|i| format!("line {i}")));
        let r =
            ResultRecord::new(Outcome::Blocked, 9, Some("/nix/store/a"), Some("c"), long).with_findings(&vec![f; 50]);
        assert_eq!(r.findings.len(), MAX_FINDINGS);
        assert_eq!(r.findings[0].evidence.len(), MAX_EVIDENCE);
        assert!(r.message.as_ref().is_some_and(|m| m.len() <= MAX_TEXT && m.ends_with("...")));
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
                reasons: vec!["kernel".into()],
                detail: Some("outside 01:00-05:00".into()),
            }),
            result: Some(ResultRecord::new(Outcome::Applied, 5, Some(sys), None, "switched")),
        };
        let v1 = report.to_v1();
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
        assert_eq!(later.digest(), report.digest(), "the time alone is no change");
    }
}
