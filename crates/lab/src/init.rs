//! PID 1 of a lab host, started by the host's supervisor once the firmware
//! found a bootable generation, inside fresh mount, PID and UTS namespaces in
//! the host's network namespace.
//!
//! It plays the part of stage 1 (assemble the root, `pivot_root`) and of
//! systemd in stage 2: run the generation's own `init` (the fixture's stage-2
//! script, which sets `/run/booted-system` and runs the activation script),
//! start the generation's services, start the real OpenSSH `sshd`, then reap
//! orphans and wait for a power request (`SIGINT` reboot, `SIGTERM` power off).
//!
//! It talks to its supervisor through stdout: every line is console output,
//! except lines starting with [`EVENT_PREFIX`].

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions, kill_process};
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::hardware::{Hardware, LoopNumbers};
use crate::layout::LabDir;
use crate::rootfs;
use crate::state::{HostState, LabState};
use crate::userland::units;

/// Prefix of the lines that are events for the supervisor, not console text.
pub const EVENT_PREFIX: &str = "@@fleetgate-lab ";
/// Exit status of init when the host asked to reboot.
pub const EXIT_REBOOT: i32 = 100;
/// Exit status of init when the host powered off.
pub const EXIT_POWEROFF: i32 = 0;

const SSHD_READY_TIMEOUT: Duration = Duration::from_secs(15);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What this init is for.
pub enum Mode {
    /// Install `system` as generation 1 and make it the boot default, as
    /// `nixos-install` does, then exit.
    Install { system: String },
    /// Boot `toplevel`.
    Boot { toplevel: String },
}

fn event(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{EVENT_PREFIX}{text}");
    let _ = out.flush();
}

fn console(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// The command that starts a host's PID 1 in `mode`: the lab binary in the
/// host's network namespace, in fresh mount, PID and UTS namespaces, killed
/// with its whole PID namespace when the `unshare` parent dies.
pub fn command(lab_root: &std::path::Path, host: &HostState, mode: &Mode) -> anyhow::Result<Command> {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &host.netns, "unshare", "--mount", "--pid", "--uts", "--fork", "--kill-child"])
        .args(["--propagation", "private", "--"])
        .arg(crate::lab::lab_binary()?);
    match mode {
        Mode::Install { system } => {
            command.arg("__install").arg("--lab").arg(lab_root).args(["--host", host.name(), "--system", system])
        }
        Mode::Boot { toplevel } => {
            command.arg("__init").arg("--lab").arg(lab_root).args(["--host", host.name(), "--boot", toplevel])
        }
    };
    Ok(command)
}

/// The loop devices' numbers, read from the nodes `up` attached.
pub fn loop_numbers(host: &HostState) -> anyhow::Result<LoopNumbers> {
    let root =
        host.root_loop.as_deref().ok_or_else(|| anyhow::anyhow!("host {} has no root disk attached", host.name()))?;
    let root = crate::disk::device_number(root)?;
    let esp = match &host.esp_loop {
        Some(esp) => Some(crate::disk::device_number(esp)?),
        None => None,
    };
    Ok(LoopNumbers { root, esp })
}

pub fn run(lab: &LabDir, host_name: &str, mode: Mode) -> ExitCode {
    match run_inner(lab, host_name, mode) {
        Ok(code) => code,
        Err(err) => {
            console(&format!("[FAILED] fleetgate-lab init: {err:#}"));
            event(&format!("emergency {err:#}"));
            ExitCode::from(1)
        }
    }
}

fn run_inner(lab: &LabDir, host_name: &str, mode: Mode) -> anyhow::Result<ExitCode> {
    let state = LabState::load(lab)?;
    let host = state.host(host_name)?;
    let dir = lab.host(host_name);
    let hardware = Hardware::of(host, &loop_numbers(host)?);
    let lab_binary = std::env::current_exe()?;
    rootfs::make_private()?;
    rootfs::populate_dev(&dir.root().join("devstaging"), &hardware)?;
    rootfs::mount_root(&dir.newroot_dir(), &hardware)?;
    rootfs::mount_userland(&dir.newroot_dir(), &dir, &lab_binary)?;
    rootfs::pivot(&dir.newroot_dir())?;
    rustix::system::sethostname(host_name.as_bytes())?;
    match mode {
        Mode::Install { system } => install(&system),
        Mode::Boot { toplevel } => boot(&toplevel),
    }
}

fn install(system: &str) -> anyhow::Result<ExitCode> {
    let profile = Command::new("nix-env").args(["-p", "/nix/var/nix/profiles/system", "--set", system]).status()?;
    if !profile.success() {
        anyhow::bail!("nix-env --set {system} failed");
    }
    let status = Command::new(format!("{system}/bin/switch-to-configuration"))
        .arg("boot")
        .env("NIXOS_INSTALL_BOOTLOADER", "1")
        .env("PATH", crate::ssh_setup::HOST_PATH)
        .status()?;
    rustix::fs::sync();
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn boot(toplevel: &str) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::new([SIGCHLD, SIGINT, SIGTERM])?;
    console("<<< NixOS Stage 2 >>>");
    let stage2 = Command::new(format!("{toplevel}/init"))
        .env("PATH", crate::ssh_setup::HOST_PATH)
        .env("FLEETGATE_LAB", "1")
        .stdin(Stdio::null())
        .status();
    let stage2_ok = matches!(&stage2, Ok(status) if status.success());
    let mut sshd: Option<u32> = None;
    if !stage2_ok {
        let why = match stage2 {
            Ok(status) => format!("{toplevel}/init exited with {status}"),
            Err(err) => format!("cannot run {toplevel}/init: {err}"),
        };
        console(&format!("[FAILED] Failed to start NixOS stage 2: {why}"));
        console("You are in emergency mode. After logging in, type \"journalctl -xb\" to view system logs.");
        event(&format!("emergency {why}"));
    } else {
        start_units();
        sshd = Some(start_sshd()?);
        wait_for_port(22, SSHD_READY_TIMEOUT)?;
        sshd_unit(units::ActiveState::Active);
        console("[  OK  ] Reached target Multi-User System.");
        event("ready");
    }
    for signal in signals.forever() {
        match signal {
            SIGCHLD => {
                if let Some(pid) = sshd {
                    if reap().contains(&pid) {
                        console("[FAILED] sshd.service: Main process exited; restarting.");
                        sshd_unit(units::ActiveState::Failed);
                        sshd = Some(start_sshd()?);
                        sshd_unit(units::ActiveState::Active);
                    }
                } else {
                    reap();
                }
            }
            SIGINT => return Ok(shutdown("Rebooting.", EXIT_REBOOT)),
            SIGTERM => return Ok(shutdown("Powering off.", EXIT_POWEROFF)),
            _ => {}
        }
    }
    Ok(ExitCode::from(1))
}

fn start_units() {
    let unit_dir = Path::new(units::UNIT_DIR);
    let state_dir = Path::new(units::STATE_DIR);
    for unit in units::declared(unit_dir).unwrap_or_default() {
        match units::start(unit_dir, state_dir, &unit) {
            Ok(units::ActiveState::Active) => console(&format!("[  OK  ] Started {unit}.")),
            Ok(_) => console(&format!("[FAILED] Failed to start {unit}.")),
            Err(err) => console(&format!("[FAILED] Failed to start {unit}: {err}")),
        }
    }
}

/// NixOS runs sshd as `sshd.service`: the lab's `systemctl` reports the
/// daemon this init started under that name, as systemd would.
fn sshd_unit(state: units::ActiveState) {
    if let Err(err) = units::set_state(Path::new(units::STATE_DIR), "sshd.service", state) {
        console(&format!("[FAILED] cannot record the state of sshd.service: {err}"));
    }
}

fn start_sshd() -> anyhow::Result<u32> {
    fs::create_dir_all("/run/sshd")?;
    fs::create_dir_all("/var/log")?;
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-f", "/etc/ssh/sshd_config", "-E", "/var/log/sshd.log"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    console("[  OK  ] Started SSH Daemon.");
    // Reaped by the SIGCHLD loop, never by `Child::wait`.
    Ok(child.id())
}

fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let listening = crate::process::poll_until(timeout, Duration::from_millis(200), || {
        TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()
    });
    match listening {
        Some(_) => Ok(()),
        None => anyhow::bail!("sshd did not listen on port {port} within {timeout:?}"),
    }
}

/// Reaps every exited child; returns their pids.
fn reap() -> Vec<u32> {
    let mut pids = Vec::new();
    while let Ok(Some((pid, _))) = rustix::process::wait(WaitOptions::NOHANG) {
        pids.push(pid.as_raw_nonzero().get() as u32);
    }
    pids
}

/// Stops every process of the host: SIGTERM, a grace period, SIGKILL.
fn shutdown(message: &str, code: i32) -> ExitCode {
    console("[  OK  ] Stopped target Multi-User System.");
    signal_everyone(Signal::TERM);
    // Until every process has been reaped (no children left) or the grace ends.
    crate::process::poll_until(SHUTDOWN_GRACE, Duration::from_millis(20), || {
        reap();
        matches!(rustix::process::wait(WaitOptions::NOHANG), Err(rustix::io::Errno::CHILD)).then_some(())
    });
    signal_everyone(Signal::KILL);
    rustix::fs::sync();
    console(&format!(
        "[  OK  ] Reached target System {}. {message}",
        if code == EXIT_REBOOT { "Reboot" } else { "Power Off" }
    ));
    ExitCode::from(code as u8)
}

/// Signals every process of the host but PID 1 (this init): the host has its
/// own PID namespace and `/proc`, so `/proc` lists exactly the host's processes.
fn signal_everyone(signal: Signal) {
    let Ok(entries) = fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let pid = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .filter(|pid| *pid > 1)
            .and_then(Pid::from_raw);
        if let Some(pid) = pid {
            let _ = kill_process(pid, signal);
        }
    }
}
