//! `fleetgate channel hydra-hook`: act on a successful `buildFinished` event of a job
//! matching the host pattern; say in one line why anything else is skipped.
use std::path::Path;
use std::time::Duration;

use fleetgate_nix::Nix;
use regex::Regex;

use super::event::{BuildStatus, HydraEvent};
use super::revision;
use crate::Log;
use crate::commit::CommitId;
use crate::error::ChannelError;
use crate::host::HostName;
use crate::promote::{ChannelConfig, PromoteOutcome, PromoteRequest, promote};

/// The default job pattern: `nixos-<host>.<system>`.
pub const DEFAULT_JOB_PATTERN: &str = r"^nixos-(?<host>[^.]+)\.";

/// What the hook looks at.
#[derive(Clone, Debug)]
pub struct HookConfig {
    /// Jobs to act on; must have a `host` capture group.
    pub job_pattern: Regex,
    /// Only this project, if set.
    pub project: Option<String>,
    /// Only this jobset, if set.
    pub jobset: Option<String>,
    /// Hydra's base URL, for the REST API fallback and build links.
    pub hydra_url: Option<String>,
    /// Hydra's database name, for the `psql` fallback.
    pub hydra_db: Option<String>,
    /// Timeout of each API/database request.
    pub timeout: Duration,
}

impl HookConfig {
    /// A configuration with the given pattern (checked for a `host` group).
    pub fn new(pattern: &str) -> Result<Self, ChannelError> {
        let job_pattern =
            Regex::new(pattern).map_err(|e| ChannelError::Config(format!("job pattern {pattern:?}: {e}")))?;
        if !job_pattern.capture_names().any(|n| n == Some("host")) {
            return Err(ChannelError::Config(format!("job pattern {pattern:?} has no (?<host>...) capture group")));
        }
        Ok(Self {
            job_pattern,
            project: None,
            jobset: None,
            hydra_url: None,
            hydra_db: None,
            timeout: Duration::from_secs(30),
        })
    }
}

/// What to do with an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do; the reason, in one line.
    Skip(String),
    /// Promote this host to this system.
    Promote {
        /// The host from the job name.
        host: HostName,
        /// The `out` path.
        system: String,
    },
}

/// Decides from the event alone.
pub fn decide(event: &HydraEvent, cfg: &HookConfig) -> Result<Decision, ChannelError> {
    let id = event.build;
    if event.event != "buildFinished" {
        return Ok(Decision::Skip(format!("build {id}: event {:?} is not buildFinished", event.event)));
    }
    if !event.finished {
        return Ok(Decision::Skip(format!("build {id}: not finished")));
    }
    match event.status() {
        Some(BuildStatus::Succeeded) => {}
        Some(s) => {
            return Ok(Decision::Skip(format!(
                "build {id} ({}): {} (buildStatus {}), nothing to promote",
                event.job,
                s.describe(),
                event.build_status.unwrap_or_default()
            )));
        }
        None => return Ok(Decision::Skip(format!("build {id}: no buildStatus"))),
    }
    if let Some(p) = &cfg.project
        && p != &event.project
    {
        return Ok(Decision::Skip(format!("build {id}: project {:?} is not {p:?}", event.project)));
    }
    if let Some(j) = &cfg.jobset
        && j != &event.jobset
    {
        return Ok(Decision::Skip(format!("build {id}: jobset {:?} is not {j:?}", event.jobset)));
    }
    let Some(caps) = cfg.job_pattern.captures(&event.job) else {
        return Ok(Decision::Skip(format!(
            "build {id}: job {:?} does not match {}",
            event.job,
            cfg.job_pattern.as_str()
        )));
    };
    let host = HostName::parse(caps.name("host").map_or("", |m| m.as_str()))?;
    let system = event
        .out_path()
        .ok_or_else(|| ChannelError::HydraEvent(format!("build {id} succeeded but lists no outputs")))?;
    let system = crate::store_path::validate(system)?;
    Ok(Decision::Promote { host, system })
}

/// Finds the commit: the system's own record, then Hydra's API, then its database.
pub fn resolve_commit(
    event: &HydraEvent,
    system: &str,
    cfg: &HookConfig,
    log: Log<'_>,
) -> Result<CommitId, ChannelError> {
    if let Some(c) = revision::from_system(Path::new(system)) {
        log.note(&format!("commit {c} from the system's configurationRevision"));
        return Ok(c);
    }
    let mut tried = vec!["the system records no configurationRevision".to_owned()];
    if let Some(url) = &cfg.hydra_url {
        match revision::from_hydra_api(url, event.build, cfg.timeout) {
            Ok(c) => {
                log.note(&format!("commit {c} from Hydra's API"));
                return Ok(c);
            }
            Err(e) => tried.push(format!("Hydra API: {e}")),
        }
    }
    if let Some(db) = &cfg.hydra_db {
        match revision::from_hydra_db(db, event.build, cfg.timeout) {
            Ok(c) => {
                log.note(&format!("commit {c} from Hydra's database"));
                return Ok(c);
            }
            Err(e) => tried.push(format!("Hydra database: {e}")),
        }
    }
    Err(ChannelError::HydraCommit { build: event.build, message: tried.join("; ") })
}

/// The build's output must be in this machine's store (Hydra's own) or already in the
/// cache; otherwise there is nothing to promote, whatever the commit.
fn require_system(nix: &Nix, channel: &ChannelConfig, system: &str) -> Result<(), ChannelError> {
    let paths = [system.to_owned()];
    let (_, not_local) = nix.path_info(None, &paths, false, false).map_err(ChannelError::Nix)?;
    if not_local.is_empty() {
        return Ok(());
    }
    let (_, not_cached) = nix.path_info(Some(&channel.cache), &paths, false, false).map_err(ChannelError::Nix)?;
    if not_cached.is_empty() {
        return Ok(());
    }
    Err(ChannelError::SystemMissing { path: system.to_owned(), cache: channel.cache.base().to_owned() })
}

/// What the hook did.
#[derive(Debug)]
pub enum HookOutcome {
    /// Skipped, with the one-line reason.
    Skipped(String),
    /// Promoted.
    Promoted(Box<PromoteOutcome>),
}

/// Decides, resolves the commit and promotes.
pub fn run(
    nix: &Nix,
    channel: &ChannelConfig,
    cfg: &HookConfig,
    event: &HydraEvent,
    log: Log<'_>,
) -> Result<HookOutcome, ChannelError> {
    let (host, system) = match decide(event, cfg)? {
        Decision::Skip(reason) => return Ok(HookOutcome::Skipped(reason)),
        Decision::Promote { host, system } => (host, system),
    };
    require_system(nix, channel, &system)?;
    let commit = resolve_commit(event, &system, cfg, log)?;
    let build = match &cfg.hydra_url {
        Some(url) => format!("{}/build/{}", url.trim_end_matches('/'), event.build),
        None => format!("hydra:{}:{}:{}#{}", event.project, event.jobset, event.job, event.build),
    };
    let req = PromoteRequest { host, commit, system, build: Some(build), force: false };
    promote(nix, channel, &req, log).map(|o| HookOutcome::Promoted(Box::new(o)))
}
