//! Live switch with magic rollback, as an explicit state machine.
//!
//! A watchdog on the host activates the new system (`switch-to-configuration
//! test`, the boot default untouched) and rolls back by itself unless it is
//! confirmed in time. fleetgate confirms only after health checks passed over
//! a new login and the new system was made the boot default over a new login
//! (the same login that then confirms).
//!
//! | state          | step                                   | success →     | failure exits |
//! |----------------|----------------------------------------|---------------|---------------|
//! | `Prepare`      | profile → new, then (only if that worked) the watchdog's dir + state `armed`, started detached — one round trip | `Activating` | profile not set, or watchdog not started → restore profile → `Verify(old)` as Refused (restore fails → Unknown); lost → `Stop` |
//! | `Activating`   | wait (on the host) until the state is not armed/activating | `Health` (exit 0) | exit ≠ 0, deadline, gone → `Stop`; refused → restore → Refused; boot id changed → `AfterReboot`; acted by itself → `AwaitFinal` |
//! | `Health`       | checks (over the shared connection), until deadline | `MakeDefault` | → `Stop` |
//! | `MakeDefault`  | new `switch-to-configuration boot`, then confirm, then wait for the watchdog's end and look — over one new login | `Verify(new)`/`Verify(old)` as `AwaitFinal` would (the login saw the end), else `AwaitFinal` | boot failed → `Stop`; confirm failed → `AwaitFinal` (the watchdog decides by itself) |
//! | `Stop`         | cancel if not begun, else ask rollback | `AwaitFinal`  | cancelled → restore profile → Refused |
//! | `AwaitFinal`   | wait (on the host) until confirmed / rolled back / cancelled, deadline past the watchdog's own; the same look reads where the host stands | `Verify(new)` / `Verify(old)` | deadline → Unknown; boot id changed → `AfterReboot` |
//! | `AfterReboot`  | the host booted its default            | on old: restore profile + old boot → `Verify(old)` | else Unknown |
//! | `Verify(x)`    | current and profile are x, read from the host (by the look that saw the watchdog end, else now) | the outcome | anything else → Unknown |
//!
//! [`abandon`] enters the table at `Stop`: how whoever finds a switch whose
//! driver died (the agent, restarted) ends it.
//!
//! The race of issue 10 (the state file read before the watchdog wrote it,
//! read as "rebooted", the watchdog left running) cannot happen: the launcher
//! writes `armed` before it returns, absence of state is read as a reboot
//! only with a new boot id, a watchdog is never left behind (it is cancelled
//! before it begins — `mkdir started` decides who wins — or asked to roll back
//! and awaited past its own deadline), and every outcome is verified from the
//! host.

use std::time::Duration;

use crate::machine::{
    Awaited, Cancel, DefaultThenConfirm, HostState, Machine, MachineError, ProfileThenWatchdog, WatchdogSeen,
    WatchdogSpec, WatchdogState, poll,
};
use crate::outcome::{Observer, Outcome, Step};

/// A live switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchPlan {
    /// The run.
    pub run_id: String,
    /// The new system.
    pub new: String,
    /// The running system (the rollback target).
    pub old: String,
    /// Its profile generation.
    pub old_generation: Option<u64>,
    /// The boot id before anything happened.
    pub boot_id: String,
    /// `systemctl is-system-running` before.
    pub baseline: String,
    /// How long the host waits for the confirmation after activation.
    pub window: Duration,
    /// How long activation may take.
    pub activation: Duration,
    /// How long health checks may take to pass.
    pub health: Duration,
}

/// What must be true of the host for an outcome to stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    New,
    Old,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Prepare,
    Activating,
    Health,
    MakeDefault,
    Stop { why: String },
    AwaitFinal { why: String },
    AfterReboot { why: String },
    RestoreProfile { at: Step, why: String },
    Verify { expect: Expect, at: Step, why: String, seen: Option<HostState> },
    Done(Outcome),
}

const EVERY: Duration = Duration::from_millis(250);
const CONFIRM_EVERY: Duration = Duration::from_millis(100);
/// Slack on top of the watchdog's own deadlines before fleetgate gives up.
const SLACK: Duration = Duration::from_secs(60);

impl SwitchPlan {
    /// What the host's watchdog is told.
    #[must_use]
    pub fn watchdog_spec(&self) -> WatchdogSpec {
        WatchdogSpec {
            run_id: self.run_id.clone(),
            new: self.new.clone(),
            old: self.old.clone(),
            old_generation: self.old_generation,
            window: self.window,
            activation: self.activation,
        }
    }
}

/// Runs the table from `state` until an outcome.
fn run_from(m: &mut dyn Machine, obs: &mut dyn Observer, p: &SwitchPlan, mut state: State) -> Outcome {
    let spec = p.watchdog_spec();
    loop {
        state = match state {
            State::Done(outcome) => return outcome,
            s => next(m, obs, p, &spec, s),
        };
    }
}

/// Runs a live switch; always ends with an [`Outcome`] verified from the host.
pub fn live_switch(m: &mut dyn Machine, obs: &mut dyn Observer, p: &SwitchPlan) -> Outcome {
    obs.step(Step::Activate);
    run_from(m, obs, p, State::Prepare)
}

/// Ends a live switch whose driver died before it finished (the agent was
/// killed mid-switch, say), from the `Stop` state: a watchdog that has not
/// begun is cancelled (and the profile restored), a running one is asked to
/// roll back and awaited past its own deadline, one that already confirmed
/// stays — and the outcome is read back from the host as always: Switched
/// (it had been confirmed), RolledBack, Refused (nothing was activated) or
/// Unknown.
pub fn abandon(m: &mut dyn Machine, obs: &mut dyn Observer, p: &SwitchPlan) -> Outcome {
    obs.step(Step::Rollback);
    let why = format!("run {} was interrupted before it confirmed the switch", p.run_id);
    run_from(m, obs, p, State::Stop { why })
}

fn next(m: &mut dyn Machine, obs: &mut dyn Observer, p: &SwitchPlan, spec: &WatchdogSpec, s: State) -> State {
    match s {
        State::Prepare => match m.set_profile_then_start_watchdog(spec) {
            Ok(()) => {
                obs.info(&format!("watchdog armed, {} s to confirm", p.window.as_secs()));
                State::Activating
            }
            Err(ProfileThenWatchdog::Profile(e)) => {
                State::RestoreProfile { at: Step::Activate, why: format!("could not set the system profile: {e}") }
            }
            Err(ProfileThenWatchdog::Watchdog(MachineError::Failed(e) | MachineError::Cannot(e))) => {
                State::RestoreProfile { at: Step::Activate, why: format!("could not start the watchdog: {e}") }
            }
            Err(ProfileThenWatchdog::Watchdog(e @ MachineError::Lost(_))) => {
                State::Stop { why: format!("starting the watchdog: {e}") }
            }
        },
        State::Activating => activating(m, p),
        State::Health => {
            obs.step(Step::Health);
            let within = p.health.min(p.window.saturating_sub(Duration::from_secs(10)).max(Duration::from_secs(5)));
            match wait_healthy(m, obs, &p.baseline, within) {
                Ok(()) => State::MakeDefault,
                Err(failed) => State::Stop { why: format!("health checks failed after the switch: {failed}") },
            }
        }
        State::MakeDefault => {
            obs.step(Step::Confirm);
            let why = "the confirmation came too late".to_owned();
            match m.make_default_then_confirm(&p.new, &p.run_id) {
                // The confirming login saw the watchdog end: no look of our own.
                Ok(Some(seen)) if seen.state.is_final() || seen.boot_id != p.boot_id => ended(p, seen, why),
                Ok(_) => State::AwaitFinal { why },
                Err(DefaultThenConfirm::Default(e)) => {
                    State::Stop { why: format!("making the new system the boot default failed: {e}") }
                }
                Err(DefaultThenConfirm::Confirm(e)) => {
                    State::AwaitFinal { why: format!("could not confirm over a new login ({})", e.line()) }
                }
            }
        }
        State::Stop { why } => match m.cancel_watchdog(&p.run_id) {
            Ok(Cancel::Cancelled) => State::RestoreProfile { at: Step::Activate, why },
            Ok(Cancel::AlreadyRunning) => {
                if let Err(e) = m.request_rollback(&p.run_id) {
                    obs.info(&format!("could not ask the watchdog to roll back ({}); it will by itself", e.line()));
                }
                State::AwaitFinal { why }
            }
            Err(e) => {
                obs.info(&format!("could not reach the watchdog ({}); waiting for it to end by itself", e.line()));
                State::AwaitFinal { why }
            }
        },
        State::AwaitFinal { why } => await_final(m, p, why),
        State::AfterReboot { why } => after_reboot(m, p, why),
        State::RestoreProfile { at, why } => match m.restore_profile(p.old_generation, &p.old) {
            Ok(()) => {
                State::Verify { expect: Expect::Old, at, why: format!("{why}; nothing was activated"), seen: None }
            }
            Err(e) => State::Done(Outcome::Unknown {
                at,
                why: format!("{why}; then restoring the system profile failed: {e}. Check the host's profile"),
            }),
        },
        State::Verify { expect, at, why, seen } => State::Done(verify(m, p, expect, at, why, seen)),
        State::Done(o) => State::Done(o),
    }
}

fn exit_text(code: i32, activation: Duration) -> String {
    match code {
        1 => "exit 1: pre-switch checks failed".to_owned(),
        2 => "exit 2: activation failed".to_owned(),
        4 => "exit 4: units failed".to_owned(),
        100 => "exit 100: the init interface changed; it needs a reboot (deploy with --reboot)".to_owned(),
        124 => format!("timed out after {} s", activation.as_secs()),
        other => format!("exit {other}"),
    }
}

fn activating(m: &mut dyn Machine, p: &SwitchPlan) -> State {
    let within = p.activation + Duration::from_secs(30);
    let deadline = m.now() + within;
    let seen = poll(m, within, EVERY, |m| {
        let left = deadline.saturating_sub(m.now());
        m.watchdog_when(&p.run_id, Awaited::ActivationEnd, left)
            .ok()
            .filter(|s| s.boot_id != p.boot_id || !matches!(s.state, WatchdogState::Armed | WatchdogState::Activating))
    });
    let Some(WatchdogSeen { state, boot_id, .. }) = seen else {
        return State::Stop { why: format!("activation did not end within {} s", within.as_secs()) };
    };
    if boot_id != p.boot_id {
        return State::AfterReboot { why: "the host rebooted during activation".to_owned() };
    }
    match state {
        WatchdogState::Waiting(0) => State::Health,
        WatchdogState::Waiting(code) => {
            let log = m.activation_log(&p.run_id);
            State::Stop {
                why: format!("switch-to-configuration test failed ({}):\n{log}", exit_text(code, p.activation)),
            }
        }
        WatchdogState::Refused(why) => {
            State::RestoreProfile { at: Step::Activate, why: format!("the watchdog refused to start: {why}") }
        }
        WatchdogState::Missing => State::Stop { why: "the watchdog's state vanished during activation".to_owned() },
        _ => State::AwaitFinal { why: "the watchdog acted before fleetgate confirmed".to_owned() },
    }
}

fn await_final(m: &mut dyn Machine, p: &SwitchPlan, why: String) -> State {
    // Past the watchdog's own deadline: it has ended by then, whatever it did.
    let within = p.window + p.activation + SLACK;
    // The confirmation wakes the watchdog at once (its FIFO; a 1 s tick
    // without mkfifo): the first look is right away, then often.
    let deadline = m.now() + within;
    let seen = poll(m, within, CONFIRM_EVERY, |m| {
        let left = deadline.saturating_sub(m.now());
        m.watchdog_when(&p.run_id, Awaited::End, left).ok().filter(|s| s.state.is_final() || s.boot_id != p.boot_id)
    });
    let Some(seen) = seen else {
        return State::Done(Outcome::Unknown {
            at: Step::Confirm,
            why: format!(
                "{why}; the watchdog did not end within {} s (or the host stopped answering). It rolls back by itself unless confirmed: check the host",
                within.as_secs()
            ),
        });
    };
    ended(p, seen, why)
}

/// Where a look that saw the watchdog end (or the host reboot) leads.
fn ended(p: &SwitchPlan, seen: WatchdogSeen, why: String) -> State {
    if seen.boot_id != p.boot_id || seen.state == WatchdogState::Missing {
        return State::AfterReboot { why };
    }
    match seen.state {
        WatchdogState::Confirmed => State::Verify { expect: Expect::New, at: Step::Confirm, why, seen: seen.host },
        WatchdogState::RolledBack(rc) => State::Verify {
            expect: Expect::Old,
            at: Step::Rollback,
            seen: seen.host,
            why: if rc == 0 {
                format!("{why}; the host rolled back to the previous generation")
            } else {
                format!("{why}; the host rolled back to the previous generation (its activation exited {rc})")
            },
        },
        WatchdogState::Refused(w) => {
            State::RestoreProfile { at: Step::Activate, why: format!("{why}; the watchdog refused to start: {w}") }
        }
        _ => State::RestoreProfile { at: Step::Activate, why },
    }
}

fn after_reboot(m: &mut dyn Machine, p: &SwitchPlan, why: String) -> State {
    match m.state() {
        Ok(s) if s.current == p.old => {
            let restored = m.restore_profile(p.old_generation, &p.old).and_then(|()| m.install_boot(&p.old));
            match restored {
                Ok(()) => State::Verify {
                    expect: Expect::Old,
                    at: Step::Rollback,
                    why: format!("{why}; it came back on the previous generation and its profile was restored"),
                    seen: None,
                },
                Err(e) => State::Done(Outcome::Unknown {
                    at: Step::Rollback,
                    why: format!(
                        "{why}; it came back on the previous generation but restoring its profile failed: {e}"
                    ),
                }),
            }
        }
        Ok(s) => State::Done(Outcome::Unknown {
            at: Step::Activate,
            why: format!("{why}; it came back running {}, unconfirmed: check it", s.current),
        }),
        Err(e) => State::Done(Outcome::Unknown {
            at: Step::Activate,
            why: format!("{why}; it did not answer after that: {e}"),
        }),
    }
}

fn verify(
    m: &mut dyn Machine,
    p: &SwitchPlan,
    expect: Expect,
    at: Step,
    why: String,
    seen: Option<HostState>,
) -> Outcome {
    let want = match expect {
        Expect::New => &p.new,
        Expect::Old => &p.old,
    };
    match seen.map_or_else(|| m.state(), Ok) {
        Ok(s) if &s.current == want && &s.profile == want => match expect {
            Expect::New => Outcome::Switched,
            Expect::Old if at == Step::Activate => Outcome::Refused { at, why },
            Expect::Old => Outcome::RolledBack { at, why },
        },
        Ok(s) => Outcome::Unknown {
            at,
            why: format!("{why}; but the host runs {} with the profile on {}: check it", s.current, s.profile),
        },
        Err(e) => Outcome::Unknown { at, why: format!("{why}; then the host could not be asked where it is: {e}") },
    }
}

/// Health checks that did not pass in time: the failures of the last round.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", failed.join("; "))]
pub struct Unhealthy {
    /// What failed.
    pub failed: Vec<String>,
}

/// Runs health checks until they pass or `within` ends.
///
/// # Errors
/// [`Unhealthy`] with the failures of the last round.
pub fn wait_healthy(
    m: &mut dyn Machine,
    obs: &mut dyn Observer,
    baseline: &str,
    within: Duration,
) -> Result<(), Unhealthy> {
    let deadline = m.now() + within;
    let mut last = Vec::new();
    let ok = poll(m, within, Duration::from_secs(1), |m| {
        last = m.health(baseline);
        if !last.is_empty() {
            let left = deadline.saturating_sub(m.now()).as_secs();
            obs.waiting(&format!("health checks ({})", last.first().map_or("", String::as_str)), left);
        }
        last.is_empty().then_some(())
    });
    ok.ok_or(Unhealthy { failed: last })
}
