//! A VM host's power supervisor: one process per VM, owning its QEMU and
//! answering the same control protocol as a netns host's ([`crate::vmm`]),
//! so `fleetgate-lab reboot|power-cycle|power-off|power-on|status` and
//! fleetgate's power-cycle hook work the same on both.
//!
//! # States and transitions
//!
//! ```text
//!   Off ──power-on / power-cycle / reboot──▶ QEMU started ─▶ Booting (boot + 1)
//!   Booting ──console: ready marker──────────▶ Running
//!   Booting ──console: stage 1 waits ≥ 10 s──▶ Hung        (until reset)
//!   Booting ──console: emergency mode────────▶ Emergency   (until reset)
//!   any on ──the guest resets (reboot)──▶ QEMU restarted ─▶ Booting (boot + 1)
//!   any on ──the guest powers off──────▶ Off
//! ```
//!
//! Every reset is a fresh QEMU (`-no-reboot`, then the supervisor starts it
//! again with the same disk and EFI variable store), as a power cycle is a
//! fresh machine: under TCG a reset QEMU keeps the translated code of the
//! previous boot, and writing over it made GRUB's memmove of the kernel take
//! hours. A reset before the console said anything since the last start is
//! the same boot (SeaBIOS resets once more after a warm reboot).
//!
//! Commands while QEMU runs:
//! - `power-cycle`: QMP `quit`, then a new QEMU; answered once QEMU exited.
//! - `reboot`: on a running host, Ctrl-Alt-Del (QMP `send-key`; systemd
//!   reboots cleanly); on a stuck host, as `power-cycle`. A clean reboot that
//!   takes longer than [`CLEAN_TIMEOUT`] is cut short by `quit`.
//! - `power-off`: ACPI power button (`system_powerdown`), after
//!   [`CLEAN_TIMEOUT`] `quit`; answered when QEMU exited.
//! - `shutdown` (lab down): `quit`; answered when QEMU exited.
//!
//! Every wait has a deadline: a QEMU that does not exit [`KILL_TIMEOUT`]
//! after `quit` is killed. QEMU runs under `setpriv --pdeathsig KILL`, so it
//! never outlives its supervisor.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::console::{self, Sign};
use super::qemu::{self, Accel};
use super::qmp::{Message, Qmp};
use crate::control::{Power, Request};
use crate::layout::{HostDir, LabDir};
use crate::state::{HostState, LabState};
use crate::supervisor::{self, Reply, Shared};

/// How long a clean reboot or power-off may take before power is cut.
pub const CLEAN_TIMEOUT: Duration = Duration::from_secs(90);
/// How long QEMU may take to exit after `quit` before it is killed.
const KILL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long QEMU may take to open its QMP socket.
const QMP_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest console line kept whole.
const MAX_LINE: usize = 64 * 1024;

/// What reaches the event loop. `run` tells QEMU processes apart: messages
/// of an earlier QEMU are ignored.
enum Event {
    Command(Request, Reply),
    Serial { run: u64, line: String },
    Qmp { run: u64, message: Message },
    QemuExited { run: u64, status: String },
}

/// Runs the supervisor of VM `host_name` until it is shut down.
pub fn run(lab: &LabDir, host_name: &str) -> anyhow::Result<()> {
    let state = LabState::load(lab)?;
    let host = state.host(host_name)?.clone();
    let dir = lab.host(host_name);
    let (_, kernel) = crate::fixture::host_kernel()?;
    let accel = qemu::accel(&super::image::cache_dir(), &kernel);
    let shared = Shared::new(host_name);
    let (events, inbox) = mpsc::channel();
    supervisor::serve(&dir.vmm_socket(), &dir.vmm_pid_file(), &shared, events.clone(), Event::Command)?;
    let console = OpenOptions::new().create(true).append(true).open(dir.console_log())?;
    supervisor::announce_ready();
    let mut machine = Machine { host, dir, accel, shared, events, inbox, console, run: 0, spoke: false };
    machine.power_loop();
    let _ = std::fs::remove_file(machine.dir.vmm_socket());
    Ok(())
}

struct Machine {
    host: HostState,
    dir: HostDir,
    accel: Accel,
    shared: Arc<Shared>,
    events: Sender<Event>,
    inbox: Receiver<Event>,
    console: File,
    /// Counts QEMU processes started.
    run: u64,
    /// Whether the serial port said anything since the last power-on or
    /// reset.
    spoke: bool,
}

/// What the host does once QEMU is gone.
enum Next {
    /// Power on: a new boot.
    Boot,
    /// The guest reset itself: a new QEMU; a new boot unless the console
    /// said nothing since the last start.
    Reset,
    StayOff,
    Exit,
}

/// A command waiting for QEMU.
struct Pending {
    reply: Reply,
    until: Until,
    deadline: Instant,
    escalated: bool,
}

enum Until {
    /// QEMU's exit, then this; past the deadline, `quit`, then kill.
    Exit(Next),
}

impl Machine {
    fn log(&mut self, line: &str) {
        let _ = writeln!(self.console, "{line}");
    }

    fn power_loop(&mut self) {
        let mut next = Next::Boot;
        loop {
            next = match next {
                Next::Exit => return,
                Next::StayOff => self.while_off(),
                Next::Boot | Next::Reset => match self.run_qemu(matches!(next, Next::Boot) || self.spoke) {
                    Ok(next) => next,
                    Err(err) => {
                        let reason = format!("QEMU could not run: {err:#}");
                        self.log(&format!("--- {reason} ---"));
                        self.shared.update(|s| {
                            s.power = Power::Off;
                            s.reason = Some(reason);
                        });
                        Next::StayOff
                    }
                },
            };
        }
    }

    fn while_off(&mut self) -> Next {
        self.shared.update(|s| {
            s.power = Power::Off;
            s.boot_id = None;
        });
        loop {
            let (command, reply) = match self.inbox.recv() {
                Ok(Event::Command(command, reply)) => (command, reply),
                Ok(_) => continue,
                Err(_) => return Next::Exit,
            };
            let next = match command {
                Request::PowerOn | Request::PowerCycle | Request::Reboot => Some(Next::Boot),
                Request::Shutdown => Some(Next::Exit),
                Request::PowerOff => None,
                other => {
                    let _ = reply.send(Err(format!("{other:?} is not possible while the host is off")));
                    continue;
                }
            };
            let _ = reply.send(Ok(()));
            if let Some(next) = next {
                return next;
            }
        }
    }

    fn boot_started(&mut self) {
        self.spoke = false;
        self.shared.update(|s| {
            s.power = Power::Booting;
            s.boots += 1;
            s.boot_id = None;
            s.entry = None;
            s.toplevel = None;
            s.reason = None;
        });
        let boots = self.shared.snapshot().map(|s| s.boots).unwrap_or(0);
        self.log(&format!("=== power on (boot {boots}, QEMU {}) ===", self.accel.as_str()));
    }

    /// Starts QEMU (counting a new boot if `new_boot`) and runs the machine
    /// until QEMU exits.
    fn run_qemu(&mut self, new_boot: bool) -> anyhow::Result<Next> {
        self.run += 1;
        let run = self.run;
        let qemu = qemu::command(&self.host, &self.dir, self.accel)?;
        let mut command = Command::new("setpriv");
        command.args(["--pdeathsig", "KILL", "--"]).arg(qemu.get_program()).args(qemu.get_args());
        let _ = std::fs::remove_file(self.dir.qmp_socket());
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting qemu-system-x86_64 (scripts/setup installs qemu-system-x86)")?;
        let pid = child.id();
        if new_boot {
            self.boot_started();
        }
        self.spoke = false;
        if let Some(stdout) = child.stdout.take() {
            let events = self.events.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut bytes = Vec::new();
                while reader.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut bytes).is_ok_and(|n| n > 0) {
                    let line = String::from_utf8_lossy(&bytes).trim_end_matches('\n').to_owned();
                    bytes.clear();
                    if events.send(Event::Serial { run, line }).is_err() {
                        break;
                    }
                }
            });
        }
        {
            let events = self.events.clone();
            thread::spawn(move || {
                let status = child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
                let _ = events.send(Event::QemuExited { run, status });
            });
        }
        let events = self.events.clone();
        let qmp = Qmp::connect(&self.dir.qmp_socket(), QMP_TIMEOUT, move |message| {
            let _ = events.send(Event::Qmp { run, message });
        });
        let mut qmp = match qmp {
            Ok(qmp) => qmp,
            Err(err) => {
                kill(pid);
                self.drain_until_exit(run);
                return Err(err.into());
            }
        };
        Ok(self.while_on(run, pid, &mut qmp))
    }

    /// Waits (bounded) for the exit of QEMU `run` after it was killed.
    fn drain_until_exit(&mut self, run: u64) {
        let deadline = Instant::now() + KILL_TIMEOUT;
        while let Ok(event) = self.inbox.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if matches!(event, Event::QemuExited { run: r, .. } if r == run) {
                return;
            }
        }
    }

    fn while_on(&mut self, run: u64, pid: u32, qmp: &mut Qmp) -> Next {
        let mut pending: Option<Pending> = None;
        // The reason of QEMU's last SHUTDOWN event (`guest-shutdown`,
        // `guest-reset`, `host-qmp-quit`…).
        let mut shutdown: Option<String> = None;
        loop {
            let event = match pending.as_ref().map(|p| p.deadline) {
                Some(at) => match self.inbox.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(event) => event,
                    Err(RecvTimeoutError::Timeout) => {
                        if let Some(p) = pending.as_mut() {
                            self.escalate(p, qmp, pid);
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return Next::Exit,
                },
                None => match self.inbox.recv() {
                    Ok(event) => event,
                    Err(_) => return Next::Exit,
                },
            };
            match event {
                Event::Serial { run: r, line } if r == run => self.on_serial(&line),
                Event::Qmp { run: r, message } if r == run => match message {
                    Message::Event { name, data } if name == "SHUTDOWN" => {
                        shutdown = data["reason"].as_str().map(str::to_owned);
                    }
                    Message::Error { id, description } => {
                        self.log(&format!("--- QMP {}: {description} ---", id.unwrap_or_default()));
                        if let Some(p) = pending.take() {
                            let _ = p.reply.send(Err(description));
                        }
                    }
                    _ => {}
                },
                Event::QemuExited { run: r, status } if r == run => {
                    return match (pending.take(), shutdown.as_deref()) {
                        (Some(Pending { reply, until: Until::Exit(next), .. }), _) => {
                            let _ = reply.send(Ok(()));
                            next
                        }
                        (None, Some("guest-reset")) => {
                            self.log("--- reset by the guest ---");
                            Next::Reset
                        }
                        (None, Some("guest-shutdown")) => {
                            self.log("--- powered off by the guest ---");
                            Next::StayOff
                        }
                        (None, other) => {
                            let reason = format!("QEMU exited unexpectedly ({status}, {other:?})");
                            self.log(&format!("--- {reason} ---"));
                            self.shared.update(|s| s.reason = Some(reason));
                            Next::StayOff
                        }
                    };
                }
                Event::Command(command, reply) => {
                    if pending.is_some() {
                        let _ = reply.send(Err(format!("{command:?}: another power command is still under way")));
                        continue;
                    }
                    pending = self.command(command, reply, qmp);
                }
                _ => {}
            }
        }
    }

    /// Starts `command`; returns what it waits for, if anything.
    fn command(&mut self, command: Request, reply: Reply, qmp: &mut Qmp) -> Option<Pending> {
        let power = self.shared.snapshot().map_or(Power::Booting, |s| s.power);
        let (sent, next, note) = match command {
            Request::PowerCycle => (qmp.execute("quit", None, "quit"), Next::Boot, "--- power cycle ---"),
            Request::Reboot if power == Power::Running => {
                let keys = json!({"keys": [
                    {"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}
                ]});
                (qmp.execute("send-key", Some(keys), "ctrl-alt-del"), Next::Reset, "--- reboot (Ctrl-Alt-Del) ---")
            }
            Request::Reboot => (qmp.execute("quit", None, "quit"), Next::Boot, "--- reboot: power cycle ---"),
            Request::PowerOff => {
                (qmp.execute("system_powerdown", None, "powerdown"), Next::StayOff, "--- power button ---")
            }
            Request::Shutdown => (qmp.execute("quit", None, "quit"), Next::Exit, "--- power off (lab down) ---"),
            Request::PowerOn => {
                let _ = reply.send(Ok(()));
                return None;
            }
            other => {
                let _ = reply.send(Err(format!("{other:?} is not a power command")));
                return None;
            }
        };
        self.log(note);
        if let Err(err) = sent {
            let _ = reply.send(Err(format!("QMP: {err}")));
            return None;
        }
        let clean = matches!(next, Next::Reset | Next::StayOff);
        let timeout = if clean { CLEAN_TIMEOUT } else { KILL_TIMEOUT };
        Some(Pending { reply, until: Until::Exit(next), deadline: Instant::now() + timeout, escalated: !clean })
    }

    /// A command's deadline passed: cut the power (`quit`), then kill QEMU.
    fn escalate(&mut self, pending: &mut Pending, qmp: &mut Qmp, pid: u32) {
        if pending.escalated {
            self.log("--- QEMU did not exit: killed ---");
            kill(pid);
        } else {
            self.log("--- the guest took too long: power cut ---");
            let _ = qmp.execute("quit", None, "quit");
        }
        pending.escalated = true;
        pending.deadline = Instant::now() + KILL_TIMEOUT;
    }

    fn on_serial(&mut self, line: &str) {
        self.spoke = true;
        self.log(line);
        let Some(sign) = console::sign(line) else { return };
        let power = self.shared.snapshot().map_or(Power::Booting, |s| s.power);
        match sign {
            Sign::Ready { boot_id, toplevel, entry } => self.shared.update(|s| {
                s.power = Power::Running;
                s.boot_id = Some(boot_id);
                s.toplevel = Some(toplevel);
                s.entry = entry;
                s.reason = None;
            }),
            Sign::WaitingForRoot { device, seconds }
                if power == Power::Booting && seconds >= console::HUNG_AFTER.as_secs() =>
            {
                self.shared.update(|s| {
                    s.power = Power::Hung;
                    s.reason = Some(format!("stage 1 waits for {device}"));
                });
            }
            Sign::WaitingForRoot { .. } => {}
            Sign::Emergency(text) if power != Power::Emergency => self.shared.update(|s| {
                s.power = Power::Emergency;
                s.reason = Some(text);
            }),
            Sign::Emergency(_) => {}
            Sign::Panic(text) => self.shared.update(|s| {
                s.power = Power::Hung;
                s.reason = Some(text);
            }),
        }
    }
}

fn kill(pid: u32) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}
