//! [`ScriptMachine`]: the [`Machine`] of a real host, made of the scripts in
//! [`crate::scripts`] run through a [`Connector`] — OpenSSH for `deploy` (a
//! shared ControlMaster connection, plus fresh logins where a new login must
//! be proved), or the local machine for the agent (the same scripts, run with
//! `/bin/sh`).

use std::time::{Duration, Instant};

use fleetgate_transport::{Output, Transport, TransportError, shell_quote as q};

use crate::health::{self, HealthChecks};
use crate::intent::{self, PendingIntent};
use crate::machine::{
    Armed, Awaited, Cancel, DefaultThenConfirm, HostState, LockError, Machine, MachineError, ProfileThenWatchdog,
    WatchdogSeen, WatchdogSpec, WatchdogState,
};
use crate::scripts::{Layout, lock_owner};

mod loader;

/// Connections to one host.
pub trait Connector: Send {
    /// The host, for messages (`ssh://root@web1`, `local`).
    fn describe(&self) -> String;
    /// The shared connection (connected on first use).
    fn shared(&mut self) -> &dyn Transport;
    /// A connection of its own: a new login.
    fn fresh(&self) -> Box<dyn Transport>;
    /// Drops the shared connection (before a reboot, after losing it).
    fn disconnect(&mut self);
}

/// The local machine as a connector (the agent's).
#[derive(Debug, Default)]
pub struct LocalConnector;

impl Connector for LocalConnector {
    fn describe(&self) -> String {
        "local".to_owned()
    }
    fn shared(&mut self) -> &dyn Transport {
        &fleetgate_transport::Local
    }
    fn fresh(&self) -> Box<dyn Transport> {
        Box::new(fleetgate_transport::Local)
    }
    fn disconnect(&mut self) {}
}

/// The boot loader of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loader {
    /// systemd-boot on the ESP mounted here.
    SystemdBoot {
        /// The ESP mount point.
        esp: String,
    },
    /// GRUB with this `grub.cfg`.
    Grub {
        /// `grub.cfg`.
        cfg: String,
    },
}

/// Time limits of the machine's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTimeouts {
    /// A short command.
    pub command: Duration,
    /// `switch-to-configuration`.
    pub activation: Duration,
    /// One probe of a host that may be rebooting.
    pub probe: Duration,
    /// The power-cycle hook.
    pub power_cycle: Duration,
}

/// The boot loader's default entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDefault {
    /// systemd-boot: the entry id (`nixos-generation-12.conf`); GRUB: its menu path.
    pub entry: String,
    /// The system it boots (`init=`), when it says.
    pub system: Option<String>,
}

/// A real host.
pub struct ScriptMachine<C: Connector> {
    conn: C,
    /// Where things are on the host.
    pub layout: Layout,
    /// Its boot loader, when it has one fleetgate knows.
    pub loader: Option<Loader>,
    /// Health checks.
    pub health: HealthChecks,
    /// The power-cycle hook (a shell command run where the engine runs).
    pub power_cycle: Option<String>,
    /// Time limits.
    pub timeouts: CallTimeouts,
    /// systemd-boot's `LoaderEntryDefault` EFI variable as found (facts).
    pub efi_default_before: Option<String>,
    start: Instant,
}

/// `env`, the one program besides `/bin/sh` every NixOS host has at a fixed path.
const ENV: &str = "/usr/bin/env";

/// How every script runs: with an EMPTY environment (`env -i`), so that it
/// works only with the `PATH` it sets itself from the systems' `sw/bin` — on a
/// real host as in the lab and the tests, whatever the login's environment.
const SH: [&str; 4] = [ENV, "-i", "/bin/sh", "-s"];

/// Exit status of a script that found nothing to do (absent file, no dir).
const ABSENT: i32 = 3;

fn lost(e: &TransportError) -> MachineError {
    let line = e.to_string().lines().next().unwrap_or_default().to_owned();
    match e {
        TransportError::Unreachable { .. } | TransportError::Timeout { .. } => MachineError::Lost(line),
        _ => MachineError::Failed(line),
    }
}

pub(crate) fn failed(what: &str, o: &Output) -> MachineError {
    let mut text = o.stdout_text();
    text.push_str(&String::from_utf8_lossy(&o.stderr));
    let tail = fleetgate_process::tail(text.trim().as_bytes());
    MachineError::Failed(format!(
        "{what} failed ({}){}",
        o.status.map_or_else(|| "killed".to_owned(), |s| format!("exit {s}")),
        if tail.is_empty() { String::new() } else { format!(":\n{tail}") }
    ))
}

impl<C: Connector> ScriptMachine<C> {
    /// The connections to the host.
    pub fn connector(&self) -> &C {
        &self.conn
    }

    /// A machine over `conn`.
    pub fn new(conn: C, layout: Layout, timeouts: CallTimeouts) -> ScriptMachine<C> {
        ScriptMachine {
            conn,
            layout,
            loader: None,
            health: HealthChecks::default(),
            power_cycle: None,
            timeouts,
            efi_default_before: None,
            start: Instant::now(),
        }
    }

    /// The shared connection (for what is not the engine's: facts, the copy's probes).
    pub fn transport(&mut self) -> &dyn Transport {
        self.conn.shared()
    }

    pub(crate) fn run(
        &mut self,
        script: &str,
        stdin_file: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, MachineError> {
        let result = match stdin_file {
            None => self.conn.shared().run(&SH, Some(script.as_bytes()), timeout),
            Some(bytes) => self.conn.shared().run(&[ENV, "-i", "/bin/sh", "-c", script], Some(bytes), timeout),
        };
        if let Err(TransportError::Unreachable { .. } | TransportError::Timeout { .. }) = &result {
            self.conn.disconnect();
        }
        result.map_err(|e| lost(&e))
    }

    /// Runs a script; non-zero exit is `Failed`; returns stdout.
    ///
    /// # Errors
    /// [`MachineError`].
    pub fn sh_ok(&mut self, what: &str, script: &str, timeout: Duration) -> Result<String, MachineError> {
        let o = self.run(script, None, timeout)?;
        if o.success() { Ok(o.stdout_text()) } else { Err(failed(what, &o)) }
    }

    fn fresh_ok(&self, what: &str, script: &str, timeout: Duration) -> Result<String, MachineError> {
        let o = self.conn.fresh().run(&SH, Some(script.as_bytes()), timeout).map_err(|e| lost(&e))?;
        if o.success() { Ok(o.stdout_text()) } else { Err(failed(what, &o)) }
    }

    fn read(&mut self, path: &str, max: u64) -> Result<Option<Vec<u8>>, MachineError> {
        let o = self.run(&self.layout.read_file(path, max), None, self.timeouts.command)?;
        match o.status {
            Some(0) => Ok(Some(o.stdout)),
            Some(ABSENT) => Ok(None),
            _ => Err(failed(&format!("reading {path}"), &o)),
        }
    }

    fn write(&mut self, path: &str, bytes: &[u8], mode: &str) -> Result<(), MachineError> {
        let o = self.run(&self.layout.write_file(path, mode), Some(bytes), self.timeouts.command)?;
        if o.success() { Ok(()) } else { Err(failed(&format!("writing {path}"), &o)) }
    }
}

impl<C: Connector> Machine for ScriptMachine<C> {
    fn describe(&self) -> String {
        self.conn.describe()
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn pause(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn state(&mut self) -> Result<HostState, MachineError> {
        let out = self.sh_ok("reading the host's state", &self.layout.state(), self.timeouts.command)?;
        Ok(parse_state(&out))
    }

    fn system_state(&mut self) -> String {
        let layout = self.layout.clone();
        health::system_state(self.conn.shared(), &layout, self.timeouts.command)
    }

    fn set_profile(&mut self, system: &str) -> Result<u64, MachineError> {
        let link = self.sh_ok("setting the system profile", &self.layout.set_profile(system), self.timeouts.command)?;
        generation_number(link.trim())
            .ok_or_else(|| MachineError::Failed(format!("the system profile points at {link:?}, not at a generation")))
    }

    fn restore_profile(&mut self, generation: Option<u64>, system: &str) -> Result<(), MachineError> {
        let script = self.layout.restore_profile(generation, system);
        self.sh_ok("restoring the system profile", &script, self.timeouts.command).map(|_| ())
    }

    fn install_boot(&mut self, system: &str) -> Result<(), MachineError> {
        let script = self.layout.install_boot(system);
        self.sh_ok("switch-to-configuration boot", &script, self.timeouts.activation).map(|_| ())
    }

    fn arm_once(&mut self, new: &str, fallback: &str) -> Result<Armed, MachineError> {
        match self.loader.clone() {
            None => Ok(Armed::Cannot("no boot loader fleetgate knows was found".to_owned())),
            Some(Loader::Grub { cfg }) => self.arm_grub(&cfg, new, fallback),
            Some(Loader::SystemdBoot { esp }) => self.arm_sd(&esp, new, fallback),
        }
    }

    fn disarm_once(&mut self, fallback: &str) -> Result<(), MachineError> {
        match self.loader.clone() {
            None => Ok(()),
            Some(Loader::Grub { cfg }) => {
                let (_, mut env, path) = match self.grub(&cfg) {
                    Ok(x) => x,
                    Err(MachineError::Cannot(_)) => return Ok(()),
                    Err(e) => return Err(e),
                };
                if env.get("next_entry").is_some() {
                    env.unset("next_entry");
                    self.write_grubenv(&path, &env)?;
                }
                Ok(())
            }
            Some(Loader::SystemdBoot { esp }) => {
                let sd = self.sd_listing(&esp)?;
                if !sd.efivars {
                    return Ok(());
                }
                self.bootctl("set-oneshot ''", "")?;
                let Some(pinned_before) = sd.pinned_before.clone() else { return Ok(()) };
                let fallback_id = sd.entry_for(fallback).map(crate::bootloader::SdEntry::id);
                match fallback_id {
                    Some(id) if pinned_before.is_empty() && sd.conf_default.as_deref() == Some(id.as_str()) => {
                        self.bootctl("set-default ''", "")?;
                    }
                    Some(id) => self.bootctl(&format!("set-default {}", q(&id)), "")?,
                    None => {}
                }
                self.forget_pin()
            }
        }
    }

    fn bless_entry(&mut self, new: &str) -> Result<(), MachineError> {
        match self.loader.clone() {
            None => Ok(()),
            Some(Loader::Grub { cfg }) => {
                let (menu, mut env, path) = self.grub(&cfg)?;
                let saved = menu.default.as_deref().is_some_and(|d| d == "saved" || d.contains("saved_entry"));
                if saved && menu.default_entry(&env).and_then(|e| e.system.as_deref()) != Some(new) {
                    let entry = menu.entry_for(new).ok_or_else(|| {
                        MachineError::Failed(format!("no GRUB entry boots {new} to save as the default"))
                    })?;
                    env.set("saved_entry", &entry.path.clone());
                    self.write_grubenv(&path, &env)?;
                }
                Ok(())
            }
            Some(Loader::SystemdBoot { esp }) => {
                let sd = self.sd_listing(&esp)?;
                let Some(entry) = sd.entry_for(new).cloned() else { return Ok(()) };
                let id = entry.id();
                if entry.counting() {
                    let script = format!(
                        "{}e={}\nmv -f \"$e/{}\" \"$e/{}\"\n",
                        self.layout.tools(&[]),
                        q(&self.layout.at(&format!("{esp}/loader/entries"))),
                        entry.file,
                        id
                    );
                    self.sh_ok("marking the entry good", &script, self.timeouts.command)?;
                }
                if let Some(before) = sd.pinned_before {
                    // fleetgate pinned the default for the trial: unpin, and
                    // `loader.conf` (its exact id, or a glob whose newest
                    // match is the generation just set) boots the new one.
                    // A default the user had pinned follows the new entry.
                    if before.is_empty() {
                        self.bootctl("set-default ''", "")?;
                    } else {
                        self.bootctl(&format!("set-default {}", q(&id)), "")?;
                    }
                    self.forget_pin()?;
                }
                Ok(())
            }
        }
    }

    fn start_watchdog(&mut self, spec: &WatchdogSpec) -> Result<(), MachineError> {
        let script = self.layout.launch_watchdog(spec);
        self.sh_ok("starting the watchdog", &script, self.timeouts.command).map(|_| ())
    }

    fn watchdog(&mut self, run_id: &str) -> Result<WatchdogSeen, MachineError> {
        let out = self.sh_ok("looking at the watchdog", &self.layout.look_watchdog(run_id), self.timeouts.command)?;
        Ok(parse_look(&out))
    }

    fn watchdog_when(&mut self, run_id: &str, until: Awaited, within: Duration) -> Result<WatchdogSeen, MachineError> {
        // The host waits at most this long per call: the caller's poll
        // stays in charge of the deadline, and a call never nears its timeout.
        let wait = within.min(HOST_WAIT);
        let script = self.layout.look_watchdog_when(run_id, until, wait);
        let out = self.sh_ok("waiting for the watchdog", &script, self.timeouts.command + wait)?;
        Ok(parse_look(&out))
    }

    fn set_profile_then_start_watchdog(&mut self, spec: &WatchdogSpec) -> Result<(), ProfileThenWatchdog> {
        let script = self.layout.set_profile_then_launch(spec);
        // Cut mid-way: whether the watchdog started is unknown (`Stop` finds out).
        let o = self.run(&script, None, self.timeouts.command).map_err(ProfileThenWatchdog::Watchdog)?;
        let set = o.stdout_text().lines().any(|l| l.trim() == crate::scripts::PROFILE_SET);
        match (set, o.success()) {
            (true, true) => Ok(()),
            (true, false) => Err(ProfileThenWatchdog::Watchdog(failed("starting the watchdog", &o))),
            (false, _) => Err(ProfileThenWatchdog::Profile(failed("setting the system profile", &o))),
        }
    }

    fn cancel_watchdog(&mut self, run_id: &str) -> Result<Cancel, MachineError> {
        let out = self.sh_ok("cancelling the watchdog", &self.layout.cancel_watchdog(run_id), self.timeouts.command)?;
        Ok(if out.trim() == "cancelled" { Cancel::Cancelled } else { Cancel::AlreadyRunning })
    }

    fn request_rollback(&mut self, run_id: &str) -> Result<(), MachineError> {
        let script = self.layout.flag_watchdog(run_id, "rollback");
        self.sh_ok("asking the watchdog to roll back", &script, self.timeouts.command).map(|_| ())
    }

    fn confirm(&mut self, run_id: &str) -> Result<(), MachineError> {
        let script = self.layout.flag_watchdog(run_id, "confirm");
        self.fresh_ok("confirming over a new login", &script, self.timeouts.command).map(|_| ())
    }

    fn make_default_fresh(&mut self, new: &str) -> Result<(), MachineError> {
        let script = self.layout.install_boot(new);
        self.fresh_ok("switch-to-configuration boot", &script, self.timeouts.activation).map(|_| ())
    }

    fn make_default_then_confirm(
        &mut self,
        new: &str,
        run_id: &str,
    ) -> Result<Option<WatchdogSeen>, DefaultThenConfirm> {
        let script = format!(
            "(\n{}) || exit $?\necho {LOOK_FOLLOWS}\n{}",
            self.layout.install_boot_then_confirm(new, run_id),
            self.layout.look_watchdog_when(run_id, Awaited::End, HOST_WAIT)
        );
        let timeout = self.timeouts.activation + self.timeouts.command + HOST_WAIT;
        let o = self.conn.fresh().run(&SH, Some(script.as_bytes()), timeout).map_err(|e| {
            // Cut mid-way: whether it confirmed is the watchdog's to tell.
            DefaultThenConfirm::Default(lost(&e))
        })?;
        let text = o.stdout_text();
        let made = text.lines().any(|l| l.trim() == crate::scripts::DEFAULT_MADE);
        match (made, o.success()) {
            (true, true) => Ok(text.split_once(&format!("{LOOK_FOLLOWS}\n")).map(|(_, look)| parse_look(look))),
            (true, false) => Err(DefaultThenConfirm::Confirm(failed("confirming over a new login", &o))),
            (false, _) => Err(DefaultThenConfirm::Default(failed("switch-to-configuration boot", &o))),
        }
    }

    fn activation_log(&mut self, run_id: &str) -> String {
        let script = self
            .layout
            .read_file(&format!("{}/activate.log", crate::scripts::RUN_DIR_REL.replace("{run}", run_id)), 64 * 1024);
        self.sh_ok("reading the activation log", &script, self.timeouts.command)
            .map(|t| {
                let lines: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
                lines[lines.len().saturating_sub(8)..].join("\n")
            })
            .unwrap_or_default()
    }

    /// Over the shared connection (issue 15: a login less per host). That
    /// new logins work is proved by the fresh login that confirms.
    fn health(&mut self, baseline: &str) -> Vec<String> {
        let shared = self.conn.shared();
        health::check_once(&self.health, shared, &self.layout, baseline, self.timeouts.command)
    }

    fn reboot(&mut self) {
        let _ = self.run(&self.layout.reboot(), None, self.timeouts.command);
        self.conn.disconnect();
    }

    fn fresh_boot_id(&mut self) -> Option<String> {
        let out = self.fresh_ok("reading the boot id", &self.layout.boot_id(), self.timeouts.probe).ok()?;
        Some(out.trim().to_owned())
    }

    fn power_cycle(&mut self) -> Result<(), MachineError> {
        let Some(command) = self.power_cycle.clone() else {
            return Err(MachineError::Cannot("no power-cycle command is configured".to_owned()));
        };
        fleetgate_process::Run::new("sh")
            .args(["-c", &command])
            .timeout(self.timeouts.power_cycle)
            .run()
            .map(|_| ())
            .map_err(|e| MachineError::Failed(e.to_string().lines().next().unwrap_or_default().to_owned()))
    }

    fn write_intent(&mut self, i: &PendingIntent) -> Result<(), MachineError> {
        // 600: its health commands may hold what only root should read.
        self.write(intent::PATH, i.to_json().as_bytes(), "600")
    }

    fn read_intent(&mut self) -> Result<Option<PendingIntent>, MachineError> {
        match self.read(intent::PATH, intent::MAX_BYTES)? {
            None => Ok(None),
            Some(bytes) => intent_from_bytes(&bytes).map(Some),
        }
    }

    fn clear_intent(&mut self) -> Result<(), MachineError> {
        let script = self.layout.remove_file(intent::PATH);
        self.sh_ok("removing the pending intent", &script, self.timeouts.command).map(|_| ())
    }

    fn lock(&mut self, owner_run: &str) -> Result<(), LockError> {
        let mine = format!("run={owner_run} ");
        let script = self.layout.lock(&lock_owner(owner_run), &mine);
        let out = self.sh_ok("taking the deploy lock", &script, self.timeouts.command)?;
        match out.trim().strip_prefix("held") {
            None => Ok(()),
            Some(o) => Err(LockError::Held {
                owner: if o.trim().is_empty() { "owner unknown".to_owned() } else { o.trim().to_owned() },
            }),
        }
    }

    fn unlock(&mut self, owner_run: &str) -> Result<(), MachineError> {
        let script = self.layout.unlock(&format!("run={owner_run} "));
        self.sh_ok("releasing the deploy lock", &script, self.timeouts.command).map(|_| ())
    }
}

/// The generation number in `system-12-link`.
#[must_use]
pub fn generation_number(link: &str) -> Option<u64> {
    link.rsplit('/').next()?.strip_prefix("system-")?.strip_suffix("-link")?.parse().ok()
}

/// The pending intent in the bytes of its file, as the host gave them; a
/// file that does not parse is `Failed`, with the parser's cause.
pub(crate) fn intent_from_bytes(bytes: &[u8]) -> Result<PendingIntent, MachineError> {
    PendingIntent::parse(&String::from_utf8_lossy(bytes)).map_err(|e| {
        let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
        MachineError::Failed(format!("{e}{cause}"))
    })
}

/// The longest a host waits in one [`Machine::watchdog_when`] call.
const HOST_WAIT: Duration = Duration::from_secs(10);

/// The line after which the confirming login prints its look at the watchdog.
const LOOK_FOLLOWS: &str = "fleetgate-look-follows";

/// Reads [`Layout::state`]'s lines.
fn parse_state(out: &str) -> HostState {
    let mut s = HostState::default();
    for line in out.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim().to_owned();
        match k {
            "current" => s.current = v,
            "booted" => s.booted = v,
            "profile" => s.profile = v,
            "link" => s.profile_generation = generation_number(&v),
            "boot_id" => s.boot_id = v,
            _ => {}
        }
    }
    s
}

/// Reads [`Layout::look_watchdog`]'s three lines, and the host's state
/// after them when [`Layout::look_watchdog_when`] printed it.
fn parse_look(out: &str) -> WatchdogSeen {
    let mut lines = out.lines();
    let state_line = lines.next().unwrap_or("missing").trim().to_owned();
    let status = lines.next().and_then(|s| s.trim().parse::<i32>().ok());
    let boot_id = lines.next().unwrap_or_default().trim().to_owned();
    let (word, rest) = state_line.split_once(' ').unwrap_or((state_line.as_str(), ""));
    let state = match word {
        "armed" => WatchdogState::Armed,
        "refused" => WatchdogState::Refused(rest.to_owned()),
        "activating" => WatchdogState::Activating,
        "waiting" => WatchdogState::Waiting(status.unwrap_or(-1)),
        "confirmed" => WatchdogState::Confirmed,
        "rolling-back" => WatchdogState::RollingBack,
        "rolled-back" => WatchdogState::RolledBack(rest.trim().parse().unwrap_or(-1)),
        "cancelled" => WatchdogState::Cancelled,
        _ => WatchdogState::Missing,
    };
    let host = out.lines().any(|l| l == crate::scripts::STATE_FOLLOWS).then(|| {
        let after = out.split_once(&format!("{}\n", crate::scripts::STATE_FOLLOWS)).map_or("", |(_, a)| a);
        parse_state(after)
    });
    WatchdogSeen { state, boot_id, host }
}
