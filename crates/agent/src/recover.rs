//! At the start of every poll: an attempt the agent did not live to finish
//! (it was killed, or it rebooted the host), or a verified reboot some other
//! run left pending, is finished first — the host must be on a known-good
//! generation before anything new is tried.
//!
//! | found | done | result |
//! |---|---|---|
//! | a live switch in flight | [`switch::abandon`]: the watchdog cancelled or asked to roll back, awaited | confirmed already: `applied`; rolled back: `failed` (interrupted; after [`MAX_INTERRUPTIONS`] the path is bad) |
//! | a verified reboot, the intent still on the host, a new boot | [`reboot::resume`]: health, bless or back to the fallback | `applied` / `rolled-back` (bad) |
//! | the same, the host never rebooted | [`reboot::resume`] undoes the one-time boot | `failed` (interrupted) |
//! | a verified reboot whose intent is gone | [`reboot::resolved_at_boot`]: the boot unit finished it | `applied` / `rolled-back` (bad) |
//! | an intent of another run (a deploy that died) | [`reboot::resume`] | logged; nothing marked bad |
//! | the lock held by the boot unit (`<run>-resume`) | waited for, bounded | — |
//! | the lock held by anyone else | nothing | the poll ends `Busy` |

use std::time::Duration;

use fleetgate_apply::Outcome;
use fleetgate_apply::machine::{LockError, poll};
use fleetgate_apply::reboot::{self, resume_owner};
use fleetgate_apply::switch::{self, SwitchPlan};

use crate::accept::short;
use crate::agent::{Agent, Lines};
use crate::cycle::End;
use crate::report::{Outcome as Said, ResultRecord};
use crate::state::{Attempt, AttemptKind};

/// Interrupted attempts of one system before it counts as bad.
pub const MAX_INTERRUPTIONS: u32 = 2;

/// How long a verified reboot's resume may take to come back.
const REBOOT_WITHIN: Duration = Duration::from_secs(300);

/// Takes the lock as `run`, waiting (bounded) while the boot unit's resume
/// of `intent_run` holds it. `Err(End::Busy)` when anyone else holds it.
fn lock(a: &mut Agent<'_>, run: &str, intent_run: Option<&str>) -> Result<(), End> {
    let resume = intent_run.map(resume_owner);
    let within = a.cfg.health.timeout + Duration::from_secs(120);
    let got = poll(a.host.machine(), within, Duration::from_secs(2), |m| match m.lock(run) {
        Ok(()) => Some(Ok(())),
        Err(LockError::Held { owner }) if resume.as_ref().is_some_and(|r| owner.contains(r.as_str())) => None,
        Err(e) => Some(Err(e.to_string())),
    });
    match got {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => {
            a.log(&format!("not now: {e}"));
            Err(End::Busy)
        }
        None => {
            a.log("the boot unit still finishes the verified reboot; trying again at the next poll");
            Err(End::Busy)
        }
    }
}

/// Finishes what was left (see the table above); `Some` ends the poll (a
/// finished attempt ends it too, so that its report says how it ended).
pub fn recover(a: &mut Agent<'_>) -> Option<End> {
    match a.state.attempt.clone() {
        Some(attempt) => Some(finish(a, &attempt)),
        None => foreign_intent(a),
    }
}

fn finish(a: &mut Agent<'_>, attempt: &Attempt) -> End {
    a.worked = true;
    let intent_run = matches!(attempt.kind, AttemptKind::Reboot { .. }).then_some(attempt.run_id.as_str());
    if let Err(end) = lock(a, &attempt.run_id, intent_run) {
        return end;
    }
    let what = match attempt.kind {
        AttemptKind::Reboot { .. } => "the verified reboot of",
        AttemptKind::Switch { .. } => "the interrupted live switch of",
    };
    a.log(&format!("finishing {what} run {} (commit {})", attempt.run_id, short(&attempt.commit)));
    let outcome = match &attempt.kind {
        AttemptKind::Switch { old, old_generation, boot_id, window_secs, activation_secs } => {
            let plan = SwitchPlan {
                run_id: attempt.run_id.clone(),
                new: attempt.system.clone(),
                old: old.clone(),
                old_generation: *old_generation,
                boot_id: boot_id.clone(),
                baseline: "unknown".into(),
                window: Duration::from_secs(*window_secs),
                activation: Duration::from_secs(*activation_secs),
                health: a.cfg.health.timeout,
            };
            switch::abandon(a.host.machine(), &mut Lines(&mut *a.log), &plan)
        }
        AttemptKind::Reboot { fallback, .. } => match a.host.machine().read_intent() {
            Ok(Some(intent)) if intent.run_id == attempt.run_id => {
                // What it reached before the reboot, it must reach after it.
                a.host.must_reach(intent.verified.tcp.clone());
                reboot::resume(
                    a.host.machine(),
                    &mut Lines(&mut *a.log),
                    &intent,
                    a.cfg.health.timeout,
                    false,
                    REBOOT_WITHIN,
                )
            }
            Ok(_) => reboot::resolved_at_boot(a.host.machine(), &attempt.system, fallback),
            Err(e) => Outcome::Unknown {
                at: fleetgate_apply::Step::Health,
                why: format!("the pending intent cannot be read: {e}"),
            },
        },
    };
    a.state.attempt = None;
    let end = settle(a, attempt, &outcome);
    let _ = a.host.machine().unlock(&attempt.run_id);
    a.save();
    end
}

/// An interruption is not the system's fault — unless it keeps happening.
fn settle(a: &mut Agent<'_>, attempt: &Attempt, outcome: &Outcome) -> End {
    let interrupted = matches!(
        (&attempt.kind, outcome),
        (AttemptKind::Switch { .. }, Outcome::RolledBack { .. } | Outcome::Refused { .. })
            | (AttemptKind::Reboot { .. }, Outcome::Refused { .. })
    );
    if !interrupted {
        return a.conclude(outcome, &attempt.system, &attempt.commit, &[]);
    }
    let count = a.state.interrupted.entry(attempt.system.clone()).or_insert(0);
    *count += 1;
    let count = *count;
    let now = a.clock.unix();
    let mut message = format!(
        "the agent was stopped during run {} (commit {}); {} (interruption {count} of {MAX_INTERRUPTIONS})",
        attempt.run_id,
        short(&attempt.commit),
        outcome.message()
    );
    if count >= MAX_INTERRUPTIONS {
        a.state.mark_bad(&attempt.system, Some(&attempt.commit), "its attempts were interrupted repeatedly", now);
        message.push_str("; it is not tried again");
    }
    a.log(&message);
    a.record(ResultRecord::new(Said::Failed, now, Some(&attempt.system), Some(&attempt.commit), message));
    End::Failed
}

/// A verified reboot of another run (a deploy that died) left on the host.
fn foreign_intent(a: &mut Agent<'_>) -> Option<End> {
    let intent = match a.host.machine().read_intent() {
        Ok(Some(i)) => i,
        Ok(None) => return None,
        Err(e) => {
            a.log(&format!("a pending verified reboot cannot be read: {e}"));
            return None;
        }
    };
    a.worked = true;
    let own = format!("agent-resume-{}", std::process::id());
    if let Err(end) = lock(a, &own, Some(&intent.run_id)) {
        return Some(end);
    }
    // The boot unit may have finished it while the lock was waited for.
    let outcome = match a.host.machine().read_intent() {
        Ok(Some(i)) if i.run_id == intent.run_id => {
            a.host.must_reach(i.verified.tcp.clone());
            reboot::resume(a.host.machine(), &mut Lines(&mut *a.log), &i, a.cfg.health.timeout, false, REBOOT_WITHIN)
        }
        _ => reboot::resolved_at_boot(a.host.machine(), &intent.new, &intent.fallback),
    };
    let _ = a.host.machine().unlock(&own);
    a.log(&format!("the verified reboot run {} left pending: {}", intent.run_id, outcome.message()));
    (outcome.standing() == fleetgate_apply::Standing::Unknown).then_some(End::Unknown)
}
