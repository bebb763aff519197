//! A lab host's power supervisor: its "hardware". One process per host, in a
//! private mount namespace, owning the host's power state.
//!
//! Power on = firmware: mount the host's disks, let the boot loader choose an
//! entry ([`crate::firmware`]), decide with the lab's own stage-1 model
//! ([`crate::stage1`]) whether that kernel + initrd reaches the root
//! filesystem, then start the host's PID 1 ([`crate::init`]). A host that
//! cannot find its root hangs until power-cycled, printing what NixOS prints.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use rustix::mount::{MountFlags, UnmountFlags, mount, unmount};
use rustix::process::{Pid, Signal, kill_process};

use crate::control::{Power, Request};
use crate::firmware::{self, BootChoice};
use crate::hardware::Hardware;
use crate::init::{EVENT_PREFIX, EXIT_REBOOT};
use crate::layout::{HostDir, LabDir};
use crate::spec::Bootloader;
use crate::stage1::{self, Verdict};
use crate::state::{HostState, LabState};
use crate::supervisor::{self, Reply, Shared};

/// How long a clean shutdown of the host may take before power is cut.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the host's init may take to die after power is cut.
const KILL_TIMEOUT: Duration = Duration::from_secs(15);

enum Event {
    Command(Request, Reply),
    FromInit(String),
    InitExited(Option<i32>),
}

/// Runs the supervisor of `host` until it is shut down. Prints `ready` on
/// stdout once the control socket accepts requests.
pub fn run(lab: &LabDir, host_name: &str) -> anyhow::Result<()> {
    let state = LabState::load(lab)?;
    let host = state.host(host_name)?.clone();
    let dir = lab.host(host_name);
    let shared = Shared::new(host_name);
    let (events, inbox) = mpsc::channel();
    supervisor::serve(&dir.vmm_socket(), &dir.vmm_pid_file(), &shared, events.clone(), Event::Command)?;
    supervisor::announce_ready();
    let mut machine = Machine { host, dir, shared, events, inbox, console: open_console(&lab.host(host_name))? };
    machine.power_loop();
    let _ = fs::remove_file(lab.host(host_name).vmm_socket());
    Ok(())
}

fn open_console(dir: &HostDir) -> anyhow::Result<File> {
    Ok(OpenOptions::new().create(true).append(true).open(dir.console_log())?)
}

struct Machine {
    host: HostState,
    dir: HostDir,
    shared: Arc<Shared>,
    events: Sender<Event>,
    inbox: Receiver<Event>,
    console: File,
}

/// What the host does after a power phase ended.
enum Next {
    Boot,
    StayOff,
    Exit,
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
                Next::StayOff => {
                    self.shared.update(|s| {
                        s.power = Power::Off;
                        s.boot_id = None;
                    });
                    self.wait_while_off()
                }
                Next::Boot => self.boot_once(),
            };
        }
    }

    fn wait_while_off(&mut self) -> Next {
        self.wait_for_power_command(false)
    }

    /// A host that cannot boot sits there until someone power-cycles it.
    fn wait_while_stuck(&mut self) -> Next {
        self.wait_for_power_command(true)
    }

    /// Waits for the operator while nothing runs: the host is off, or
    /// `powered` but stuck (hung, emergency mode). Power commands act as on
    /// real hardware; the rest are refused.
    fn wait_for_power_command(&mut self, powered: bool) -> Next {
        loop {
            let (command, reply) = match self.inbox.recv() {
                Ok(Event::Command(command, reply)) => (command, reply),
                Ok(_) => continue,
                Err(_) => return Next::Exit,
            };
            let next = match (&command, powered) {
                (Request::PowerCycle | Request::Reboot, true) => {
                    self.log("--- power cycle ---");
                    Some(Next::Boot)
                }
                (Request::PowerCycle | Request::Reboot | Request::PowerOn, false) => Some(Next::Boot),
                (Request::PowerOff, true) => Some(Next::StayOff),
                (Request::Shutdown, _) => Some(Next::Exit),
                (Request::PowerOn, true) | (Request::PowerOff, false) => None,
                _ => {
                    let state = if powered { "stuck" } else { "off" };
                    let _ = reply.send(Err(format!("{command:?} is not possible while the host is {state}")));
                    continue;
                }
            };
            let _ = reply.send(Ok(()));
            if let Some(next) = next {
                return next;
            }
        }
    }

    fn boot_once(&mut self) -> Next {
        let boot_id = new_boot_id();
        self.shared.update(|s| {
            s.power = Power::Booting;
            s.boots += 1;
            s.boot_id = None;
            s.entry = None;
            s.toplevel = None;
            s.reason = None;
        });
        let boots = self.shared.snapshot().map(|s| s.boots).unwrap_or(0);
        self.log(&format!("=== power on (boot {boots}, boot_id {boot_id}) ==="));
        let (choice, verdict) = match self.firmware() {
            Ok(found) => found,
            Err(err) => {
                let reason = format!("{err:#}");
                self.log(&format!("firmware: {reason}"));
                self.log("No bootable device found. System halted.");
                self.shared.update(|s| {
                    s.power = Power::Hung;
                    s.reason = Some(reason);
                });
                return self.wait_while_stuck();
            }
        };
        self.log(&format!("{}: booting `{}` ({})", self.host.spec.bootloader, choice.title, choice.reason));
        for line in verdict.console_lines() {
            self.log(&line);
        }
        let toplevel = choice.toplevel();
        self.shared.update(|s| {
            s.entry = Some(choice.entry_id.clone());
            s.toplevel = toplevel.clone();
        });
        match (&verdict, &toplevel) {
            (Verdict::ReachesStage2 { .. }, Some(toplevel)) => self.run_system(toplevel, &boot_id),
            (Verdict::ReachesStage2 { .. }, None) => {
                self.stuck(Power::Emergency, "the boot entry has no init= parameter".into())
            }
            (Verdict::WaitsForRoot { device, cause }, _) => {
                self.stuck(Power::Hung, format!("stage 1 waits for {device}: {cause}"))
            }
            (Verdict::Fails { reason }, _) => self.stuck(Power::Emergency, reason.clone()),
        }
    }

    fn stuck(&mut self, power: Power, reason: String) -> Next {
        self.shared.update(|s| {
            s.power = power;
            s.reason = Some(reason);
        });
        self.wait_while_stuck()
    }

    /// Mounts the disks, lets the boot loader choose, models stage 1, unmounts.
    fn firmware(&mut self) -> anyhow::Result<(BootChoice, Verdict)> {
        let fw = self.dir.firmware_dir();
        let root_mnt = fw.join("root");
        let esp_mnt = fw.join("esp");
        fs::create_dir_all(&root_mnt)?;
        fs::create_dir_all(&esp_mnt)?;
        let root_loop = self.host.root_loop.clone().context("the root disk is not attached")?;
        mount(root_loop.as_str(), &root_mnt, "ext4", MountFlags::empty(), None)
            .with_context(|| format!("mounting {root_loop}"))?;
        let _root_guard = Unmount(root_mnt.clone());
        let esp_guard = match &self.host.esp_loop {
            Some(esp) => {
                mount(esp.as_str(), &esp_mnt, "ext4", MountFlags::empty(), None)
                    .with_context(|| format!("mounting {esp}"))?;
                Some(Unmount(esp_mnt.clone()))
            }
            None => None,
        };
        let chosen = match self.host.spec.bootloader {
            Bootloader::SystemdBoot => {
                firmware::systemd_boot::choose(&esp_mnt, &self.dir.sys_dir().join("firmware/efi/efivars"))
            }
            Bootloader::Grub => firmware::grub::choose(&root_mnt),
            // Refused by LabSpec::new: GRUB on UEFI exists only on VM hosts.
            Bootloader::GrubEfi => Err(firmware::FirmwareError::NoEntries("the netns lab has no UEFI GRUB".into())),
        };
        let choice = match chosen {
            Ok(choice) => choice,
            Err(err) => {
                // Say what the firmware saw, so a failure explains itself.
                let disk = if self.host.uses_esp() { &esp_mnt } else { &root_mnt };
                let seen = list_tree(disk, 3);
                self.log(&format!("firmware: {err}; the boot disk holds: {seen}"));
                return Err(err.into());
            }
        };
        let hardware = Hardware::of(&self.host, &crate::init::loop_numbers(&self.host)?);
        let mut verdict = stage1::boot(&choice, &hardware, &fw.join("work"))?;
        if let (Verdict::ReachesStage2 { .. }, Some(toplevel)) = (&verdict, choice.toplevel()) {
            let init = root_mnt.join(toplevel.trim_start_matches('/')).join("init");
            if !init.exists() {
                verdict = Verdict::Fails {
                    reason: format!("Failed to switch root: {toplevel}/init does not exist on the root filesystem"),
                };
            }
        }
        drop(esp_guard);
        Ok((choice, verdict))
    }

    fn run_system(&mut self, toplevel: &str, boot_id: &str) -> Next {
        if let Err(err) = fs::write(self.dir.boot_id_file(), format!("{boot_id}\n")) {
            return self.stuck(Power::Emergency, format!("cannot write boot id: {err}"));
        }
        let mut child = match self.spawn_init(toplevel) {
            Ok(child) => child,
            Err(err) => return self.stuck(Power::Emergency, format!("cannot start init: {err:#}")),
        };
        let init_pid = child.id();
        if let Some(stdout) = child.stdout.take() {
            let events = self.events.clone();
            let console = self.console.try_clone();
            thread::spawn(move || forward_console(stdout, console.ok(), events));
        }
        let events = self.events.clone();
        let waiter = thread::spawn(move || {
            let code = child.wait().ok().and_then(|s| s.code());
            let _ = events.send(Event::InitExited(code));
        });
        let boot_id = boot_id.to_owned();
        let toplevel_owned = toplevel.to_owned();
        let next = self.while_running(init_pid, &boot_id, &toplevel_owned);
        let _ = waiter.join();
        next
    }

    fn spawn_init(&self, toplevel: &str) -> anyhow::Result<Child> {
        let lab_root = self.dir.root().parent().and_then(Path::parent).context("host dir has no lab dir")?;
        let console = self.console.try_clone()?;
        let child =
            crate::init::command(lab_root, &self.host, &crate::init::Mode::Boot { toplevel: toplevel.to_owned() })?
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(console)
                .spawn()?;
        Ok(child)
    }

    /// The host is running: relay init's events and the operator's commands
    /// until init exits.
    fn while_running(&mut self, unshare_pid: u32, boot_id: &str, toplevel: &str) -> Next {
        let mut requested: Option<(Next, Reply)> = None;
        let mut deadline: Option<Instant> = None;
        let mut power_cut = false;
        loop {
            let event = match deadline {
                Some(at) => match self.inbox.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(event) => event,
                    Err(RecvTimeoutError::Timeout) if power_cut => {
                        // Even SIGKILL did not end the host: say so instead of
                        // trying forever.
                        let reason = "the host's processes did not die after the power was cut".to_owned();
                        self.log(&format!("--- {reason} ---"));
                        if let Some((_, reply)) = requested.take() {
                            let _ = reply.send(Err(reason.clone()));
                        }
                        return self.stuck(Power::Hung, reason);
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        self.log("--- shutdown took too long: power cut ---");
                        kill(unshare_pid, Signal::KILL);
                        power_cut = true;
                        deadline = Some(Instant::now() + KILL_TIMEOUT);
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
                Event::FromInit(text) if text == "ready" => {
                    let (boot_id, toplevel) = (boot_id.to_owned(), toplevel.to_owned());
                    self.shared.update(|s| {
                        s.power = Power::Running;
                        s.boot_id = Some(boot_id);
                        s.toplevel = Some(toplevel);
                    });
                }
                Event::FromInit(text) => {
                    let reason = text.strip_prefix("emergency ").unwrap_or(&text).to_owned();
                    self.shared.update(|s| {
                        s.power = Power::Emergency;
                        s.reason = Some(reason);
                    });
                }
                Event::InitExited(code) => {
                    let next = match (requested.take(), code) {
                        (Some((next, reply)), _) => {
                            let _ = reply.send(Ok(()));
                            next
                        }
                        (None, Some(EXIT_REBOOT)) => {
                            self.log("--- reboot ---");
                            Next::Boot
                        }
                        (None, Some(0)) => Next::StayOff,
                        (None, other) => {
                            let reason =
                                format!("Kernel panic - not syncing: Attempted to kill init! exitcode={other:?}");
                            self.log(&reason);
                            return self.stuck(Power::Hung, reason);
                        }
                    };
                    return next;
                }
                Event::Command(Request::PowerCycle, reply) => {
                    self.log("--- power cycle ---");
                    kill(unshare_pid, Signal::KILL);
                    power_cut = true;
                    requested = Some((Next::Boot, reply));
                    deadline = Some(Instant::now() + KILL_TIMEOUT);
                }
                Event::Command(Request::Shutdown, reply) => {
                    kill(unshare_pid, Signal::KILL);
                    power_cut = true;
                    requested = Some((Next::Exit, reply));
                    deadline = Some(Instant::now() + KILL_TIMEOUT);
                }
                Event::Command(command @ (Request::Reboot | Request::PowerOff), reply) => {
                    let (signal, next) = if command == Request::Reboot {
                        (Signal::INT, Next::Boot)
                    } else {
                        (Signal::TERM, Next::StayOff)
                    };
                    match init_pid_of(unshare_pid) {
                        Some(init) => kill(init, signal),
                        None => kill(unshare_pid, Signal::KILL),
                    }
                    requested = Some((next, reply));
                    deadline = Some(Instant::now() + SHUTDOWN_TIMEOUT);
                }
                Event::Command(other, reply) => {
                    let _ = reply.send(Err(format!("{other:?} is not possible while the host is running")));
                }
            }
        }
    }
}

/// Unmounts on drop, lazily if busy, so the firmware never leaves mounts behind.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if unmount(&self.0, UnmountFlags::empty()).is_err() {
            let _ = unmount(&self.0, UnmountFlags::DETACH);
        }
    }
}

fn forward_console(stdout: std::process::ChildStdout, mut console: Option<File>, events: Sender<Event>) {
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        match line.strip_prefix(EVENT_PREFIX) {
            Some(event) => {
                let _ = events.send(Event::FromInit(event.to_owned()));
            }
            None => {
                if let Some(console) = console.as_mut() {
                    let _ = writeln!(console, "{line}");
                }
            }
        }
    }
}

/// Paths under `dir`, `depth` levels deep, for diagnostics.
fn list_tree(dir: &Path, depth: usize) -> String {
    fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if depth > 1 && entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), &format!("{name}/"), depth - 1, out);
            } else {
                out.push(name);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "/", depth, &mut out);
    out.sort();
    if out.is_empty() { "nothing".into() } else { out.join(" ") }
}

fn kill(pid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, signal);
    }
}

/// The host's PID 1 as seen from outside: the child `unshare --fork` made.
fn init_pid_of(unshare_pid: u32) -> Option<u32> {
    let children = fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

fn new_boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| format!("{:032x}", std::process::id()))
}
