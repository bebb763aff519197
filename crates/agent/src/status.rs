//! `fleetgate agent status [--json]`: on the host, desired vs current vs
//! booted vs the boot loader's default, boot debt, the last result, a
//! pending reboot, what failed here, whether upgrades are held — read from
//! the agent's state and the host itself, changing nothing. The JSON
//! (`format` 1) embeds the report the agent would send now.

use serde::Serialize;

use crate::accept::short;
use crate::config::AgentConfig;
use crate::host::View;
use crate::report::{self, Report};
use crate::state::{AgentState, Attempt, BadPath, FetchRecord};

/// Version of the status JSON document.
pub const FORMAT: u32 = 1;

/// What `fleetgate agent status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// [`FORMAT`].
    pub format: u32,
    /// The host.
    pub host: String,
    /// The agent's version.
    pub agent_version: String,
    /// The profile's system.
    pub profile: Option<String>,
    /// The report the agent would send now (desired, current, booted, default, debt, pending, result).
    pub report: Report,
    /// Why upgrades are held, when they are.
    pub suspended: Option<String>,
    /// Store paths never tried again.
    pub bad: Vec<BadPath>,
    /// An attempt in flight.
    pub attempt: Option<Attempt>,
    /// The manifest fetches.
    pub fetch: FetchRecord,
    /// Seconds since the desired manifest was made.
    pub manifest_age: Option<u64>,
    /// Whether that is beyond `stale_after`.
    pub stale: bool,
    /// Reports waiting for the server.
    pub reports_queued: usize,
}

impl Status {
    /// The status of `state` and `view`.
    #[must_use]
    pub fn new(
        cfg: &AgentConfig,
        state: &AgentState,
        view: Option<&View>,
        suspended: Option<String>,
        queued: usize,
        now: u64,
    ) -> Status {
        let age = state.desired.as_ref().map(|d| crate::accept::age(&d.manifest, now));
        Status {
            format: FORMAT,
            host: cfg.host.as_str().to_owned(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            profile: view.map(|v| v.state.profile.clone()).filter(|p| !p.is_empty()),
            report: report::build(cfg, state, view, now),
            suspended,
            bad: state.bad.clone(),
            attempt: state.attempt.clone(),
            fetch: state.fetch.clone(),
            manifest_age: age,
            stale: age.is_some_and(|a| a > cfg.stale_after.as_secs()),
            reports_queued: queued,
        }
    }

    /// The one JSON document.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Whether it runs and boots by default what it should.
    #[must_use]
    pub fn converged(&self) -> bool {
        let r = &self.report;
        match &r.desired {
            Some(d) => {
                r.current.as_deref() == Some(d.system.as_str()) && self.profile.as_deref() == Some(d.system.as_str())
            }
            None => false,
        }
    }

    /// Plain lines for a human.
    #[must_use]
    pub fn human(&self) -> String {
        let r = &self.report;
        let mut out = format!("host      {} (fleetgate agent {})\n", self.host, self.agent_version);
        let or = |v: Option<&str>| v.unwrap_or("(unknown)").to_owned();
        match &r.desired {
            Some(d) => out.push_str(&format!(
                "desired   commit {} {}{}\n",
                d.commit.as_deref().map_or("?", short),
                d.system,
                match (self.manifest_age, self.stale) {
                    (Some(a), true) => format!(" (manifest {} h old: STALE)", a / 3600),
                    (Some(a), false) => format!(" (manifest {} min old)", a / 60),
                    _ => String::new(),
                }
            )),
            None => out.push_str("desired   (no manifest accepted yet)\n"),
        }
        out.push_str(&format!("current   {}\n", or(r.current.as_deref())));
        out.push_str(&format!("booted    {}\n", or(r.booted.as_deref())));
        out.push_str(&format!("profile   {}\n", or(self.profile.as_deref())));
        out.push_str(&format!(
            "default   {}\n",
            r.default.as_ref().map_or("(cannot tell)".to_owned(), |d| format!(
                "{} -> {}",
                d.entry,
                or(d.system.as_deref())
            ))
        ));
        match &r.boot_debt {
            Some(d) if d.is_empty() => out.push_str("boot debt none\n"),
            Some(d) => out.push_str(&format!(
                "boot debt {} generation(s) made default and never booted: {}\n",
                d.len(),
                d.iter().map(|g| g.generation.to_string()).collect::<Vec<_>>().join(", ")
            )),
            None => out.push_str("boot debt (cannot tell)\n"),
        }
        if let Some(p) = &r.pending_reboot {
            out.push_str(&format!(
                "pending   reboot ({}): {}\n",
                p.reasons.join(", "),
                p.detail.as_deref().unwrap_or("")
            ));
        }
        if let Some(res) = &r.result {
            out.push_str(&format!("last      {}: {}\n", res.outcome.as_str(), res.message.as_deref().unwrap_or("")));
            for f in res.findings.iter().filter(|f| f.severity >= fleetgate_facts::Severity::Warning) {
                out.push_str(&format!("          {} {}: {}\n", f.severity.as_str(), f.id, f.message));
            }
        }
        if let Some(a) = &self.attempt {
            out.push_str(&format!("in flight run {} (commit {})\n", a.run_id, short(&a.commit)));
        }
        for b in &self.bad {
            out.push_str(&format!("bad       {} ({})\n", b.system, b.reason));
        }
        if let Some(e) = &self.fetch.error {
            out.push_str(&format!("fetch     failing ({} in a row): {e}\n", self.fetch.failures));
        }
        if let Some(why) = &self.suspended {
            out.push_str(&format!("upgrades  SUSPENDED: {why} (`fleetgate agent resume` to go on)\n"));
        }
        if self.reports_queued > 0 {
            out.push_str(&format!("reports   {} waiting for the server\n", self.reports_queued));
        }
        out
    }
}

/// Reads the status of this host (the agent's state, the host itself).
///
/// # Errors
/// [`crate::state::StateError`] when the state cannot be read.
pub fn read(cfg: &AgentConfig) -> Result<Status, crate::state::StateError> {
    use crate::agent::Clock as _;
    use crate::host::Host as _;
    let dir = crate::state::StateDir::open(cfg.agent_dir())?;
    let state = dir.peek()?;
    let timeouts = fleetgate_apply::remote::CallTimeouts {
        command: cfg.timeouts.command,
        activation: cfg.timeouts.activation,
        probe: std::time::Duration::from_secs(15),
        power_cycle: std::time::Duration::from_secs(60),
    };
    let mut host = crate::host::LocalHost::new(timeouts, fleetgate_apply::health::HealthChecks::default());
    let _ = host.facts();
    let view = host.view().ok();
    let queued = crate::queue::Queue::new(dir.path()).len();
    let now = crate::agent::SystemClock::new(None).unix();
    Ok(Status::new(cfg, &state, view.as_ref(), dir.suspended(), queued, now))
}

/// `fleetgate agent --once --json`'s one document: how the poll ended, its
/// exit code, what a dry run would do, and the status after it.
#[must_use]
pub fn once_document(end: &crate::cycle::End, status: Option<&Status>) -> String {
    use crate::cycle::End;
    let (result, dry_run) = match end {
        End::Idle => ("idle", None),
        End::Applied => ("applied", None),
        End::Failed => ("failed", None),
        End::Unknown => ("unknown", None),
        End::Pending => ("pending-reboot", None),
        End::Unavailable => ("unavailable", None),
        End::Busy => ("busy", None),
        End::Rebooting => ("rebooting", None),
        End::DryRun(text) => ("dry-run", Some(text.clone())),
    };
    serde_json::json!({ "result": result, "exit_code": end.exit_code(), "dry_run": dry_run, "status": status })
        .to_string()
}

/// The one JSON document of a command that failed.
#[must_use]
pub fn error_document(message: &str, exit_code: u8) -> String {
    serde_json::json!({ "result": "failed", "error": message, "exit_code": exit_code }).to_string()
}

#[cfg(test)]
mod tests {
    use fleetgate_apply::machine::HostState;
    use fleetgate_apply::remote::BootDefault;

    use super::*;
    use crate::report::{Outcome, ResultRecord};
    use crate::state::PendingReboot;

    fn p(name: &str) -> String {
        format!("/nix/store/{}-nixos-system-web1-{name}", "0".repeat(32))
    }

    #[test]
    fn what_status_says_on_a_terminal() {
        let cfg = crate::config::sample();
        let manifest = fleetgate_channel::Manifest {
            host: "web1".into(),
            branch: "nixos-tested-web1".into(),
            commit: "1a2b3c4d5e6f".repeat(3) + "0123",
            system: p("r3"),
            nar_hash: "sha256-x".into(),
            nar_size: 1,
            closure_size: 1,
            closure_paths: 1,
            cache: "http://c".into(),
            created_at: 1_000,
            build: None,
        };
        let mut state = AgentState {
            desired: Some(crate::accept::Seen { manifest, digest: "d".into(), signed_by: "k-1".into() }),
            pending_reboot: Some(PendingReboot {
                system: p("r3"),
                why: "outside the reboot window 01:00-05:00".into(),
                reasons: vec!["inhibitor".into()],
                since: 1_100,
                under: None,
            }),
            last_result: Some(ResultRecord::new(
                Outcome::Skipped,
                1_100,
                Some(&p("r3")),
                None,
                "commit 1a2b3c4d5e6f needs a reboot, which waits",
            )),
            ..AgentState::default()
        };
        state.mark_bad(&p("r2"), None, "rolled back: app.service failed", 900);
        let view = View {
            state: HostState {
                current: p("r1"),
                booted: p("r0"),
                profile: p("r1"),
                profile_generation: Some(2),
                boot_id: "b".into(),
            },
            default: Some(BootDefault { entry: "nixos-generation-2.conf".into(), system: Some(p("r1")) }),
            generations: vec![(1, p("r0")), (2, p("r1"))],
        };
        let s = Status::new(&cfg, &state, Some(&view), Some("disk swap".into()), 2, 1_000 + 3 * 3600);
        insta::assert_snapshot!(s.human());
        assert!(!s.converged());
    }
}
