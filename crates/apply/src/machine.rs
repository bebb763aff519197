//! [`Machine`]: the operations the protocol needs on one host, and nothing
//! else. The engine depends on this trait only; [`crate::remote::ScriptMachine`]
//! implements it over a [`fleetgate_transport::Transport`] (SSH for `deploy`,
//! the local machine for the agent) and [`crate::fake::FakeMachine`] in memory
//! for the unit tests of every failure exit.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::intent::PendingIntent;

/// What a step on the host can end with, besides success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    /// The host could not be reached, or the call timed out: the step may or
    /// may not have run.
    #[error("lost contact with the host: {0}")]
    Lost(String),
    /// The step ran and failed.
    #[error("{0}")]
    Failed(String),
    /// The host cannot do this at all (a boot loader that cannot boot an
    /// entry once, no power-cycle command): nothing was changed.
    #[error("{0}")]
    Cannot(String),
}

impl MachineError {
    /// The message, one line.
    #[must_use]
    pub fn line(&self) -> String {
        self.to_string().lines().next().unwrap_or_default().to_owned()
    }
}

/// One look at where the host stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// `/run/current-system`.
    pub current: String,
    /// `/run/booted-system`.
    pub booted: String,
    /// What the system profile points at.
    pub profile: String,
    /// The profile's generation number (`system-N-link`).
    pub profile_generation: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
}

/// The watchdog of a live switch, as one look at its state file shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchdogState {
    /// The launcher wrote its directory; the watchdog has not begun.
    Armed,
    /// The watchdog refused to begin (its tools are missing): nothing was
    /// activated.
    Refused(String),
    /// Activating the new system.
    Activating,
    /// Activation ended with this exit status; waiting for the confirmation.
    Waiting(i32),
    /// Confirmed: the watchdog has exited and leaves the new system.
    Confirmed,
    /// Rolling back.
    RollingBack,
    /// Rolled back; the previous system's activation exited with this status.
    RolledBack(i32),
    /// fleetgate cancelled the watchdog before it began: it never will.
    Cancelled,
    /// No state at all (the host rebooted: `/run` is empty).
    Missing,
}

impl WatchdogState {
    /// Whether the watchdog has finished for good.
    #[must_use]
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            WatchdogState::Confirmed
                | WatchdogState::RolledBack(_)
                | WatchdogState::Cancelled
                | WatchdogState::Refused(_)
                | WatchdogState::Missing
        )
    }
}

/// One look at the watchdog, with the boot id it was taken under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogSeen {
    /// The watchdog's state.
    pub state: WatchdogState,
    /// The host's boot id at that moment.
    pub boot_id: String,
    /// Where the host stood, read in the same round trip once the watchdog
    /// had ended ([`Machine::watchdog_when`] with [`Awaited::End`] reads it;
    /// `None`: ask [`Machine::state`]).
    pub host: Option<HostState>,
}

/// What [`Machine::watchdog_when`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// Activation to end: the watchdog left `armed` and `activating`.
    ActivationEnd,
    /// The watchdog to end for good ([`WatchdogState::is_final`]).
    End,
}

/// What the live switch's watchdog is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogSpec {
    /// The run (names its directory and unit).
    pub run_id: String,
    /// The system to activate.
    pub new: String,
    /// The system to go back to.
    pub old: String,
    /// The profile generation to go back to, if known.
    pub old_generation: Option<u64>,
    /// Seconds to wait for the confirmation after activation.
    pub window: Duration,
    /// Seconds activation may take.
    pub activation: Duration,
}

/// How [`Machine::cancel_watchdog`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The watchdog had not begun and now never will.
    Cancelled,
    /// It had begun already: it must be asked to roll back.
    AlreadyRunning,
}

/// How [`Machine::arm_once`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Armed {
    /// The new system boots once, the fallback stays the default.
    Once {
        /// What was done, for the progress line.
        detail: String,
    },
    /// The boot loader cannot boot an entry once here; nothing was changed.
    Cannot(String),
}

/// Who holds the deploy lock, when it is not us.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it.
    #[error("another deploy holds the lock on this host ({owner})")]
    Held {
        /// The owner's description.
        owner: String,
    },
    /// The host could not be asked.
    #[error(transparent)]
    Machine(#[from] MachineError),
}

/// The operations the apply protocol needs on one host.
///
/// Every call is bounded in time by the implementation. Time itself is part
/// of the machine ([`Machine::now`], [`Machine::pause`]) so that the fake runs
/// a protocol of minutes in microseconds.
pub trait Machine {
    /// The host, for messages.
    fn describe(&self) -> String;
    /// Time since an arbitrary origin.
    fn now(&self) -> Duration;
    /// Waits (between polls).
    fn pause(&mut self, d: Duration);

    /// Where the host stands now (over the shared connection).
    ///
    /// # Errors
    /// [`MachineError`].
    fn state(&mut self) -> Result<HostState, MachineError>;
    /// `systemctl is-system-running` (`unknown` when it cannot say).
    fn system_state(&mut self) -> String;

    /// Points the system profile at `system`; returns the new generation.
    ///
    /// # Errors
    /// [`MachineError`].
    fn set_profile(&mut self, system: &str) -> Result<u64, MachineError>;
    /// Points the system profile back at `generation` (or at `system` when
    /// the generation is unknown).
    ///
    /// # Errors
    /// [`MachineError`].
    fn restore_profile(&mut self, generation: Option<u64>, system: &str) -> Result<(), MachineError>;
    /// `<system>/bin/switch-to-configuration boot`: the boot loader menu
    /// from the profile's generations, `system` the default.
    ///
    /// # Errors
    /// [`MachineError`].
    fn install_boot(&mut self, system: &str) -> Result<(), MachineError>;

    /// Makes the entry that boots `new` boot once, while the entry that boots
    /// `fallback` is (and stays) the default.
    ///
    /// # Errors
    /// [`MachineError`] when a command failed.
    fn arm_once(&mut self, new: &str, fallback: &str) -> Result<Armed, MachineError>;
    /// Undoes [`Machine::arm_once`]: no one-shot left, the entry booting
    /// `fallback` the default.
    ///
    /// # Errors
    /// [`MachineError`].
    fn disarm_once(&mut self, fallback: &str) -> Result<(), MachineError>;
    /// After `new` proved itself: marks its entry good (boot counting) and
    /// undoes the pin of the default.
    ///
    /// # Errors
    /// [`MachineError`].
    fn bless_entry(&mut self, new: &str) -> Result<(), MachineError>;

    /// Starts the watchdog detached from the session. Its state is
    /// [`WatchdogState::Armed`] before this returns.
    ///
    /// # Errors
    /// [`MachineError::Failed`]: it was not started; `Lost`: unknown.
    fn start_watchdog(&mut self, spec: &WatchdogSpec) -> Result<(), MachineError>;
    /// One look at the watchdog of `run_id`.
    ///
    /// # Errors
    /// [`MachineError`].
    fn watchdog(&mut self, run_id: &str) -> Result<WatchdogSeen, MachineError>;
    /// One look at the watchdog of `run_id` once it is past what `until`
    /// waits for, or after `within`: the host waits, not the caller — one
    /// round trip where a poll every 250 ms took several (issue 15). The
    /// default looks once, at once; callers poll it as [`Machine::watchdog`].
    ///
    /// # Errors
    /// [`MachineError`].
    fn watchdog_when(&mut self, run_id: &str, until: Awaited, within: Duration) -> Result<WatchdogSeen, MachineError> {
        let _ = (until, within);
        self.watchdog(run_id)
    }
    /// [`Machine::set_profile`] to `spec.new`, then
    /// [`Machine::start_watchdog`] only if that succeeded — one round trip
    /// where the machine can (issue 15).
    ///
    /// # Errors
    /// [`ProfileThenWatchdog`]: which of the two failed.
    fn set_profile_then_start_watchdog(&mut self, spec: &WatchdogSpec) -> Result<(), ProfileThenWatchdog> {
        self.set_profile(&spec.new).map_err(ProfileThenWatchdog::Profile)?;
        self.start_watchdog(spec).map_err(ProfileThenWatchdog::Watchdog)
    }
    /// Prevents a watchdog that has not begun from ever beginning.
    ///
    /// # Errors
    /// [`MachineError`].
    fn cancel_watchdog(&mut self, run_id: &str) -> Result<Cancel, MachineError>;
    /// Asks a running watchdog to roll back now.
    ///
    /// # Errors
    /// [`MachineError`].
    fn request_rollback(&mut self, run_id: &str) -> Result<(), MachineError>;
    /// Confirms, over a NEW login.
    ///
    /// # Errors
    /// [`MachineError`].
    fn confirm(&mut self, run_id: &str) -> Result<(), MachineError>;
    /// `<new>/bin/switch-to-configuration boot` over a NEW login.
    ///
    /// # Errors
    /// [`MachineError`].
    fn make_default_fresh(&mut self, new: &str) -> Result<(), MachineError>;
    /// [`Machine::make_default_fresh`], then [`Machine::confirm`] only if
    /// that succeeded — one new login where the machine can (issue 15: a
    /// host costs one fresh login fewer). `Some(look)`: the same login then
    /// waited for the watchdog to end and looked, as
    /// [`Machine::watchdog_when`] with [`Awaited::End`] does (the default
    /// does not: `None`).
    ///
    /// # Errors
    /// [`DefaultThenConfirm`]: which of the two failed.
    fn make_default_then_confirm(
        &mut self,
        new: &str,
        run_id: &str,
    ) -> Result<Option<WatchdogSeen>, DefaultThenConfirm> {
        self.make_default_fresh(new).map_err(DefaultThenConfirm::Default)?;
        self.confirm(run_id).map_err(DefaultThenConfirm::Confirm)?;
        Ok(None)
    }

    /// The last lines of the watchdog's activation log (best effort).
    fn activation_log(&mut self, run_id: &str) -> String;

    /// One round of health checks over a NEW login; what failed (empty: healthy).
    fn health(&mut self, baseline: &str) -> Vec<String>;

    /// Asks the host to reboot (detached; the connection is dropped).
    fn reboot(&mut self);
    /// The boot id over a NEW login, `None` when the host does not answer.
    fn fresh_boot_id(&mut self) -> Option<String>;
    /// Runs the power-cycle hook.
    ///
    /// # Errors
    /// [`MachineError::Cannot`] when there is none; `Failed` when it failed.
    fn power_cycle(&mut self) -> Result<(), MachineError>;

    /// Writes the pending intent atomically.
    ///
    /// # Errors
    /// [`MachineError`].
    fn write_intent(&mut self, intent: &PendingIntent) -> Result<(), MachineError>;
    /// Reads the pending intent (`None`: there is none).
    ///
    /// # Errors
    /// [`MachineError`], and `Failed` for a file that does not parse.
    fn read_intent(&mut self) -> Result<Option<PendingIntent>, MachineError>;
    /// Removes the pending intent.
    ///
    /// # Errors
    /// [`MachineError`].
    fn clear_intent(&mut self) -> Result<(), MachineError>;

    /// Takes the deploy lock for `owner_run` (again, if that run holds it).
    ///
    /// # Errors
    /// [`LockError`].
    fn lock(&mut self, owner_run: &str) -> Result<(), LockError>;
    /// Releases the lock if `owner_run` holds it.
    ///
    /// # Errors
    /// [`MachineError`].
    fn unlock(&mut self, owner_run: &str) -> Result<(), MachineError>;
}

/// Which step of [`Machine::set_profile_then_start_watchdog`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileThenWatchdog {
    /// Setting the profile (the watchdog was not started).
    #[error("{0}")]
    Profile(MachineError),
    /// Starting the watchdog, after the profile was set.
    #[error("{0}")]
    Watchdog(MachineError),
}

/// Which step of [`Machine::make_default_then_confirm`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefaultThenConfirm {
    /// Making the new system the boot default (nothing was confirmed).
    #[error("{0}")]
    Default(MachineError),
    /// Confirming, after the default was made.
    #[error("{0}")]
    Confirm(MachineError),
}

/// Calls `attempt` until it returns `Some` or `within` passes on the
/// machine's clock, pausing `every` between attempts.
pub fn poll<M: Machine + ?Sized, T>(
    m: &mut M,
    within: Duration,
    every: Duration,
    mut attempt: impl FnMut(&mut M) -> Option<T>,
) -> Option<T> {
    let deadline = m.now() + within;
    loop {
        if let Some(v) = attempt(m) {
            return Some(v);
        }
        let now = m.now();
        if now >= deadline {
            return None;
        }
        m.pause(every.min(deadline - now));
    }
}
