//! `fleetgate channel sync`: Hydra never runs RunCommand for a build it did not have to
//! do (a commit that changed nothing for a host), so such commits never advanced the
//! channel. `sync` evaluates every host at the commit and promotes each host whose system
//! the cache already has.
use fleetgate_nix::Nix;

use crate::Log;
use crate::commit::CommitId;
use crate::error::ChannelError;
use crate::host::HostName;
use crate::promote::{ChannelConfig, PromoteOutcome, PromoteRequest, promote};

/// What to sync.
#[derive(Clone, Debug)]
pub struct SyncRequest {
    /// The flake (`git+https://…`, `github:o/r`, `git+file:///…`), without a revision.
    pub flake: String,
    /// The commit to evaluate.
    pub commit: CommitId,
    /// Hosts to consider (default: every attribute of `hosts_attr`).
    pub hosts: Option<Vec<String>>,
    /// The attribute set of hosts (`nixosConfigurations`).
    pub hosts_attr: String,
    /// The system attribute below each host.
    pub system_attr: String,
}

/// What happened to one host.
#[derive(Debug)]
pub enum HostSync {
    /// Promoted (or already there).
    Promoted(Box<PromoteOutcome>),
    /// Not in the cache: CI has not built it (or it failed); left alone.
    NotCached(String),
    /// Something went wrong for this host only.
    Failed(ChannelError),
}

/// The flake reference pinned to `commit`.
pub fn locked_flake(flake: &str, commit: &CommitId) -> String {
    let sep = if flake.contains('?') { '&' } else { '?' };
    format!("{flake}{sep}rev={commit}")
}

/// Runs a sync; per-host failures are collected, not fatal.
pub fn run(
    nix: &Nix,
    cfg: &ChannelConfig,
    req: &SyncRequest,
    log: Log<'_>,
) -> Result<Vec<(String, HostSync)>, ChannelError> {
    if req.flake.starts_with('-') || req.flake.contains(char::is_whitespace) || req.flake.contains('#') {
        return Err(ChannelError::Config(format!(
            "flake {:?} must be a flake reference without '#attribute'",
            req.flake
        )));
    }
    let flake = locked_flake(&req.flake, &req.commit);
    let hosts: Vec<String> = match &req.hosts {
        Some(h) => h.clone(),
        None => {
            let v = nix
                .eval_json(&format!("{flake}#{}", req.hosts_attr), Some("builtins.attrNames"))
                .map_err(ChannelError::Nix)?;
            serde_json::from_value(v)
                .map_err(|e| ChannelError::Config(format!("host list is not a list of names: {e}")))?
        }
    };
    let mut results = Vec::new();
    for name in hosts {
        log.note(&format!("{name}: evaluating {}.{name}.{} at {}", req.hosts_attr, req.system_attr, req.commit));
        let r = sync_host(nix, cfg, req, &flake, &name, log);
        results.push((name, r));
    }
    Ok(results)
}

fn sync_host(nix: &Nix, cfg: &ChannelConfig, req: &SyncRequest, flake: &str, name: &str, log: Log<'_>) -> HostSync {
    let host = match HostName::parse(name) {
        Ok(h) => h,
        Err(e) => return HostSync::Failed(e),
    };
    let attr = format!("{flake}#{}.\"{host}\".{}", req.hosts_attr, req.system_attr);
    let system = match nix.eval_json(&attr, Some("d: d.outPath")) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => {
            return HostSync::Failed(ChannelError::Config(format!("{attr} evaluated to {other}, not a store path")));
        }
        Err(e) => return HostSync::Failed(ChannelError::Nix(e)),
    };
    match nix.path_info(Some(&cfg.cache), std::slice::from_ref(&system), false, false) {
        Ok((_, missing)) if !missing.is_empty() => {
            log.note(&format!("{host}: {system} is not in the cache, skipped"));
            return HostSync::NotCached(system);
        }
        Ok(_) => {}
        Err(e) => return HostSync::Failed(ChannelError::Nix(e)),
    }
    let request =
        match PromoteRequest::parse(host.as_str(), req.commit.as_str(), &system, Some(&format!("sync:{flake}")), false)
        {
            Ok(r) => r,
            Err(e) => return HostSync::Failed(e),
        };
    match promote(nix, cfg, &request, log) {
        Ok(o) => HostSync::Promoted(Box::new(o)),
        Err(e) => HostSync::Failed(e),
    }
}
