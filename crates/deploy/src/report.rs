//! The result of a run: per host what happened, where it ended and why;
//! the exit code; the final table; the `--json` document.

use std::fmt::Write as _;

use fleetgate_facts::Finding;
use serde::{Deserialize, Serialize};

use crate::events::PhaseRecord;
use crate::plan::Action;

/// Version of the JSON report.
pub const FORMAT: u32 = 1;

/// How a host's deploy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The new generation runs, proved healthy, and is the default.
    Deployed,
    /// Nothing to do.
    UpToDate,
    /// Dry run: what would be done (see the message).
    Planned,
    /// The plan was blocked; nothing was pushed.
    Blocked,
    /// Something failed; see `standing` for where the host is.
    Failed,
    /// The host could not be reached before anything was done.
    Unreachable,
    /// Not attempted (canary failed, `--max-failures` reached, build failed).
    Skipped,
}

impl Outcome {
    /// The outcome's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deployed => "deployed",
            Outcome::UpToDate => "up-to-date",
            Outcome::Planned => "planned",
            Outcome::Blocked => "blocked",
            Outcome::Failed => "failed",
            Outcome::Unreachable => "unreachable",
            Outcome::Skipped => "skipped",
        }
    }

    /// Deployed, up to date, or (dry run) planned.
    #[must_use]
    pub fn is_ok(self) -> bool {
        matches!(self, Outcome::Deployed | Outcome::UpToDate | Outcome::Planned)
    }
}

/// Where the host is at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    /// Running, and booting by default into, a generation known to be good.
    KnownGood,
    /// fleetgate cannot tell: a human must look.
    Unknown,
}

/// One host's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    /// The host.
    pub host: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Where it is.
    pub standing: Standing,
    /// What the plan said.
    pub action: Option<Action>,
    /// The system it ran before.
    pub previous_system: Option<String>,
    /// The system deployed.
    pub new_system: Option<String>,
    /// The system it runs now, as last seen.
    pub running_system: Option<String>,
    /// Whether fleetgate (or the host's watchdog) rolled it back.
    pub rolled_back: bool,
    /// The system this run proved to boot healthy (recorded as last good).
    pub booted_healthy: Option<String>,
    /// NAR bytes `nix copy` sent to the host (the NAR sizes of the closure's
    /// paths it lacked); `None` when no copy ended well.
    #[serde(default)]
    pub copied_bytes: Option<u64>,
    /// Why, and what to do next.
    pub message: String,
    /// The plan's findings.
    pub findings: Vec<Finding>,
    /// Phases with timings.
    pub phases: Vec<PhaseRecord>,
}

impl HostReport {
    /// A report for a host nothing was done to.
    #[must_use]
    pub fn untouched(host: &str, outcome: Outcome, message: impl Into<String>) -> HostReport {
        HostReport {
            host: host.to_owned(),
            outcome,
            standing: Standing::KnownGood,
            action: None,
            previous_system: None,
            new_system: None,
            running_system: None,
            rolled_back: false,
            booted_healthy: None,
            copied_bytes: None,
            message: message.into(),
            findings: Vec::new(),
            phases: Vec::new(),
        }
    }
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// [`FORMAT`].
    pub format: u32,
    /// The run's id.
    pub run_id: String,
    /// The flake.
    pub flake: String,
    /// The strategy.
    pub strategy: String,
    /// Seconds since the Unix epoch at the start.
    pub started_at: u64,
    /// How long the run took.
    pub duration_ms: u64,
    /// Per host, in selection order.
    pub hosts: Vec<HostReport>,
    /// The exit code (see [`exit_code`]).
    pub exit_code: i32,
}

/// Every host fine.
pub const EXIT_OK: i32 = 0;
/// Some hosts failed, every host is on a known-good generation.
pub const EXIT_FAILED: i32 = 1;
/// Some host's state is unknown: a human must look.
pub const EXIT_UNKNOWN: i32 = 3;

/// 0 when every host is fine; 1 when some failed but all are on a
/// known-good generation; 3 when some host's state is unknown.
#[must_use]
pub fn exit_code(hosts: &[HostReport]) -> i32 {
    if hosts.iter().any(|h| h.standing == Standing::Unknown) {
        EXIT_UNKNOWN
    } else if hosts.iter().all(|h| h.outcome.is_ok()) {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

fn short(path: Option<&str>) -> String {
    match path {
        // /nix/store/<32 chars>-name → name
        Some(p) => p.strip_prefix("/nix/store/").and_then(|r| r.get(33..)).unwrap_or(p).to_owned(),
        None => "-".to_owned(),
    }
}

impl RunReport {
    /// The report as pretty JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The final table and, below it, every host that did not end well
    /// with the reason and its error findings.
    #[must_use]
    pub fn human(&self) -> String {
        let mut rows = vec![[
            "HOST".to_owned(),
            "ACTION".to_owned(),
            "OUTCOME".to_owned(),
            "STANDING".to_owned(),
            "RUNNING".to_owned(),
        ]];
        for h in &self.hosts {
            rows.push([
                h.host.clone(),
                h.action.map_or("-", Action::as_str).to_owned(),
                format!("{}{}", h.outcome.as_str(), if h.rolled_back { " (rolled back)" } else { "" }),
                match h.standing {
                    Standing::KnownGood => "known-good".to_owned(),
                    Standing::Unknown => "UNKNOWN".to_owned(),
                },
                short(h.running_system.as_deref()),
            ]);
        }
        let mut widths = [0usize; 5];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &rows {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        for h in self.hosts.iter().filter(|h| !h.outcome.is_ok()) {
            let _ = writeln!(out, "\n{}: {}", h.host, h.message);
            for f in h.findings.iter().filter(|f| f.severity == fleetgate_facts::Severity::Error) {
                let _ = writeln!(out, "  error[{}]: {}", f.id, f.message);
                if let Some(fix) = &f.fix {
                    let _ = writeln!(out, "    fix: {fix}");
                }
            }
        }
        let ok = self.hosts.iter().filter(|h| h.outcome.is_ok()).count();
        let retryable = self.hosts.iter().any(|h| !h.outcome.is_ok() && h.outcome != Outcome::Blocked);
        let _ = writeln!(
            out,
            "\n{ok} of {} hosts ok; exit {}{}",
            self.hosts.len(),
            self.exit_code,
            match self.exit_code {
                EXIT_OK => "",
                EXIT_FAILED if retryable =>
                    " (every host is on a known-good generation; `fleetgate deploy --resume` retries the others)",
                EXIT_FAILED => " (every host is on a known-good generation; fix the findings above, then deploy again)",
                _ => " (a host's state is unknown: see above, a human must look)",
            }
        );
        out
    }
}
