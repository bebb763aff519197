//! What an install ends with: the [`Outcome`], the [`Standing`] of the
//! machine (the state it is in, as a sentence), each phase's record with
//! its proof, and the command that resumes — as JSON (`format` 1) and as
//! plain lines.

use std::fmt::Write as _;

use fleetgate_facts::Finding;
use serde::{Deserialize, Serialize};

use crate::phase::Phase;
use crate::target::DiskUser;

/// Version of the [`InstallReport`] JSON document.
pub const FORMAT: u32 = 1;

/// Exit code: installed and proven.
pub const EXIT_OK: u8 = 0;
/// Exit code: refused or failed, and the machine's state is known.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the machine's state is not known (as `deploy`'s 3).
pub const EXIT_UNKNOWN: u8 = 3;

/// How the install ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every requested phase ran and proved itself.
    Installed,
    /// A phase refused to begin: what it would have destroyed is intact.
    Refused,
    /// A phase ran and did not prove itself; the machine's state is known.
    Failed,
    /// The machine's state is not known.
    Unknown,
}

impl Outcome {
    /// The exit code.
    #[must_use]
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Installed => EXIT_OK,
            Outcome::Refused | Outcome::Failed => EXIT_FAILED,
            Outcome::Unknown => EXIT_UNKNOWN,
        }
    }
}

/// The state the machine is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    /// The old OS runs; no disk was partitioned or formatted (the kexec
    /// phase may have written its tarball under `/root/kexec`).
    OldOsUntouched,
    /// A system other than the installer fleetgate started runs; fleetgate
    /// touched no disk.
    NotTheInstaller,
    /// The installer runs; no disk was touched.
    InstallerDisksUntouched,
    /// The installer runs; the disks were partitioned and formatted (the
    /// old OS is gone), no system is installed.
    DisksWritten,
    /// The installer runs; disko failed part way: the disks may be partly
    /// written.
    DisksPartlyWritten,
    /// The installer runs; a system is installed on the disks, not booted.
    SystemInstalled,
    /// The installed system booted and is verified.
    Booted,
    /// The installed system booted but is not healthy.
    BootedUnhealthy,
    /// Not known: the target does not answer, or runs something unexpected.
    Unknown,
}

impl Standing {
    /// The sentence.
    #[must_use]
    pub fn sentence(self) -> &'static str {
        match self {
            Standing::OldOsUntouched => "the old OS is running; no disk was partitioned or formatted",
            Standing::NotTheInstaller => {
                "a system other than the installer fleetgate started is running; no disk was partitioned or formatted"
            }
            Standing::InstallerDisksUntouched => "the installer is running; no disk was touched",
            Standing::DisksWritten => {
                "the installer is running; the disks were partitioned and formatted (the old OS is gone); nothing is installed"
            }
            Standing::DisksPartlyWritten => {
                "the installer is running; disko failed part way: the disks may be partly written (the old OS may be gone)"
            }
            Standing::SystemInstalled => {
                "the installer is running; the system is installed on the disks but has not booted"
            }
            Standing::Booted => "the installed system is running and verified",
            Standing::BootedUnhealthy => "the installed system booted (verified) but is not healthy",
            Standing::Unknown => "unknown: look at the console",
        }
    }
}

/// How a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseResult {
    /// It ran and its proof holds.
    Proven,
    /// Not requested (`--phases`).
    Skipped,
    /// It refused to begin.
    Refused,
    /// It ran and its proof did not hold, or a step failed.
    Failed,
    /// An earlier phase stopped the install.
    NotReached,
}

/// One phase's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// The phase.
    pub phase: Phase,
    /// How it ended.
    pub result: PhaseResult,
    /// Seconds it took.
    pub seconds: u64,
    /// The evidence of its proof (or of what was found).
    pub proof: Vec<String>,
    /// Why it refused or failed.
    pub error: Option<String>,
}

/// The report of one install: the `--json` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallReport {
    /// [`FORMAT`].
    pub format: u32,
    /// `ssh://root@192.0.2.10`.
    pub target: String,
    /// `FLAKE#HOST`.
    pub flake: String,
    /// The system installed.
    pub system: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Where the machine stands.
    pub standing: Standing,
    /// Every phase, in order.
    pub phases: Vec<PhaseRecord>,
    /// The findings that refused the install (pre-flight, install's check).
    pub findings: Vec<Finding>,
    /// What uses a target disk (disko refused).
    pub disk_users: Vec<DiskUser>,
    /// The console's last lines, when the first boot failed.
    pub console_tail: Vec<String>,
    /// What to do next.
    pub next_step: String,
    /// The command that resumes, when there is one.
    pub resume: Option<String>,
}

impl InstallReport {
    /// Pretty JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
    }

    /// The exit code.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        self.outcome.exit_code()
    }

    /// Plain lines for a terminal or a log.
    #[must_use]
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "install {} on {}: {}", self.flake, self.target, outcome_word(self.outcome));
        for p in &self.phases {
            let line = format!("  {:<11}{:<12}{}", p.phase.as_str(), result_word(p.result), seconds(p));
            let _ = writeln!(s, "{}", line.trim_end());
            for line in &p.proof {
                let _ = writeln!(s, "      {line}");
            }
            if let Some(e) = &p.error {
                let _ = writeln!(s, "      error: {e}");
            }
        }
        for f in &self.findings {
            fleetgate_facts::render_finding(&mut s, f);
        }
        for u in &self.disk_users {
            let _ = writeln!(s, "  in use: {}", u.describe());
        }
        if !self.console_tail.is_empty() {
            let _ = writeln!(s, "  console (last {} lines):", self.console_tail.len());
            for l in &self.console_tail {
                let _ = writeln!(s, "    | {l}");
            }
        }
        let _ = writeln!(s, "state: {}", self.standing.sentence());
        let _ = writeln!(s, "next: {}", self.next_step);
        if let Some(r) = &self.resume {
            let _ = writeln!(s, "resume: {r}");
        }
        s
    }
}

fn seconds(p: &PhaseRecord) -> String {
    match p.result {
        PhaseResult::Skipped | PhaseResult::NotReached => String::new(),
        _ => format!("{} s", p.seconds),
    }
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Installed => "installed",
        Outcome::Refused => "refused",
        Outcome::Failed => "failed",
        Outcome::Unknown => "state unknown",
    }
}

fn result_word(r: PhaseResult) -> &'static str {
    match r {
        PhaseResult::Proven => "proven",
        PhaseResult::Skipped => "skipped",
        PhaseResult::Refused => "refused",
        PhaseResult::Failed => "failed",
        PhaseResult::NotReached => "not reached",
    }
}
