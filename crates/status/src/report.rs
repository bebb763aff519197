//! The report a host's agent sends to the server (`POST /v1/hosts/<host>/report`, bearer
//! token of that host). An API boundary: the agent (`fleetgate agent`) depends on these
//! types; docs/status.md documents the JSON.
//!
//! Version 2 (`{"v":2,…}`) carries the four truths and what the agent knows about boot
//! debt, a pending reboot and its last result. Version 1 — the object without `v` that
//! `channel serve` always took, `{"status","commit"?,"system"?,"message"?}` — is still
//! accepted; [`AgentReport::parse`] reads both.
//!
//! Everything is bounded ([`MAX_FINDINGS`], [`MAX_GENERATIONS`], string lengths), and
//! unknown fields are refused, so a report cannot grow the database without limit or
//! smuggle data past the schema. Store paths must look like store paths, commits like
//! full commit ids, words like words.
use fleetgate_facts::{Finding, Severity};
use serde::{Deserialize, Serialize};

use crate::model::{BootDebt, DefaultEntry, GenerationRecord, Outcome, PendingReboot};

/// The report version this crate writes.
pub const VERSION: u32 = 2;
/// Findings in one report.
pub const MAX_FINDINGS: usize = 32;
/// Evidence lines of one finding.
pub const MAX_EVIDENCE: usize = 16;
/// Generations (timeline) and boot-debt entries in one report.
pub const MAX_GENERATIONS: usize = 128;
/// Reboot reasons.
pub const MAX_REASONS: usize = 4;
/// A message, a finding's message or fix.
pub const MAX_TEXT: usize = 2048;
/// An evidence line, a boot entry, a detail.
pub const MAX_LINE: usize = 512;
/// A word: an identifier, a status, a version.
pub const MAX_WORD: usize = 128;
/// A store path.
pub const MAX_PATH: usize = 400;

/// Why a report was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    /// Not JSON, or not the schema.
    #[error("malformed report: {0}")]
    Malformed(String),
    /// A version this server does not know.
    #[error("report version {0} is not supported (this server reads 1 and 2)")]
    Version(u64),
    /// A field out of bounds or of the wrong shape.
    #[error("{field}: {problem}")]
    Invalid {
        /// The field (`result.findings[3].message`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// What the agent was told to run: its manifest, as it accepted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedDesired {
    /// The manifest's commit.
    pub commit: Option<String>,
    /// The manifest's system.
    pub system: String,
    /// The manifest's `created_at`.
    pub since: Option<i64>,
}

/// The agent's last attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedResult {
    /// How it ended.
    pub outcome: Outcome,
    /// When (agent's clock, Unix seconds).
    pub at: i64,
    /// The system it was about.
    pub system: Option<String>,
    /// Its commit.
    pub commit: Option<String>,
    /// What happened.
    pub message: Option<String>,
    /// The pre-flight findings, as `fleetgate check --json` has them.
    #[serde(default)]
    pub findings: Vec<Finding>,
}

/// A version-2 report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportV2 {
    /// Always 2.
    pub v: u32,
    /// The agent's version (`fleetgate --version`'s number).
    pub agent_version: String,
    /// When the report was made (agent's clock, Unix seconds).
    pub time: i64,
    /// What it should run.
    pub desired: Option<ReportedDesired>,
    /// `/run/current-system`.
    pub current: Option<String>,
    /// `/run/booted-system`.
    pub booted: Option<String>,
    /// The boot loader's default entry.
    pub default: Option<DefaultEntry>,
    /// Generations made default but never booted (empty: none; absent: cannot tell).
    pub boot_debt: Option<Vec<BootDebt>>,
    /// A reboot it needs.
    pub pending_reboot: Option<PendingReboot>,
    /// Its last attempt.
    pub result: Option<ReportedResult>,
    /// Its profile generations, oldest first (for the timeline).
    #[serde(default)]
    pub generations: Vec<GenerationRecord>,
}

/// A version-1 report (what `channel serve` took before version 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportV1 {
    /// `ok`, `failed`, … (the agent's word, 1-64 characters).
    pub status: String,
    /// The commit it runs.
    pub commit: Option<String>,
    /// The system it runs.
    pub system: Option<String>,
    /// Free text (at most 4096 characters).
    pub message: Option<String>,
}

/// A report of either version, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AgentReport {
    /// Version 1.
    V1(ReportV1),
    /// Version 2.
    V2(Box<ReportV2>),
}

impl AgentReport {
    /// Parses and validates a report body (JSON).
    ///
    /// # Errors
    /// [`ReportError`] saying what is wrong.
    pub fn parse(body: &[u8]) -> Result<AgentReport, ReportError> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| ReportError::Malformed(e.to_string()))?;
        let report = match value.get("v") {
            None => AgentReport::V1(serde_json::from_value(value).map_err(|e| ReportError::Malformed(e.to_string()))?),
            Some(v) => match v.as_u64() {
                Some(2) => AgentReport::V2(Box::new(
                    serde_json::from_value(value).map_err(|e| ReportError::Malformed(e.to_string()))?,
                )),
                Some(n) => return Err(ReportError::Version(n)),
                None => return Err(ReportError::Malformed("`v` must be a number".into())),
            },
        };
        report.validate()?;
        Ok(report)
    }

    /// The version.
    #[must_use]
    pub fn version(&self) -> u32 {
        match self {
            AgentReport::V1(_) => 1,
            AgentReport::V2(_) => 2,
        }
    }

    /// Checks every bound and shape.
    ///
    /// # Errors
    /// [`ReportError::Invalid`] for the first field out of bounds.
    pub fn validate(&self) -> Result<(), ReportError> {
        match self {
            AgentReport::V1(r) => {
                if r.status.is_empty() {
                    return Err(invalid("status", "must not be empty"));
                }
                text("status", &r.status, 64)?;
                if r.status.contains(['\n', '\t']) {
                    return Err(invalid("status", "must be one line"));
                }
                opt(r.commit.as_deref(), |c| commit("commit", c))?;
                opt(r.system.as_deref(), |s| store_path("system", s))?;
                opt(r.message.as_deref(), |m| text("message", m, 4096))
            }
            AgentReport::V2(r) => validate_v2(r),
        }
    }
}

fn validate_v2(r: &ReportV2) -> Result<(), ReportError> {
    word("agent_version", &r.agent_version, MAX_WORD)?;
    if let Some(d) = &r.desired {
        opt(d.commit.as_deref(), |c| commit("desired.commit", c))?;
        store_path("desired.system", &d.system)?;
    }
    opt(r.current.as_deref(), |s| store_path("current", s))?;
    opt(r.booted.as_deref(), |s| store_path("booted", s))?;
    if let Some(d) = &r.default {
        line("default.entry", &d.entry)?;
        opt(d.system.as_deref(), |s| store_path("default.system", s))?;
    }
    if let Some(debt) = &r.boot_debt {
        at_most("boot_debt", debt.len(), MAX_GENERATIONS)?;
        for (i, g) in debt.iter().enumerate() {
            opt(g.system.as_deref(), |s| store_path(&format!("boot_debt[{i}].system"), s))?;
        }
    }
    if let Some(p) = &r.pending_reboot {
        if p.reasons.is_empty() {
            return Err(invalid("pending_reboot.reasons", "at least one reason (or no pending_reboot)"));
        }
        at_most("pending_reboot.reasons", p.reasons.len(), MAX_REASONS)?;
        opt(p.detail.as_deref(), |d| line("pending_reboot.detail", d))?;
    }
    if let Some(res) = &r.result {
        opt(res.system.as_deref(), |s| store_path("result.system", s))?;
        opt(res.commit.as_deref(), |c| commit("result.commit", c))?;
        opt(res.message.as_deref(), |m| text("result.message", m, MAX_TEXT))?;
        findings("result.findings", &res.findings)?;
    }
    at_most("generations", r.generations.len(), MAX_GENERATIONS)?;
    for (i, g) in r.generations.iter().enumerate() {
        store_path(&format!("generations[{i}].system"), &g.system)?;
    }
    Ok(())
}

/// Checks a list of findings against the report bounds.
///
/// # Errors
/// [`ReportError::Invalid`].
pub fn findings(field: &str, list: &[Finding]) -> Result<(), ReportError> {
    at_most(field, list.len(), MAX_FINDINGS)?;
    for (i, f) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        word(&format!("{at}.id"), &f.id, MAX_WORD)?;
        text(&format!("{at}.message"), &f.message, MAX_TEXT)?;
        at_most(&format!("{at}.evidence"), f.evidence.len(), MAX_EVIDENCE)?;
        for (j, e) in f.evidence.iter().enumerate() {
            line(&format!("{at}.evidence[{j}]"), e)?;
        }
        opt(f.fix.as_deref(), |x| text(&format!("{at}.fix"), x, MAX_TEXT))?;
        let _: Severity = f.severity;
    }
    Ok(())
}

fn invalid(field: &str, problem: &str) -> ReportError {
    ReportError::Invalid { field: field.to_owned(), problem: problem.to_owned() }
}

fn opt<T: ?Sized>(v: Option<&T>, check: impl FnOnce(&T) -> Result<(), ReportError>) -> Result<(), ReportError> {
    v.map_or(Ok(()), check)
}

fn at_most(field: &str, n: usize, max: usize) -> Result<(), ReportError> {
    if n > max { Err(invalid(field, &format!("{n} entries, at most {max} allowed"))) } else { Ok(()) }
}

/// Text: at most `max` characters, no control characters but newlines and tabs.
fn text(field: &str, s: &str, max: usize) -> Result<(), ReportError> {
    if s.chars().count() > max {
        return Err(invalid(field, &format!("longer than {max} characters")));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(field, "control characters are not allowed"));
    }
    Ok(())
}

/// One line: at most [`MAX_LINE`] characters, no control characters.
fn line(field: &str, s: &str) -> Result<(), ReportError> {
    text(field, s, MAX_LINE)?;
    if s.contains(['\n', '\t']) { Err(invalid(field, "must be one line")) } else { Ok(()) }
}

/// A word: 1-`max` characters of letters, digits and `.-_+:@/`.
fn word(field: &str, s: &str, max: usize) -> Result<(), ReportError> {
    let ok = !s.is_empty()
        && s.chars().count() <= max
        && s.chars().all(|c| c.is_ascii_alphanumeric() || ".-_+:@/ ".contains(c));
    if ok { Ok(()) } else { Err(invalid(field, &format!("1-{max} letters, digits or .-_+:@/"))) }
}

fn commit(field: &str, s: &str) -> Result<(), ReportError> {
    let ok = (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if ok { Ok(()) } else { Err(invalid(field, "a full commit id (40 or 64 lower-case hex digits)")) }
}

/// `/nix/store/<32 base-32 characters>-<name>`, nothing below it.
fn store_path(field: &str, s: &str) -> Result<(), ReportError> {
    let ok = s.len() <= MAX_PATH
        && s.strip_prefix("/nix/store/").is_some_and(|rest| {
            let (hash, name) = rest.split_at_checked(32).unwrap_or(("", ""));
            hash.len() == 32
                && hash.bytes().all(|b| b"0123456789abcdfghijklmnpqrsvwxyz".contains(&b))
                && name.starts_with('-')
                && name.len() > 1
                && name[1..].bytes().all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
        });
    if ok { Ok(()) } else { Err(invalid(field, "a top-level store path (/nix/store/<hash>-<name>)")) }
}

/// The outcome a version-1 status word stands for.
#[must_use]
pub fn v1_outcome(status: &str) -> Outcome {
    match status.to_ascii_lowercase().as_str() {
        "ok" | "success" | "succeeded" | "applied" | "switched" | "deployed" | "booted" => Outcome::Applied,
        "up-to-date" | "unchanged" => Outcome::UpToDate,
        "failed" | "failure" | "error" => Outcome::Failed,
        "rolled-back" | "rollback" | "rolled_back" => Outcome::RolledBack,
        "blocked" | "refused" => Outcome::Blocked,
        "pending-reboot" | "staged" => Outcome::Staged,
        "in-progress" | "applying" => Outcome::InProgress,
        _ => Outcome::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS: &str = "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-nixos-system-web1-24.05";

    fn v2() -> serde_json::Value {
        serde_json::json!({
            "v": 2, "agent_version": "0.1.0", "time": 1_700_000_000,
            "desired": {"commit": "a".repeat(40), "system": SYS, "since": 1_699_999_000},
            "current": SYS, "booted": SYS,
            "default": {"entry": "nixos-generation-3.conf", "generation": 3, "system": SYS},
            "boot_debt": [],
            "pending_reboot": null,
            "result": {"outcome": "blocked", "at": 1_700_000_000, "system": SYS,
                       "findings": [{"id": "initrd.missing-modules", "severity": "error",
                                     "message": "m", "evidence": ["virtio_blk"], "fix": "f"}]},
            "generations": [{"number": 3, "system": SYS, "booted": true, "default": true, "failed": false, "created_at": null}]
        })
    }

    fn parse(v: &serde_json::Value) -> Result<AgentReport, ReportError> {
        AgentReport::parse(serde_json::to_string(v).unwrap().as_bytes())
    }

    #[test]
    fn both_versions_parse() {
        assert_eq!(parse(&v2()).unwrap().version(), 2);
        let v1 = parse(&serde_json::json!({"status": "ok", "system": SYS})).unwrap();
        assert_eq!(v1.version(), 1);
        assert_eq!(v1_outcome("OK"), Outcome::Applied);
        assert_eq!(v1_outcome("whatever"), Outcome::Other);
    }

    #[test]
    fn unknown_versions_and_fields_are_refused() {
        let mut r = v2();
        r["v"] = 3.into();
        assert_eq!(parse(&r), Err(ReportError::Version(3)));
        let mut r = v2();
        r["extra"] = 1.into();
        assert!(matches!(parse(&r), Err(ReportError::Malformed(_))));
        assert!(matches!(parse(&serde_json::json!({"status": "ok", "v1": 1})), Err(ReportError::Malformed(_))));
    }

    #[test]
    fn every_bound_is_enforced() {
        let mut r = v2();
        r["result"]["findings"] = serde_json::Value::Array(vec![r["result"]["findings"][0].clone(); 33]);
        assert!(matches!(parse(&r), Err(ReportError::Invalid { field, .. }) if field == "result.findings"));
        let mut r = v2();
        r["result"]["message"] = "x".repeat(MAX_TEXT + 1).into();
        assert!(matches!(parse(&r), Err(ReportError::Invalid { field, .. }) if field == "result.message"));
        let mut r = v2();
        r["current"] = "/nix/store/short-x".into();
        assert!(matches!(parse(&r), Err(ReportError::Invalid { field, .. }) if field == "current"));
        let mut r = v2();
        r["current"] = format!("{SYS}/bin/sh").into();
        assert!(parse(&r).is_err(), "below a store path");
        let mut r = v2();
        r["desired"]["commit"] = "HEAD".into();
        assert!(parse(&r).is_err());
        let mut r = v2();
        r["default"]["entry"] = "a\nb".into();
        assert!(parse(&r).is_err());
        let mut r = v2();
        r["pending_reboot"] = serde_json::json!({"reasons": [], "detail": null});
        assert!(parse(&r).is_err());
        let mut r = v2();
        r["agent_version"] = "<script>".into();
        assert!(parse(&r).is_err());
        let mut r = v2();
        r["generations"] = serde_json::Value::Array(vec![r["generations"][0].clone(); MAX_GENERATIONS + 1]);
        assert!(parse(&r).is_err());
        assert!(parse(&serde_json::json!({"status": ""})).is_err());
    }
}
