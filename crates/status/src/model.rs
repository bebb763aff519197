//! The status of one host, as every source fleetgate has contributes to it: agent
//! reports and manifests (the server), deploy history, live facts.
//!
//! Times are Unix seconds. Everything here serialises to the stable JSON of
//! `fleetgate status --json` and of the server's `/v1/status` (fields are only ever
//! added).
use fleetgate_facts::Finding;
use serde::{Deserialize, Serialize};

use crate::state::State;

/// Where a piece of status came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A report the host's agent sent to the server.
    Agent,
    /// `fleetgate deploy`'s history.
    Deploy,
    /// Facts read from the host just now, over SSH (`--live`).
    Live,
}

/// Where the desired system comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DesiredSource {
    /// The host's signed manifest (its tested channel).
    Manifest,
    /// The last `fleetgate deploy` that pushed a system to it.
    Deploy,
    /// What the agent said it was told to run (its manifest, as it saw it).
    Agent,
}

/// What the host should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// The commit CI built (unknown for a deploy from a dirty tree).
    pub commit: Option<String>,
    /// The system's store path.
    pub system: String,
    /// Since when it is desired (the manifest's creation, the deploy's start).
    pub since: Option<i64>,
    /// Where this comes from.
    pub source: DesiredSource,
}

/// The boot loader's default entry: what the host boots next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultEntry {
    /// The entry (`nixos-generation-12.conf`; GRUB: the menu title).
    pub entry: String,
    /// Its profile generation, when known.
    pub generation: Option<u64>,
    /// Its system's store path, when known.
    pub system: Option<String>,
}

/// One generation made default but never booted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootDebt {
    /// The profile generation.
    pub generation: u64,
    /// Its system.
    pub system: Option<String>,
    /// When it was made default, if known.
    pub made_default_at: Option<i64>,
}

/// Why a reboot is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootReason {
    /// The running kernel is not the current system's.
    Kernel,
    /// The running initrd is not the current system's.
    Initrd,
    /// A switch inhibitor (`system.switch.inhibitors`, e.g. dbus → dbus-broker) refused
    /// the live switch: the new system was set to boot next.
    Inhibitor,
    /// The desired system is the default entry but does not run yet (cause unknown).
    Staged,
}

impl RebootReason {
    /// The reason's word.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RebootReason::Kernel => "kernel",
            RebootReason::Initrd => "initrd",
            RebootReason::Inhibitor => "inhibitor",
            RebootReason::Staged => "staged",
        }
    }
}

/// A reboot the host needs to run what it should.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReboot {
    /// Why (at least one).
    pub reasons: Vec<RebootReason>,
    /// More words (the reboot window it waits for, the inhibitor's name…).
    pub detail: Option<String>,
}

/// How the last attempt on the host ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The new system runs (live switch, or verified reboot) and is the default.
    Applied,
    /// Nothing to do: it already ran the desired system.
    UpToDate,
    /// Set to boot next; waiting for the reboot (window).
    Staged,
    /// An apply is under way.
    InProgress,
    /// Applied, found unhealthy, and rolled back (or fell back at boot).
    RolledBack,
    /// The attempt failed.
    Failed,
    /// The pre-flight check refused the system: nothing applied.
    Blocked,
    /// The host could not be reached.
    Unreachable,
    /// Not attempted (a canary failed, a failure budget was used up).
    Skipped,
    /// A version-1 report whose status word is none of the above.
    Other,
}

impl Outcome {
    /// The outcome's word.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::UpToDate => "up-to-date",
            Outcome::Staged => "staged",
            Outcome::InProgress => "in-progress",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "failed",
            Outcome::Blocked => "blocked",
            Outcome::Unreachable => "unreachable",
            Outcome::Skipped => "skipped",
            Outcome::Other => "other",
        }
    }

    /// Failed or rolled back.
    #[must_use]
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::RolledBack)
    }
}

/// The last result on the host, with its findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastResult {
    /// How it ended.
    pub outcome: Outcome,
    /// When.
    pub at: i64,
    /// The system it was about.
    pub system: Option<String>,
    /// Its commit.
    pub commit: Option<String>,
    /// What happened, in words.
    pub message: Option<String>,
    /// The pre-flight findings (the shape of `fleetgate check --json`'s).
    pub findings: Vec<Finding>,
    /// Where it comes from.
    pub source: Source,
}

/// One profile generation on the host's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRecord {
    /// The profile generation number.
    pub number: u64,
    /// Its system.
    pub system: String,
    /// Whether it ever booted (`None`: not known).
    pub booted: Option<bool>,
    /// Whether it was ever the default entry (`None`: not known).
    pub default: Option<bool>,
    /// Whether applying it failed (rolled back, fell back, failed its health check).
    #[serde(default)]
    pub failed: bool,
    /// When it was made, if known.
    pub created_at: Option<i64>,
}

/// The longest [`HostStatus::unreachable_why`] kept.
pub const UNREACHABLE_WHY_CHARS: usize = 200;

/// Everything known about one host, and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// The host's name.
    pub host: String,
    /// Its state in one word.
    pub state: State,
    /// Why it has that state, in one line.
    pub why: String,
    /// What it should run.
    pub desired: Option<Desired>,
    /// What it runs (`/run/current-system`).
    pub current: Option<String>,
    /// What it booted (`/run/booted-system`).
    pub booted: Option<String>,
    /// What it boots next.
    pub default: Option<DefaultEntry>,
    /// Generations made default but never booted; `None` when it cannot be told.
    pub boot_debt: Option<Vec<BootDebt>>,
    /// A reboot it needs, if any.
    pub pending_reboot: Option<PendingReboot>,
    /// The last result.
    pub last_result: Option<LastResult>,
    /// When any source last heard of it.
    pub last_seen: Option<i64>,
    /// When the last attempt to reach it failed (SSH, deploy), if that is newer than any
    /// sign of life.
    pub unreachable_since: Option<i64>,
    /// What that failed attempt said (SSH's error, the deploy's message): its first line.
    #[serde(default)]
    pub unreachable_why: Option<String>,
    /// Seconds since its manifest was made.
    pub manifest_age: Option<i64>,
    /// The agent's version, from its last report.
    pub agent_version: Option<String>,
    /// Its generations, oldest first (the dashboard's timeline).
    pub generations: Vec<GenerationRecord>,
}

impl HostStatus {
    /// A host nothing is known about yet (state `unknown`).
    #[must_use]
    pub fn new(host: &str) -> HostStatus {
        HostStatus {
            host: host.to_owned(),
            state: State::Unknown,
            why: "nothing is known about it".to_owned(),
            desired: None,
            current: None,
            booted: None,
            default: None,
            boot_debt: None,
            pending_reboot: None,
            last_result: None,
            last_seen: None,
            unreachable_since: None,
            unreachable_why: None,
            manifest_age: None,
            agent_version: None,
            generations: Vec::new(),
        }
    }

    /// Notes a sign of life at `at` (keeps the newest).
    pub fn seen(&mut self, at: i64) {
        self.last_seen = Some(self.last_seen.map_or(at, |s| s.max(at)));
        if self.unreachable_since.is_some_and(|u| u <= at) {
            self.unreachable_since = None;
            self.unreachable_why = None;
        }
    }

    /// Notes an attempt to reach it that failed at `at`, and what it said (its first line,
    /// at most [`UNREACHABLE_WHY_CHARS`] characters) — unless it was seen since.
    pub fn unreachable(&mut self, at: i64, why: &str) {
        if self.last_seen.is_some_and(|s| s >= at) || self.unreachable_since.is_some_and(|u| u > at) {
            return;
        }
        self.unreachable_since = Some(at);
        let first = why.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
        let first: String = first.chars().filter(|c| !c.is_control()).take(UNREACHABLE_WHY_CHARS).collect();
        self.unreachable_why = Some(first).filter(|w| !w.is_empty());
    }

    /// Sets the last result if `result` is newer than the one it has.
    pub fn offer_result(&mut self, result: LastResult) {
        if self.last_result.as_ref().is_none_or(|r| r.at <= result.at) {
            self.last_result = Some(result);
        }
    }

    /// The number of generations of boot debt (0 when unknown).
    #[must_use]
    pub fn debt_count(&self) -> usize {
        self.boot_debt.as_ref().map_or(0, Vec::len)
    }
}

/// The store path's name without the hash (`nixos-system-web1-24.05`), for display.
#[must_use]
pub fn short_path(path: &str) -> &str {
    let name = path.strip_prefix("/nix/store/").unwrap_or(path);
    match name.split_once('-') {
        Some((hash, rest)) if hash.len() == 32 => rest,
        _ => name,
    }
}

/// The first 7 characters of a store path's hash (`9lbzgxv`): enough to tell systems
/// apart in a table.
#[must_use]
pub fn short_hash(path: &str) -> &str {
    let name = path.strip_prefix("/nix/store/").unwrap_or(path);
    match name.split_once('-') {
        Some((hash, _)) if hash.len() == 32 => hash.get(..7).unwrap_or(hash),
        _ => name,
    }
}
