//! One poll, start to end: the agent's state machine. Each step either
//! leads to the next or ends the poll with an [`End`] (which decides the
//! daemon's next wait and `--once`'s exit code) and, when something
//! happened, a result recorded in the state and reported.
//!
//! | step | does | next | ends with |
//! |---|---|---|---|
//! | `Recover` | an attempt the agent did not live to finish, a pending intent ([`crate::recover`]) | `Hold` | the lock held by someone else: `Busy` |
//! | `Hold` | `fleetgate agent suspend` in force? | `Fetch` | `Idle` (result `skipped`, once) |
//! | `Fetch` | conditional GET / file read of the manifest | `Accept` (a document), `Desired` (not modified; or no answer but a manifest accepted before) | no answer and nothing accepted ever: `Unavailable` |
//! | `Accept` | signature, host, never backwards ([`crate::accept`]) | `Desired` | refused: `Failed` (result `failed`, the refusal as finding) |
//! | `Desired` | the host runs it (current and profile)? a known-bad path? | `Verify` | up to date: `Idle` (result `up-to-date` once per manifest); bad: `Idle` (result `skipped`, once) |
//! | `Verify` | the whole closure in a trusted cache, narinfos signed, NAR hash the manifest's ([`crate::store`]) | `Realise` | refused: `Failed`; no answer: `Unavailable` |
//! | `Realise` | substitution only (`max-jobs = 0`), GC root | `Check` | `Unavailable` |
//! | `Check` | live facts + `fleetgate check` | `Switch` / `Reboot` | blocked: path bad, `Failed` (result `blocked` + findings) |
//! | `Reboot` | allowed? inside the window? then a random delay | `Apply` | not allowed / outside: `Pending` (pending reboot reported, nothing done) |
//! | `Apply` | deploy lock, attempt saved, the engine: live switch, or `prepare` + own reboot | — | `Applied`; `Failed` (path bad); `Unknown` (path bad); `Rebooting`; lock held: `Busy` |
//!
//! Dry runs stop after `Check` with [`End::DryRun`], saving and reporting
//! nothing. Every poll ends with the report step: a report is queued when
//! anything in it changed (or one is due as a heartbeat) and the queue is
//! flushed.

use std::time::Duration;

use fleetgate_apply::Outcome;
use fleetgate_apply::intent::Verified;
use fleetgate_apply::reboot::{self, RebootPlan};
use fleetgate_apply::switch::{SwitchPlan, live_switch};
use fleetgate_deploy::host::{bootable_fallback, generation_of};
use fleetgate_deploy::plan::Action;
use fleetgate_facts::{Facts, Finding, Severity};

use crate::accept::{self, Verdict, short};
use crate::agent::{Agent, Lines};
use crate::report::{self, Outcome as Said, RebootReason, ResultExt};
use crate::source::{FetchError, Fetched};
use crate::state::{Attempt, AttemptKind, PendingReboot};
use crate::store::StoreError;

/// How long the agent waits, once it asked for its reboot, for the reboot to
/// take it down (a stop request ends the wait at once).
pub const REBOOT_TAKES_US_DOWN: Duration = Duration::from_secs(300);

/// How a poll ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Nothing to do (up to date, suspended, a known-bad desired system).
    Idle,
    /// The desired system was applied.
    Applied,
    /// An attempt or a manifest failed here; the host is on a known-good generation.
    Failed,
    /// Where the host stands is unknown: a human must look.
    Unknown,
    /// A reboot is needed and waits (window, policy): reported, not done.
    Pending,
    /// The manifest source or the cache did not answer: back off.
    Unavailable,
    /// Someone else (a deploy, the boot unit) holds the host's lock.
    Busy,
    /// The host is rebooting into the new system.
    Rebooting,
    /// A dry run: what would be done.
    DryRun(String),
}

impl End {
    /// `--once`'s exit code: 0 fine, 1 failed here, 3 unknown, 4 could not
    /// get through (source, cache, lock).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            End::Idle | End::Applied | End::Pending | End::Rebooting | End::DryRun(_) => 0,
            End::Failed => 1,
            End::Unknown => 3,
            End::Unavailable | End::Busy => 4,
        }
    }

    /// Whether it counts as a failed poll for the backoff.
    #[must_use]
    pub fn backs_off(&self) -> bool {
        matches!(self, End::Unavailable | End::Busy)
    }
}

/// What a poll is asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollOptions {
    /// Decide, do nothing.
    pub dry_run: bool,
}

/// Runs one poll (see the table above).
pub fn poll(a: &mut Agent<'_>, opts: PollOptions) -> End {
    let end = steps(a, opts);
    if !opts.dry_run {
        a.save();
        a.report();
    }
    end
}

fn steps(a: &mut Agent<'_>, opts: PollOptions) -> End {
    if !opts.dry_run {
        if let Some(end) = crate::recover::recover(a) {
            return end;
        }
        if let Some(why) = a.dir.suspended() {
            let desired = a.state.desired.as_ref().map(|d| d.manifest.system.clone());
            a.record_once(report::result(
                Said::Skipped,
                a.clock.unix(),
                desired.as_deref(),
                None,
                format!("upgrades are suspended on this host ({why}); `fleetgate agent resume` lets them go on"),
            ));
            return End::Idle;
        }
    }
    if let Some(end) = fetch(a) {
        return end;
    }
    let Some(desired) = a.state.desired.clone() else {
        a.log("no manifest accepted yet");
        return End::Idle;
    };
    let (system, commit) = (desired.manifest.system.clone(), desired.manifest.commit.clone());
    let now_state = match a.host.machine().state() {
        Ok(s) => s,
        Err(e) => return a.failed(&system, &commit, format!("cannot read where this host stands: {e}"), &[]),
    };
    if now_state.current == system && now_state.profile == system {
        a.state.pending_reboot = None;
        if a.state.last_result.as_ref().is_none_or(|r| r.system.as_deref() != Some(system.as_str())) {
            a.record(report::result(
                Said::UpToDate,
                a.clock.unix(),
                Some(&system),
                Some(&commit),
                format!("runs commit {} already", short(&commit)),
            ));
        }
        return End::Idle;
    }
    if let Some(bad) = a.state.bad(&system).cloned() {
        // How it failed stays the last result; a manifest re-promoting it is said once.
        if a.state.last_result.as_ref().is_some_and(|r| r.system.as_deref() == Some(system.as_str())) {
            return End::Idle;
        }
        a.record_once(report::result(
            Said::Skipped,
            a.clock.unix(),
            Some(&system),
            Some(&commit),
            format!(
                "commit {} failed on this host before ({}); it is not tried again — a newer tested commit will be",
                short(&commit),
                bad.reason
            ),
        ));
        return End::Idle;
    }
    if let Some(end) = closure(a, &system, &commit, &desired.manifest.nar_hash, opts) {
        return end;
    }
    if !opts.dry_run && still_waits(a, &system, &now_state) {
        return End::Pending;
    }
    a.worked = true;
    let facts = match a.host.facts() {
        Ok(f) => f,
        Err(e) => return a.failed(&system, &commit, format!("cannot gather this host's facts: {e}"), &[]),
    };
    let plan = a.host.plan(&system, &facts);
    if opts.dry_run {
        return End::DryRun(format!(
            "would {} commit {} ({system}): {}",
            match plan.action {
                Action::Switch => "switch live to",
                Action::Boot => "boot (verified reboot)",
                Action::Blocked => "refuse (blocked)",
                Action::UpToDate => "keep",
            },
            short(&commit),
            plan.next_step
        ));
    }
    match plan.action {
        Action::UpToDate => End::Idle,
        Action::Blocked => {
            let first = plan.findings.iter().find(|f| f.severity == Severity::Error).map_or_else(
                || "the pre-flight check found an error".to_owned(),
                |f| format!("{}: {}", f.id, f.message),
            );
            a.state.mark_bad(
                &system,
                Some(&commit),
                &format!("blocked by the pre-flight check ({first})"),
                a.clock.unix(),
            );
            a.state.pending_reboot = None;
            a.record(
                report::result(
                    Said::Blocked,
                    a.clock.unix(),
                    Some(&system),
                    Some(&commit),
                    format!(
                        "commit {} is blocked by the pre-flight check on this host; nothing was applied",
                        short(&commit)
                    ),
                )
                .with_findings(&plan.findings),
            );
            End::Failed
        }
        Action::Switch => apply_switch(a, &facts, &system, &commit, &plan.findings),
        Action::Boot => apply_reboot(a, &facts, &system, &commit, &plan.findings),
    }
}

/// A reboot found pending for `system` under this very boot and running
/// system, that still may not happen now: nothing new to learn from facts
/// and a check, nothing to do.
fn still_waits(a: &Agent<'_>, system: &str, now: &fleetgate_apply::machine::HostState) -> bool {
    let Some(p) = &a.state.pending_reboot else { return false };
    let same = p.system == system && p.under.as_ref() == Some(&(now.boot_id.clone(), now.current.clone()));
    let may = a.cfg.reboot.allow && a.cfg.reboot.window.is_none_or(|w| w.contains(a.clock.minute_of_day()));
    same && !may
}

/// `Fetch` and `Accept`; `None` goes on with the desired manifest.
fn fetch(a: &mut Agent<'_>) -> Option<End> {
    let (etag, modified) = (a.state.validators.etag.clone(), a.state.validators.last_modified.clone());
    let fetched = a.source.fetch(etag.as_deref(), modified.as_deref());
    let now = a.clock.unix();
    match fetched {
        Err(e) => {
            a.state.fetch.failures += 1;
            if a.state.fetch.error.as_deref() != Some(e.to_string().as_str()) {
                a.log(&format!("{e}"));
            }
            a.state.fetch.error = Some(e.to_string());
            if a.state.desired.is_none() {
                return Some(if matches!(e, FetchError::Missing(_)) { End::Idle } else { End::Unavailable });
            }
            None
        }
        Ok(Fetched::NotModified) => {
            a.state.fetch = crate::state::FetchRecord { last_ok: Some(now), error: None, failures: 0 };
            None
        }
        Ok(Fetched::Document { bytes, etag, last_modified }) => {
            a.state.fetch = crate::state::FetchRecord { last_ok: Some(now), error: None, failures: 0 };
            let document = accept::digest(&String::from_utf8_lossy(&bytes));
            let unchanged = a.state.validators.document.as_deref() == Some(document.as_str());
            a.state.validators = crate::state::Validators { etag, last_modified, document: Some(document) };
            if unchanged {
                return None;
            }
            match accept::accept(&bytes, &a.cfg.trusted_keys, &a.cfg.host, a.state.desired.as_ref(), now) {
                Ok(Verdict::Same) => None,
                Ok(Verdict::New(seen)) => {
                    a.log(&format!(
                        "accepted the manifest of commit {} ({}), signed by {}",
                        short(&seen.manifest.commit),
                        seen.manifest.system,
                        seen.signed_by
                    ));
                    a.state.desired = Some(*seen);
                    a.state.verified = None;
                    a.state.pending_reboot = None;
                    None
                }
                Err(refusal) => {
                    a.log(&format!("refused a manifest: {refusal}"));
                    let desired = a.state.desired.as_ref().map(|d| d.manifest.system.clone());
                    a.record(
                        report::result(
                            Said::Failed,
                            now,
                            desired.as_deref(),
                            None,
                            format!("refused a manifest: {refusal}"),
                        )
                        .with_findings(&[refusal.finding()]),
                    );
                    Some(End::Failed)
                }
            }
        }
    }
}

/// `Verify` and `Realise`; `None` goes on.
fn closure(a: &mut Agent<'_>, system: &str, commit: &str, nar_hash: &str, opts: PollOptions) -> Option<End> {
    if a.state.verified.as_deref() != Some(system) {
        a.worked = true;
        match a.store.verify(system, nar_hash) {
            Ok(c) => {
                a.log(&format!("{} holds the closure of {system}: {} path(s), signed", c.cache, c.paths));
                a.state.verified = Some(system.to_owned());
            }
            Err(StoreError::Refused { id, message }) => {
                a.log(&format!("refused the closure: {message}"));
                let finding = Finding::new(id, Severity::Error, message.clone()).with_fix(
                    "Nothing was fetched or applied. Check the cache the channel promotes into (and its signing key)",
                );
                a.record_once(
                    report::result(
                        Said::Failed,
                        a.clock.unix(),
                        Some(system),
                        Some(commit),
                        format!("refused the closure of commit {}: {message}", short(commit)),
                    )
                    .with_findings(&[finding]),
                );
                return Some(End::Failed);
            }
            Err(StoreError::Unavailable(e)) => {
                a.log(&e);
                return Some(End::Unavailable);
            }
        }
    }
    if a.store.is_local(system) {
        return None;
    }
    if opts.dry_run {
        return Some(End::DryRun(format!(
            "would fetch commit {} ({system}) from the cache, then check it on this host",
            short(commit)
        )));
    }
    a.log(&format!("fetching {system} from the cache (substitution only)"));
    match a.store.realise(system) {
        Ok(()) => None,
        Err(StoreError::Unavailable(e) | StoreError::Refused { message: e, .. }) => {
            a.log(&e);
            Some(End::Unavailable)
        }
    }
}

fn run_id(a: &Agent<'_>) -> String {
    format!("agent-{}-{}", a.clock.unix(), std::process::id())
}

/// Takes the deploy lock for `run`; `Err(End::Busy)` when someone else has it.
fn lock(a: &mut Agent<'_>, run: &str) -> Result<(), End> {
    match a.host.machine().lock(run) {
        Ok(()) => Ok(()),
        Err(e) => {
            a.log(&format!("not now: {e}"));
            Err(End::Busy)
        }
    }
}

/// What the host reaches now of the server and the caches: it must still
/// reach those after the change (networking is what a bad generation breaks
/// first). One that is down already (the server, say) is no reason to roll
/// back.
fn reach(a: &mut Agent<'_>) -> Vec<String> {
    let targets = a.cfg.health.reach.clone();
    let up = a.host.reachable(&targets);
    let down: Vec<&String> = targets.iter().filter(|t| !up.contains(t)).collect();
    if !down.is_empty() {
        let line = format!(
            "not reachable before the change, so not required after it: {}",
            down.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
        a.log(&line);
    }
    a.host.must_reach(up.clone());
    up
}

fn apply_switch(a: &mut Agent<'_>, facts: &Facts, system: &str, commit: &str, findings: &[Finding]) -> End {
    let Some(old) = facts.current_system.as_ref().map(|s| s.path.clone()) else {
        return a.failed(system, commit, "this host has no /run/current-system".into(), findings);
    };
    let run = run_id(a);
    if let Err(end) = lock(a, &run) {
        return end;
    }
    let baseline = a.host.machine().system_state();
    reach(a);
    let plan = SwitchPlan {
        run_id: run.clone(),
        new: system.to_owned(),
        old_generation: generation_of(facts, &old),
        old,
        boot_id: facts.boot_id.clone().unwrap_or_default(),
        baseline,
        window: a.cfg.timeouts.confirm.max(Duration::from_secs(5)),
        activation: a.cfg.timeouts.activation.max(Duration::from_secs(10)),
        health: a.cfg.health.timeout,
    };
    a.state.attempt = Some(Attempt {
        run_id: run.clone(),
        system: system.to_owned(),
        commit: commit.to_owned(),
        started_at: a.clock.unix(),
        kind: AttemptKind::Switch {
            old: plan.old.clone(),
            old_generation: plan.old_generation,
            boot_id: plan.boot_id.clone(),
            window_secs: plan.window.as_secs(),
            activation_secs: plan.activation.as_secs(),
        },
    });
    a.save();
    a.log(&format!("switching live to commit {} ({system}), run {run}", short(commit)));
    let outcome = live_switch(a.host.machine(), &mut Lines(&mut *a.log), &plan);
    a.state.attempt = None;
    let end = a.conclude(&outcome, system, commit, findings);
    let _ = a.host.machine().unlock(&run);
    end
}

/// The words of the check's findings that say why a reboot is needed.
fn reboot_reasons(findings: &[Finding]) -> Vec<RebootReason> {
    let mut reasons = Vec::new();
    for f in findings {
        let text = format!("{} {}", f.message, f.evidence.join(" "));
        if f.id == "switch.refused" {
            reasons.push(RebootReason::Inhibitor);
        }
        if f.id == "switch.reboot-needed" {
            if text.contains("kernel") {
                reasons.push(RebootReason::Kernel);
            }
            if text.contains("initrd") {
                reasons.push(RebootReason::Initrd);
            }
        }
    }
    if reasons.is_empty() {
        reasons.push(RebootReason::Staged);
    }
    reasons.dedup();
    reasons
}

fn pending(a: &mut Agent<'_>, facts: &Facts, system: &str, commit: &str, why: String, findings: &[Finding]) -> End {
    let reasons = reboot_reasons(findings);
    let under = Some((
        facts.boot_id.clone().unwrap_or_default(),
        facts.current_system.as_ref().map(|s| s.path.clone()).unwrap_or_default(),
    ));
    let same = a.state.pending_reboot.as_ref().is_some_and(|p| p.system == system && p.why == why);
    if let Some(p) = a.state.pending_reboot.as_mut().filter(|_| same) {
        p.under = under;
    } else {
        a.log(&format!("commit {} needs a reboot, which waits: {why}", short(commit)));
        a.state.pending_reboot =
            Some(PendingReboot { system: system.to_owned(), why: why.clone(), reasons, since: a.clock.unix(), under });
        a.record(
            report::result(
                Said::Skipped,
                a.clock.unix(),
                Some(system),
                Some(commit),
                format!("commit {} needs a reboot, which waits: {why}", short(commit)),
            )
            .with_findings(findings),
        );
    }
    End::Pending
}

fn apply_reboot(a: &mut Agent<'_>, facts: &Facts, system: &str, commit: &str, findings: &[Finding]) -> End {
    if !a.cfg.reboot.allow {
        return pending(
            a,
            facts,
            system,
            commit,
            "this agent may not reboot the host (reboot.allow is false)".into(),
            findings,
        );
    }
    if let Some(w) = a.cfg.reboot.window {
        let now = a.clock.minute_of_day();
        if !w.contains(now) {
            return pending(a, facts, system, commit, format!("outside the reboot window {}", w.describe()), findings);
        }
        let delay = crate::window::reboot_delay(a.cfg.reboot.randomized_delay, w.left(now));
        if !delay.is_zero() {
            a.log(&format!("rebooting after a random delay of {} s", delay.as_secs()));
            if !a.clock.sleep(delay) {
                return End::Idle;
            }
        }
    } else if !a.cfg.reboot.randomized_delay.is_zero() {
        let delay = crate::window::reboot_delay(a.cfg.reboot.randomized_delay, None);
        a.log(&format!("rebooting after a random delay of {} s", delay.as_secs()));
        if !a.clock.sleep(delay) {
            return End::Idle;
        }
    }
    let state =
        fleetgate_deploy::host::host_state(facts, facts.current_system.as_ref().map_or("", |s| s.path.as_str()));
    let fallback = match bootable_fallback(facts, &state, system) {
        Ok(f) => f,
        Err(no) => {
            let finding = Finding::new(
                "reboot.no-bootable-fallback",
                Severity::Error,
                format!("no fallback known to boot for the verified reboot: {}", no.why),
            )
            .with_fix("boot a known-good generation first (`fleetgate rollback`, or a reboot into the default)");
            a.record_once(
                report::result(
                    Said::Blocked,
                    a.clock.unix(),
                    Some(system),
                    Some(commit),
                    format!("commit {} needs a verified reboot, and this host has no fallback known to boot; nothing was done", short(commit)),
                )
                .with_findings(&[finding]),
            );
            return End::Failed;
        }
    };
    let run = run_id(a);
    if let Err(end) = lock(a, &run) {
        return end;
    }
    let baseline = a.host.machine().system_state();
    let tcp = reach(a);
    let plan = RebootPlan {
        run_id: run.clone(),
        new: system.to_owned(),
        fallback_generation: generation_of(facts, &fallback),
        fallback: fallback.clone(),
        boot_id: state.boot_id.clone(),
        verified: Verified {
            booted: system.to_owned(),
            units: a.cfg.health.units.clone(),
            commands: a.cfg.health.commands.clone(),
            baseline,
            tcp,
        },
        allow_unverified: false,
        power_cycle_attempts: 1,
        reboot_within: Duration::from_secs(300),
        health_within: a.cfg.health.timeout,
        now_unix: a.clock.unix(),
    };
    a.log(&format!("booting commit {} ({system}) once, verified; fallback {fallback}; run {run}", short(commit)));
    match reboot::prepare(a.host.machine(), &mut Lines(&mut *a.log), &plan) {
        Err(outcome) => {
            let end = a.conclude(&outcome, system, commit, findings);
            let _ = a.host.machine().unlock(&run);
            end
        }
        Ok(_) => {
            a.state.pending_reboot = None;
            a.state.attempt = Some(Attempt {
                run_id: run.clone(),
                system: system.to_owned(),
                commit: commit.to_owned(),
                started_at: a.clock.unix(),
                kind: AttemptKind::Reboot { fallback, boot_id_before: plan.boot_id.clone() },
            });
            a.record(
                report::result(
                    Said::InProgress,
                    a.clock.unix(),
                    Some(system),
                    Some(commit),
                    format!("rebooting into commit {} once (verified reboot, run {run})", short(commit)),
                )
                .with_findings(findings),
            );
            // Said before the reboot, as far as the server is reachable.
            a.save();
            a.report();
            a.host.reboot();
            // The reboot takes this process down: under systemd its stop
            // (SIGTERM) ends this wait at once, so the reboot is not held up
            // for the unit's stop timeout and the agent is not SIGKILLed. If
            // the host is still up after it, the next poll finds the intent
            // unresolved.
            let _ = a.clock.sleep(REBOOT_TAKES_US_DOWN);
            End::Rebooting
        }
    }
}

/// Records how the engine ended an attempt; the path is bad unless applied.
pub(crate) fn conclude(a: &mut Agent<'_>, outcome: &Outcome, system: &str, commit: &str, findings: &[Finding]) -> End {
    let now = a.clock.unix();
    let message = outcome.message();
    a.log(&format!("commit {}: {message}", short(commit)));
    match outcome {
        Outcome::Switched | Outcome::Blessed => {
            a.state.interrupted.remove(system);
            if *outcome == Outcome::Blessed {
                a.host.record_last_good(system);
            }
            a.record(report::result(Said::Applied, now, Some(system), Some(commit), message).with_findings(findings));
            End::Applied
        }
        Outcome::RolledBack { .. } | Outcome::Refused { .. } => {
            a.state.mark_bad(system, Some(commit), message.lines().next().unwrap_or_default(), now);
            let said = if matches!(outcome, Outcome::RolledBack { .. }) { Said::RolledBack } else { Said::Failed };
            a.record(report::result(said, now, Some(system), Some(commit), message).with_findings(findings));
            End::Failed
        }
        Outcome::Unknown { .. } => {
            a.state.mark_bad(system, Some(commit), "where the host stood afterwards could not be told", now);
            let finding = Finding::new("agent.unknown", Severity::Error, message.clone())
                .with_fix("Look at the host: `fleetgate agent status`, the boot loader's default, /run/current-system");
            let mut all = vec![finding];
            all.extend(findings.iter().cloned());
            a.record(report::result(Said::Failed, now, Some(system), Some(commit), message).with_findings(&all));
            End::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_come_from_the_checks_findings() {
        let refused = Finding::new("switch.refused", Severity::Info, "dbus-implementation changes");
        let later = Finding::new("switch.reboot-needed", Severity::Info, "boot-time components change")
            .with_evidence(["kernel: a -> b", "initrd: c -> d"]);
        assert_eq!(reboot_reasons(&[refused]), [RebootReason::Inhibitor]);
        assert_eq!(reboot_reasons(&[later]), [RebootReason::Kernel, RebootReason::Initrd]);
        assert_eq!(reboot_reasons(&[]), [RebootReason::Staged]);
        assert_eq!((End::Failed.exit_code(), End::Unavailable.exit_code(), End::Unknown.exit_code()), (1, 4, 3));
    }
}
