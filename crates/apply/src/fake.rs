//! A scripted, in-memory [`Machine`] for the unit tests of every failure
//! exit: a host with a profile, a boot loader (default entry and one-shot),
//! a watchdog that runs on the host's own (virtual) clock, reboots that boot
//! what the boot loader says, hangs, and a power-cycle hook — plus a script
//! of failures injected at any operation.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::intent::PendingIntent;
use crate::machine::{
    Armed, Awaited, Cancel, HostState, LockError, Machine, MachineError, WatchdogSeen, WatchdogSpec, WatchdogState,
};

/// An operation of the [`Machine`] trait, to inject failures at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)]
pub enum Op {
    State,
    SetProfile,
    RestoreProfile,
    InstallBoot,
    Arm,
    Disarm,
    Bless,
    StartWatchdog,
    Watchdog,
    Cancel,
    RequestRollback,
    Confirm,
    MakeDefault,
    FreshBootId,
    PowerCycle,
    WriteIntent,
    ReadIntent,
    ClearIntent,
    Lock,
}

#[derive(Debug, Clone)]
struct Watchdog {
    spec: WatchdogSpec,
    start_at: Duration,
    state: WatchdogState,
    begun: bool,
    active_until: Duration,
    waiting_since: Duration,
    confirm: bool,
    rollback: bool,
}

/// The fake host.
#[derive(Debug, Clone)]
pub struct FakeMachine {
    /// Virtual time.
    pub now: Duration,
    /// `/run/current-system`.
    pub current: String,
    /// `/run/booted-system`.
    pub booted: String,
    /// Profile generations (number → system).
    pub generations: BTreeMap<u64, String>,
    /// The profile's generation.
    pub profile_generation: u64,
    /// The system the default boot entry boots.
    pub default_entry: String,
    /// The system booted once at the next boot.
    pub oneshot: Option<String>,
    /// The boot id.
    pub boot_id: u64,
    /// Whether the host is up (hung or off: no answer).
    pub up: bool,
    /// Systems that hang in stage 1.
    pub hangs: BTreeSet<String>,
    /// Systems whose health checks fail.
    pub unhealthy: BTreeSet<String>,
    /// Exit status of `switch-to-configuration test` per system (default 0).
    pub activation_exit: BTreeMap<String, i32>,
    /// The boot loader cannot boot once (this reason).
    pub cannot_arm: Option<String>,
    /// A look that awaits the watchdog's end reads the host's state with it,
    /// as [`crate::remote::ScriptMachine`] does (off: the engine asks
    /// [`Machine::state`], where failures can be injected).
    pub look_reads_state: bool,
    /// The firmware ignores the one-shot.
    pub ignores_oneshot: bool,
    /// Whether a power-cycle hook exists.
    pub has_power_cycle: bool,
    /// How long the watchdog takes to begin after it was launched.
    pub watchdog_delay: Duration,
    /// How long activation takes.
    pub activation_time: Duration,
    /// How long the host takes to boot.
    pub boot_time: Duration,
    /// When a reboot in flight completes.
    pub boots_at: Option<Duration>,
    /// The host loses power at this time (and boots its default).
    pub power_loss_at: Option<Duration>,
    /// The next boot boots this, whatever the boot loader says.
    pub boot_override: Option<String>,
    /// The reboot command does nothing.
    pub ignores_reboot: bool,
    /// Another deployer takes the lock as soon as the host boots.
    pub lock_taken_on_boot: Option<String>,
    /// The host's own boot unit (`fleetgate resume-pending`) finishes a
    /// pending reboot this long after a boot, holding the lock meanwhile.
    pub host_resume_after: Option<Duration>,
    host_resume_at: Option<Duration>,
    /// The pending intent file.
    pub intent: Option<PendingIntent>,
    /// The deploy lock's owner.
    pub lock_owner: Option<String>,
    /// Injected failures: each call pops one (`None`: behave normally).
    pub script: BTreeMap<Op, VecDeque<Option<MachineError>>>,
    /// Injected failures for every call of an operation from now on.
    pub always: BTreeMap<Op, MachineError>,
    /// Every operation called, in order.
    pub log: Vec<Op>,
    watchdogs: BTreeMap<String, Watchdog>,
}

/// A store path for a name: `/nix/store/…-<name>`.
#[must_use]
pub fn sys(name: &str) -> String {
    format!("/nix/store/00000000000000000000000000000000-nixos-system-{name}")
}

impl FakeMachine {
    /// A host running, booted from, and defaulting to `system` (generation 1).
    #[must_use]
    pub fn running(system: &str) -> FakeMachine {
        FakeMachine {
            now: Duration::ZERO,
            current: system.to_owned(),
            booted: system.to_owned(),
            generations: BTreeMap::from([(1, system.to_owned())]),
            profile_generation: 1,
            default_entry: system.to_owned(),
            oneshot: None,
            boot_id: 1,
            up: true,
            hangs: BTreeSet::new(),
            unhealthy: BTreeSet::new(),
            activation_exit: BTreeMap::new(),
            cannot_arm: None,
            look_reads_state: false,
            ignores_oneshot: false,
            has_power_cycle: true,
            watchdog_delay: Duration::ZERO,
            activation_time: Duration::from_secs(2),
            boot_time: Duration::from_secs(5),
            boots_at: None,
            power_loss_at: None,
            boot_override: None,
            ignores_reboot: false,
            lock_taken_on_boot: None,
            host_resume_after: None,
            host_resume_at: None,
            intent: None,
            lock_owner: None,
            script: BTreeMap::new(),
            always: BTreeMap::new(),
            log: Vec::new(),
            watchdogs: BTreeMap::new(),
        }
    }

    /// Fails the `nth` (1-based) next call of `op` with `e`.
    pub fn fail_nth(&mut self, op: Op, nth: usize, e: MachineError) {
        let q = self.script.entry(op).or_default();
        while q.len() < nth {
            q.push_back(None);
        }
        q[nth - 1] = Some(e);
    }

    /// Fails the next call of `op` with `e`.
    pub fn fail(&mut self, op: Op, e: MachineError) {
        self.fail_nth(op, 1, e);
    }

    /// What the profile points at.
    #[must_use]
    pub fn profile(&self) -> String {
        self.generations.get(&self.profile_generation).cloned().unwrap_or_default()
    }

    /// Lets virtual time pass (the watchdog and reboots go on meanwhile).
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let step = Duration::from_millis(100).min(end - self.now);
            self.now += step;
            self.tick();
        }
    }

    fn enter(&mut self, op: Op) -> Result<(), MachineError> {
        self.log.push(op);
        self.tick();
        if let Some(e) = self.always.get(&op) {
            return Err(e.clone());
        }
        if let Some(Some(e)) = self.script.get_mut(&op).and_then(VecDeque::pop_front) {
            return Err(e);
        }
        if !self.up && op != Op::PowerCycle {
            return Err(MachineError::Lost("no route to host".to_owned()));
        }
        Ok(())
    }

    fn tick(&mut self) {
        if self.host_resume_at.is_some_and(|t| self.now >= t) {
            // What the host's resume does when it booted the new system healthy.
            self.host_resume_at = None;
            if let Some(intent) = self.intent.take() {
                if self.booted == intent.new {
                    self.default_entry.clone_from(&intent.new);
                    self.oneshot = None;
                }
            }
            self.lock_owner = None;
        }
        if self.power_loss_at.is_some_and(|t| self.now >= t) {
            self.power_loss_at = None;
            self.up = false;
            self.watchdogs.clear();
            self.boots_at = Some(self.now + self.boot_time);
        }
        if let Some(at) = self.boots_at {
            if self.now >= at {
                self.boots_at = None;
                self.boot();
            }
        }
        let now = self.now;
        let mut switched_to: Option<String> = None;
        let mut rolled: Option<(Option<u64>, String)> = None;
        for w in self.watchdogs.values_mut() {
            if !w.begun && w.state == WatchdogState::Armed && now >= w.start_at {
                w.begun = true;
                w.state = WatchdogState::Activating;
                w.active_until = now + self.activation_time;
            }
            if w.state == WatchdogState::Activating && now >= w.active_until {
                switched_to = Some(w.spec.new.clone());
                let code = self.activation_exit.get(&w.spec.new).copied().unwrap_or(0);
                w.state = WatchdogState::Waiting(code);
                w.waiting_since = now;
            }
            if let WatchdogState::Waiting(_) = w.state {
                if w.confirm {
                    w.state = WatchdogState::Confirmed;
                } else if w.rollback || now >= w.waiting_since + w.spec.window {
                    w.state = WatchdogState::RolledBack(0);
                    rolled = Some((w.spec.old_generation, w.spec.old.clone()));
                }
            }
        }
        if let Some(new) = switched_to {
            self.current = new;
        }
        if let Some((generation, old)) = rolled {
            match generation {
                Some(g) if self.generations.contains_key(&g) => self.profile_generation = g,
                _ => {
                    self.push_generation(&old);
                }
            }
            self.current = old.clone();
            self.default_entry = old;
        }
    }

    fn push_generation(&mut self, system: &str) -> u64 {
        let n = self.generations.keys().max().copied().unwrap_or(0) + 1;
        self.generations.insert(n, system.to_owned());
        self.profile_generation = n;
        n
    }

    fn boot(&mut self) {
        let target = match self.oneshot.take() {
            Some(once) if !self.ignores_oneshot => once,
            _ => self.default_entry.clone(),
        };
        let target = self.boot_override.take().unwrap_or(target);
        self.boot_id += 1;
        self.watchdogs.clear();
        self.lock_owner.clone_from(&self.lock_taken_on_boot);
        if let (Some(after), Some(intent)) = (self.host_resume_after, &self.intent) {
            self.lock_owner = Some(crate::reboot::resume_owner(&intent.run_id));
            self.host_resume_at = Some(self.now + after);
        }
        if self.hangs.contains(&target) {
            self.up = false;
            return;
        }
        self.up = true;
        self.booted.clone_from(&target);
        self.current = target;
    }

    /// The standing a test asserts: current, booted, profile, default entry.
    #[must_use]
    pub fn on(&self) -> (String, String, String, String) {
        (self.current.clone(), self.booted.clone(), self.profile(), self.default_entry.clone())
    }
}

impl Machine for FakeMachine {
    fn describe(&self) -> String {
        "fake".to_owned()
    }
    fn now(&self) -> Duration {
        self.now
    }
    fn pause(&mut self, d: Duration) {
        self.advance(d);
    }
    fn state(&mut self) -> Result<HostState, MachineError> {
        self.enter(Op::State)?;
        Ok(HostState {
            current: self.current.clone(),
            booted: self.booted.clone(),
            profile: self.profile(),
            profile_generation: Some(self.profile_generation),
            boot_id: self.boot_id.to_string(),
        })
    }
    fn system_state(&mut self) -> String {
        "running".to_owned()
    }
    fn set_profile(&mut self, system: &str) -> Result<u64, MachineError> {
        self.enter(Op::SetProfile)?;
        Ok(self.push_generation(system))
    }
    fn restore_profile(&mut self, generation: Option<u64>, system: &str) -> Result<(), MachineError> {
        self.enter(Op::RestoreProfile)?;
        match generation {
            Some(g) if self.generations.get(&g).is_some_and(|s| s == system) => self.profile_generation = g,
            _ => {
                self.push_generation(system);
            }
        }
        Ok(())
    }
    fn install_boot(&mut self, system: &str) -> Result<(), MachineError> {
        self.enter(Op::InstallBoot)?;
        system.clone_into(&mut self.default_entry);
        Ok(())
    }
    fn arm_once(&mut self, new: &str, fallback: &str) -> Result<Armed, MachineError> {
        self.enter(Op::Arm)?;
        if let Some(why) = &self.cannot_arm {
            return Ok(Armed::Cannot(why.clone()));
        }
        if self.default_entry != fallback {
            return Ok(Armed::Cannot(format!("the default entry boots {}, not the fallback", self.default_entry)));
        }
        self.oneshot = Some(new.to_owned());
        Ok(Armed::Once { detail: "the new generation boots once".to_owned() })
    }
    fn disarm_once(&mut self, _fallback: &str) -> Result<(), MachineError> {
        self.enter(Op::Disarm)?;
        self.oneshot = None;
        Ok(())
    }
    fn bless_entry(&mut self, _new: &str) -> Result<(), MachineError> {
        self.enter(Op::Bless)
    }
    fn start_watchdog(&mut self, spec: &WatchdogSpec) -> Result<(), MachineError> {
        self.enter(Op::StartWatchdog)?;
        self.watchdogs.insert(
            spec.run_id.clone(),
            Watchdog {
                spec: spec.clone(),
                start_at: self.now + self.watchdog_delay,
                state: WatchdogState::Armed,
                begun: false,
                active_until: Duration::MAX,
                waiting_since: Duration::MAX,
                confirm: false,
                rollback: false,
            },
        );
        self.tick();
        Ok(())
    }
    fn watchdog(&mut self, run_id: &str) -> Result<WatchdogSeen, MachineError> {
        self.enter(Op::Watchdog)?;
        let state = self.watchdogs.get(run_id).map_or(WatchdogState::Missing, |w| w.state.clone());
        Ok(WatchdogSeen { state, boot_id: self.boot_id.to_string(), host: None })
    }
    fn watchdog_when(&mut self, run_id: &str, until: Awaited, _within: Duration) -> Result<WatchdogSeen, MachineError> {
        let mut seen = self.watchdog(run_id)?;
        if self.look_reads_state && until == Awaited::End && seen.state.is_final() {
            seen.host = Some(self.state()?);
        }
        Ok(seen)
    }
    fn cancel_watchdog(&mut self, run_id: &str) -> Result<Cancel, MachineError> {
        self.enter(Op::Cancel)?;
        match self.watchdogs.get_mut(run_id) {
            Some(w) if !w.begun => {
                w.state = WatchdogState::Cancelled;
                w.begun = true;
                Ok(Cancel::Cancelled)
            }
            Some(_) => Ok(Cancel::AlreadyRunning),
            None => Ok(Cancel::Cancelled),
        }
    }
    fn request_rollback(&mut self, run_id: &str) -> Result<(), MachineError> {
        self.enter(Op::RequestRollback)?;
        if let Some(w) = self.watchdogs.get_mut(run_id) {
            w.rollback = true;
        }
        self.tick();
        Ok(())
    }
    fn confirm(&mut self, run_id: &str) -> Result<(), MachineError> {
        self.enter(Op::Confirm)?;
        if let Some(w) = self.watchdogs.get_mut(run_id) {
            w.confirm = true;
        }
        self.tick();
        Ok(())
    }
    fn make_default_fresh(&mut self, new: &str) -> Result<(), MachineError> {
        self.enter(Op::MakeDefault)?;
        new.clone_into(&mut self.default_entry);
        Ok(())
    }
    fn activation_log(&mut self, _run_id: &str) -> String {
        "activation: injected failure".to_owned()
    }
    fn health(&mut self, _baseline: &str) -> Vec<String> {
        self.log.push(Op::State);
        if !self.up {
            return vec!["cannot run the checks over a new login: no route to host".to_owned()];
        }
        if self.unhealthy.contains(&self.current) { vec!["unit app.service is failed".to_owned()] } else { Vec::new() }
    }
    fn reboot(&mut self) {
        self.log.push(Op::State);
        if self.ignores_reboot {
            return;
        }
        self.up = false;
        self.boots_at = Some(self.now + self.boot_time);
    }
    fn fresh_boot_id(&mut self) -> Option<String> {
        self.enter(Op::FreshBootId).ok()?;
        Some(self.boot_id.to_string())
    }
    fn power_cycle(&mut self) -> Result<(), MachineError> {
        self.enter(Op::PowerCycle)?;
        if !self.has_power_cycle {
            return Err(MachineError::Cannot("no power-cycle command is configured".to_owned()));
        }
        self.up = false;
        self.boots_at = Some(self.now + self.boot_time);
        Ok(())
    }
    fn write_intent(&mut self, intent: &PendingIntent) -> Result<(), MachineError> {
        self.enter(Op::WriteIntent)?;
        self.intent = Some(intent.clone());
        Ok(())
    }
    fn read_intent(&mut self) -> Result<Option<PendingIntent>, MachineError> {
        self.enter(Op::ReadIntent)?;
        Ok(self.intent.clone())
    }
    fn clear_intent(&mut self) -> Result<(), MachineError> {
        self.enter(Op::ClearIntent)?;
        self.intent = None;
        Ok(())
    }
    fn lock(&mut self, owner_run: &str) -> Result<(), LockError> {
        self.enter(Op::Lock)?;
        match &self.lock_owner {
            Some(o) if o != owner_run => Err(LockError::Held { owner: format!("run={o}") }),
            _ => {
                self.lock_owner = Some(owner_run.to_owned());
                Ok(())
            }
        }
    }
    fn unlock(&mut self, owner_run: &str) -> Result<(), MachineError> {
        if self.lock_owner.as_deref() == Some(owner_run) {
            self.lock_owner = None;
        }
        Ok(())
    }
}
