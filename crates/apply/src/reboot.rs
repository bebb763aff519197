//! The verified reboot, the one restore path, and the resume of a pending
//! intent — as explicit states.
//!
//! | state            | step                                              | success →      | failure exits |
//! |------------------|---------------------------------------------------|----------------|---------------|
//! | `SetProfile`     | profile → new (generation N)                      | `Install`      | `Restore` → Refused |
//! | `Install`        | FALLBACK's `switch-to-configuration boot`: menu gains N, default stays the fallback | `Arm` | `Restore` → Refused |
//! | `Arm`            | entry booting new: once; entry booting fallback: default (found by what they boot) | `Intent` | cannot: `Restore` → Refused (or, `--allow-unverified-reboot`, new made default); failed: `Restore` → Refused |
//! | `Intent`         | write `pending.json` atomically                   | `Reboot`       | `Restore` → Refused |
//! | `Reboot`         | detached reboot                                   | `WaitBoot`     | — |
//! | `WaitBoot`       | new boot id over a new login, deadline, countdown | `Relock`       | `PowerCycle` |
//! | `PowerCycle`     | hook, then `WaitBoot` again, N attempts           | `Relock`       | Unknown (the intent stays on the host for its own resume) |
//! | `Relock`         | the deploy lock again (tmpfs: lost in the reboot); the host's own resume holding it is waited for | intent still ours: [`resume`]; gone: read what the host says (resolved at boot) | held by another run: Unknown |
//!
//! The first four states are [`prepare`] on their own: the agent, which
//! reboots its own host and cannot wait for it, stops there, reboots, and
//! leaves the rest to [`resume`] at its next start (or the boot unit);
//! [`resolved_at_boot`] reads where a host stands whose reboot someone else
//! resolved.
//!
//! [`resume`] — shared by the waiting deployer, the next deploy, the agent
//! and the host itself at boot:
//!
//! | state            | step                                              | success →      | failure exits |
//! |------------------|---------------------------------------------------|----------------|---------------|
//! | `Look`           | current/booted/profile/boot id from the host      | booted new: `Health`; booted fallback: `Restore` → RolledBack; not rebooted yet (dead run): `Restore` → Refused | anything else / no answer: Unknown |
//! | `Health`         | checks over a new login until the deadline        | `Bless`        | `BackToFallback` |
//! | `Bless`          | new `switch-to-configuration boot`, entry blessed, intent cleared | `Verify` | `BackToFallback` |
//! | `BackToFallback` | `Restore`, reboot, wait (power-cycle), booted fallback? | RolledBack | Unknown |
//! | `Verify`         | booted, current and profile are new               | Blessed        | Unknown |
//!
//! [`restore`] is the one way back: profile → fallback generation, fallback's
//! `switch-to-configuration boot`, one-shot disarmed, then the profile read
//! back. Its result is [`Restored`]; a failed restore is Unknown, never
//! known-good.

use std::time::Duration;

use crate::intent::{FORMAT, PendingIntent, Verified};
use crate::machine::{Armed, LockError, Machine, poll};
use crate::outcome::{Observer, Outcome, Restored, Step};
use crate::switch::wait_healthy;

/// A verified reboot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootPlan {
    /// The run.
    pub run_id: String,
    /// The new system.
    pub new: String,
    /// The system the host comes back to when the new one fails: the one
    /// that demonstrably booted on this hardware when there is one.
    pub fallback: String,
    /// Its profile generation.
    pub fallback_generation: Option<u64>,
    /// The boot id before the reboot.
    pub boot_id: String,
    /// What must hold after the reboot.
    pub verified: Verified,
    /// Reboot even when the boot loader cannot boot an entry once.
    pub allow_unverified: bool,
    /// Times the power-cycle hook is tried.
    pub power_cycle_attempts: u32,
    /// How long a host may take to come back.
    pub reboot_within: Duration,
    /// How long health checks may take to pass.
    pub health_within: Duration,
    /// Seconds since the epoch now (for the intent's deadline).
    pub now_unix: u64,
}

/// A host made ready to boot a new system once ([`prepare`]): the profile on
/// it, its entry in the menu, the one-time boot armed, the intent written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The one-time boot is armed (false: unverified reboot, the new system
    /// was made the default).
    pub armed: bool,
    /// The intent written on the host.
    pub intent: PendingIntent,
}

/// The states before the reboot (`SetProfile` → `Install` → `Arm` →
/// `Intent`): on success the host only needs to reboot, and whoever sees it
/// come back finishes with [`resume`] (the agent reboots its own host and
/// leaves that to its next start or the boot unit). Every failure restores
/// the fallback and is the returned [`Outcome`] (Refused, or Unknown when the
/// restore failed).
///
/// # Errors
/// The [`Outcome`] of a refused preparation.
pub fn prepare(m: &mut dyn Machine, obs: &mut dyn Observer, p: &RebootPlan) -> Result<Prepared, Outcome> {
    obs.step(Step::Activate);
    let refused = |m: &mut dyn Machine, why: String| match restore(m, &p.fallback, p.fallback_generation) {
        Restored::RolledBack => Outcome::Refused { at: Step::Activate, why },
        Restored::Unknown { why: w } => Outcome::Unknown {
            at: Step::Activate,
            why: format!("{why}; then restoring the previous generation failed: {w}"),
        },
    };
    if let Err(e) = m.set_profile(&p.new) {
        return Err(refused(m, format!("could not set the system profile: {e}")));
    }
    if let Err(e) = m.install_boot(&p.fallback) {
        return Err(refused(
            m,
            format!("installing the boot loader entries failed; the previous generation stays the default: {e}"),
        ));
    }
    let armed = match m.arm_once(&p.new, &p.fallback) {
        Ok(Armed::Once { detail }) => {
            obs.info(&detail);
            true
        }
        Ok(Armed::Cannot(why)) if !p.allow_unverified => {
            return Err(refused(
                m,
                format!(
                    "the boot loader cannot boot the new generation once ({why}), so a failed boot could not fall back by itself; \
                     nothing was changed. Deploy with --allow-unverified-reboot to reboot anyway (with a power-cycle command ready)"
                ),
            ));
        }
        Ok(Armed::Cannot(why)) => {
            obs.info(&format!("cannot boot once ({why}); unverified reboot: the new generation is made the default"));
            if let Err(e) = m.install_boot(&p.new) {
                return Err(refused(m, format!("making the new generation the default failed: {e}")));
            }
            false
        }
        Err(e) => return Err(refused(m, format!("arming the one-time boot failed: {e}"))),
    };
    let intent = PendingIntent {
        format: FORMAT,
        run_id: p.run_id.clone(),
        new: p.new.clone(),
        fallback: p.fallback.clone(),
        fallback_generation: p.fallback_generation,
        boot_id_before: p.boot_id.clone(),
        deadline_unix: p.now_unix + p.reboot_within.as_secs() * u64::from(p.power_cycle_attempts.max(1) + 1),
        verified: p.verified.clone(),
    };
    if let Err(e) = m.write_intent(&intent) {
        return Err(refused(m, format!("could not write the pending intent on the host: {e}")));
    }
    Ok(Prepared { armed, intent })
}

/// Runs the verified reboot; always ends with an [`Outcome`].
pub fn verified_reboot(m: &mut dyn Machine, obs: &mut dyn Observer, p: &RebootPlan) -> Outcome {
    let armed = match prepare(m, obs, p) {
        Ok(prepared) => prepared.armed,
        Err(outcome) => return outcome,
    };
    obs.step(Step::Reboot);
    m.reboot();
    let cycled = match wait_back(m, obs, &p.boot_id, p.reboot_within, p.power_cycle_attempts) {
        Back::Booted => false,
        Back::AfterPowerCycle => true,
        Back::Never(how) => return Outcome::Unknown { at: Step::WaitBoot, why: not_back(p, armed, &how) },
    };
    // The lock lived in /run: take it again, or find who did.
    // The host's own resume (its boot unit) may hold it: wait for it to finish.
    let relock_within = p.health_within + Duration::from_secs(120);
    match poll(m, relock_within, Duration::from_secs(2), |m| match m.lock(&p.run_id) {
        Err(LockError::Held { owner }) if !owner.contains(&resume_owner(&p.run_id)) => Some(Err(owner)),
        Err(LockError::Held { .. } | LockError::Machine(_)) => None,
        Ok(()) => Some(Ok(())),
    }) {
        Some(Ok(())) => {}
        Some(Err(owner)) => {
            return Outcome::Unknown {
                at: Step::WaitBoot,
                why: format!("the host came back, but another deploy took its lock ({owner}): check it"),
            };
        }
        None => {
            return Outcome::Unknown {
                at: Step::WaitBoot,
                why: format!(
                    "the host came back, but its deploy lock could not be taken again within {} s",
                    relock_within.as_secs()
                ),
            };
        }
    }
    let intent_now = match m.read_intent() {
        Ok(i) => i,
        Err(e) => {
            return Outcome::Unknown { at: Step::Health, why: format!("the host came back but cannot be asked: {e}") };
        }
    };
    match intent_now {
        Some(i) if i.run_id == p.run_id => resume(m, obs, &i, p.health_within, cycled, p.reboot_within),
        // The host resolved it at boot: read where it stands.
        _ => resolved_at_boot(m, &p.new, &p.fallback),
    }
}

/// The owner string the host-side resume takes the lock with.
#[must_use]
pub fn resume_owner(run_id: &str) -> String {
    format!("{run_id}-resume")
}

/// Where a host stands whose verified reboot into `new` (falling back to
/// `fallback`) was finished by someone else (its boot unit, another run):
/// Blessed when it booted and runs `new` with the profile on it, RolledBack
/// when it runs the fallback with the profile on it, else Unknown.
pub fn resolved_at_boot(m: &mut dyn Machine, new: &str, fallback: &str) -> Outcome {
    match m.state() {
        Ok(s) if s.booted == new && s.current == new && s.profile == new => Outcome::Blessed,
        Ok(s) if s.current == fallback && s.profile == fallback => Outcome::RolledBack {
            at: Step::Health,
            why: "the host resolved the verified reboot at boot and went back to the previous generation".to_owned(),
        },
        Ok(s) => Outcome::Unknown {
            at: Step::Health,
            why: format!(
                "the pending intent is gone, and the host runs {} (profile {}): check it",
                s.current, s.profile
            ),
        },
        Err(e) => Outcome::Unknown { at: Step::Health, why: format!("the host came back but cannot be asked: {e}") },
    }
}

enum Back {
    Booted,
    AfterPowerCycle,
    Never(String),
}

fn wait_boot(m: &mut dyn Machine, obs: &mut dyn Observer, old: &str, within: Duration) -> Option<String> {
    obs.step(Step::WaitBoot);
    let deadline = m.now() + within;
    poll(m, within, Duration::from_secs(2), |m| {
        let left = deadline.saturating_sub(m.now()).as_secs();
        obs.waiting("the host to come back from the reboot", left);
        m.fresh_boot_id().filter(|id| !id.is_empty() && id != old)
    })
}

fn wait_back(m: &mut dyn Machine, obs: &mut dyn Observer, old_boot: &str, within: Duration, attempts: u32) -> Back {
    if wait_boot(m, obs, old_boot, within).is_some() {
        return Back::Booted;
    }
    let mut how = String::new();
    for attempt in 1..=attempts.max(1) {
        obs.step(Step::PowerCycle);
        match m.power_cycle() {
            Ok(()) => obs.info("power-cycled"),
            Err(crate::machine::MachineError::Cannot(why)) => {
                obs.info(&why);
                return Back::Never(why);
            }
            Err(e) => {
                obs.info(&format!("power-cycle attempt {attempt} failed: {}", e.line()));
                how = format!("the power-cycle command failed ({})", e.line());
                continue;
            }
        }
        if wait_boot(m, obs, old_boot, within).is_some() {
            return Back::AfterPowerCycle;
        }
        how = "the host did not come back after the power-cycle command".to_owned();
    }
    Back::Never(how)
}

fn not_back(p: &RebootPlan, armed: bool, how: &str) -> String {
    let default = if armed {
        "Its boot default is still the previous generation: power-cycling it brings it back, and the host resolves the pending reboot itself (or run `fleetgate deploy` again)"
    } else {
        "Its boot default is the NEW generation (unverified reboot): boot the previous generation from the boot menu"
    };
    format!(
        "the host did not come back within {} s after rebooting into the new generation, and {how}. {default}.",
        p.reboot_within.as_secs()
    )
}

/// Finishes a verified reboot whose host is back (see the table above).
/// `cycled`: the host was power-cycled to come back.
pub fn resume(
    m: &mut dyn Machine,
    obs: &mut dyn Observer,
    intent: &PendingIntent,
    health_within: Duration,
    cycled: bool,
    reboot_within: Duration,
) -> Outcome {
    obs.step(Step::Health);
    let state = match m.state() {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Unknown {
                at: Step::Health,
                why: format!("the host came back but cannot be asked what it booted: {e}"),
            };
        }
    };
    if state.boot_id == intent.boot_id_before {
        // The run died before the reboot: nothing booted the new system; undo
        // the one-time boot so that a later reboot cannot boot it unverified.
        obs.step(Step::Rollback);
        return match restore(m, &intent.fallback, intent.fallback_generation) {
            Restored::RolledBack => {
                let _ = m.clear_intent();
                Outcome::Refused {
                    at: Step::Reboot,
                    why: format!("run {} died before the host rebooted; its one-time boot was undone", intent.run_id),
                }
            }
            Restored::Unknown { why } => Outcome::Unknown {
                at: Step::Rollback,
                why: format!(
                    "run {} died before the host rebooted, and undoing its one-time boot failed: {why}",
                    intent.run_id
                ),
            },
        };
    }
    let hung = if cycled {
        "the host did not come back from booting the new generation (hung in stage 1?); it was power-cycled"
    } else {
        ""
    };
    if state.booted == intent.fallback && state.booted != intent.new {
        let why = if cycled {
            format!("{hung} and came back on the previous generation")
        } else {
            "the host booted the previous generation instead of the new one (the one-time boot was not honoured)"
                .to_owned()
        };
        obs.step(Step::Rollback);
        return match restore(m, &intent.fallback, intent.fallback_generation) {
            Restored::RolledBack => {
                let _ = m.clear_intent();
                Outcome::RolledBack {
                    at: Step::WaitBoot,
                    why: format!("{why}; the previous generation is the default again"),
                }
            }
            Restored::Unknown { why: w } => Outcome::Unknown {
                at: Step::Rollback,
                why: format!("{why}; restoring its profile and boot default failed: {w}"),
            },
        };
    }
    if state.booted != intent.new {
        return Outcome::Unknown {
            at: Step::Health,
            why: format!("the host booted {}, neither the new nor the previous system", state.booted),
        };
    }
    if let Err(failed) = wait_healthy(m, obs, &intent.verified.baseline, health_within) {
        return back_to_fallback(
            m,
            obs,
            intent,
            format!("the new generation booted but is unhealthy: {failed}"),
            reboot_within,
        );
    }
    obs.step(Step::Bless);
    if let Err(e) = m.install_boot(&intent.new).and_then(|()| m.bless_entry(&intent.new)) {
        return back_to_fallback(
            m,
            obs,
            intent,
            format!("making the new generation the default failed: {e}"),
            reboot_within,
        );
    }
    if let Err(e) = m.clear_intent() {
        obs.info(&format!("could not remove the pending intent: {}", e.line()));
    }
    match m.state() {
        Ok(s) if s.booted == intent.new && s.current == intent.new && s.profile == intent.new => Outcome::Blessed,
        Ok(s) => Outcome::Unknown {
            at: Step::Bless,
            why: format!("after blessing, the host runs {} with the profile on {}: check it", s.current, s.profile),
        },
        Err(e) => Outcome::Unknown { at: Step::Bless, why: format!("lost the host right after blessing: {e}") },
    }
}

fn back_to_fallback(
    m: &mut dyn Machine,
    obs: &mut dyn Observer,
    intent: &PendingIntent,
    reason: String,
    reboot_within: Duration,
) -> Outcome {
    obs.step(Step::Rollback);
    if let Restored::Unknown { why } = restore(m, &intent.fallback, intent.fallback_generation) {
        return Outcome::Unknown {
            at: Step::Rollback,
            why: format!("{reason}; restoring the previous generation as the default failed: {why}"),
        };
    }
    let boot_id = match m.state() {
        Ok(s) => s.boot_id,
        Err(e) => {
            return Outcome::Unknown {
                at: Step::Rollback,
                why: format!(
                    "{reason}; the previous generation is the default again, but the host stopped answering: {e}"
                ),
            };
        }
    };
    m.reboot();
    if let Back::Never(how) = wait_back(m, obs, &boot_id, reboot_within, 1) {
        return Outcome::Unknown {
            at: Step::Rollback,
            why: format!(
                "{reason}; the previous generation is the default again, but the host did not come back from the reboot into it ({how})"
            ),
        };
    }
    match m.state() {
        Ok(s) if s.booted == intent.fallback && s.profile == intent.fallback => {
            let _ = m.clear_intent();
            Outcome::RolledBack {
                at: Step::Health,
                why: format!("{reason}; rebooted into the previous generation, which is the default again"),
            }
        }
        Ok(s) => Outcome::Unknown {
            at: Step::Rollback,
            why: format!("{reason}; after rebooting into the previous generation the host runs {}", s.booted),
        },
        Err(e) => Outcome::Unknown {
            at: Step::Rollback,
            why: format!("{reason}; the host cannot be asked what it booted: {e}"),
        },
    }
}

/// The one restore path: the profile and the default entry back on
/// `fallback`, the one-time boot disarmed, the profile read back.
pub fn restore(m: &mut dyn Machine, fallback: &str, generation: Option<u64>) -> Restored {
    let steps = m
        .restore_profile(generation, fallback)
        .and_then(|()| m.install_boot(fallback))
        .and_then(|()| m.disarm_once(fallback));
    if let Err(e) = steps {
        return Restored::Unknown { why: e.to_string() };
    }
    match m.state() {
        Ok(s) if s.profile == fallback => Restored::RolledBack,
        Ok(s) => Restored::Unknown { why: format!("the profile points at {} after the restore", s.profile) },
        Err(e) => Restored::Unknown { why: format!("the restore could not be verified: {e}") },
    }
}

/// The fallback of a verified reboot: the system that demonstrably booted on
/// this hardware (`/run/booted-system`), else the running one; `None` when
/// neither differs from `new` (nothing to fall back to).
#[must_use]
pub fn fallback_for(state: &crate::machine::HostState, new: &str) -> Option<String> {
    [&state.booted, &state.current].into_iter().find(|s| !s.is_empty() && s.as_str() != new).cloned()
}
