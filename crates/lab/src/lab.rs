//! A lab as a whole: bring it up, talk to its hosts, bring it down without a
//! trace. This is the API tests and the `fleetgate-lab` command use.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::control::{self, HostStatus, Power, Request};
use crate::hardware::Hardware;
use crate::layout::LabDir;
use crate::process;
use crate::spec::LabSpec;
use crate::state::{DiskIdentity, HostState, LabState};
use crate::{disk, fixture, network, ssh_setup, vm};

/// Time allowed for a netns host to boot (firmware + stage 1 + stage 2 + sshd).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Time allowed for a VM to boot: real firmware, kernel and systemd, under
/// TCG on a busy machine (a boot takes 30-90 s on two loaded cores).
pub const VM_BOOT_TIMEOUT: Duration = Duration::from_secs(600);
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
const CONTROL_TIMEOUT: Duration = Duration::from_secs(150);
const SSH_TIMEOUT: Duration = Duration::from_secs(120);

/// Nix configuration for every lab invocation, passed per invocation: no
/// substituters (the lab never talks to the internet) and the experimental
/// features flakes need on Nix 2.8.
pub const NIX_CONFIG: &str = "experimental-features = nix-command flakes\nsubstituters =\nwarn-dirty = false\n";

pub struct Lab {
    dir: LabDir,
    state: LabState,
}

impl Lab {
    pub fn open(dir: LabDir) -> anyhow::Result<Lab> {
        let state = LabState::load(&dir)?;
        Ok(Lab { dir, state })
    }

    pub fn dir(&self) -> &LabDir {
        &self.dir
    }

    pub fn state(&self) -> &LabState {
        &self.state
    }

    pub fn hosts(&self) -> impl Iterator<Item = &HostState> {
        self.state.hosts.iter()
    }

    pub fn host(&self, name: &str) -> anyhow::Result<&HostState> {
        Ok(self.state.host(name)?)
    }

    /// The fixture flake of this lab.
    pub fn fleet_dir(&self) -> PathBuf {
        self.dir.fleet_dir()
    }

    /// Brings up a lab in `dir`; on any failure, removes what it made.
    pub fn up(dir: LabDir, spec: &LabSpec, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Lab> {
        if dir.state_file().exists() {
            match LabState::load(&dir) {
                Ok(state) if network::bridge_exists(state.id) => {
                    bail!(
                        "a lab is already up in {} (bring it down first: `{}`)",
                        dir.root().display(),
                        dir.command("down")
                    )
                }
                _ => {
                    progress("removing the remains of an earlier lab");
                    Lab::down(&dir, &mut |_| {})?;
                }
            }
        }
        fs::create_dir_all(dir.root()).with_context(|| format!("creating {}", dir.root().display()))?;
        let id = network::create_bridge()?;
        let hosts = spec
            .hosts
            .iter()
            .enumerate()
            .map(|(index, host)| HostState {
                spec: host.clone(),
                address: network::host_address(id, index),
                netns: network::netns_name(id, &host.name),
                veth: network::veth_name(id, index),
                ssh_port: None,
                disks: DiskIdentity::derive(id, &host.name),
                root_loop: None,
                esp_loop: None,
            })
            .collect();
        let state = LabState { id, bridge: network::bridge_name(id), gateway: network::gateway_address(id), hosts };
        state.save(&dir)?;
        let mut lab = Lab { dir, state };
        match lab.bring_up(progress) {
            Ok(()) => Ok(lab),
            Err(err) => {
                progress(&format!("bringing the lab up failed: {err:#}; cleaning up"));
                if let Err(cleanup) = Lab::down(&lab.dir, &mut |_| {}) {
                    progress(&format!("cleanup also failed: {cleanup:#}"));
                }
                Err(err)
            }
        }
    }

    fn bring_up(&mut self, progress: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
        progress("writing the fixture flake");
        let fleet = self.dir.fleet_dir();
        fixture::write(&fleet, &self.state, &self.dir.ssh_config())?;
        let vms = self.state.hosts.iter().any(HostState::is_vm);
        fixture::write_deploy_config(&fleet, self.dir.root(), &lab_binary()?, vms)?;
        progress("building the hosts' first generation (nix build)");
        let names: Vec<String> = self.state.hosts.iter().map(|h| h.name().to_owned()).collect();
        let systems = build_systems(&fleet, &names)?;
        let client_key = ssh_setup::client_key(&self.dir)?;
        let mut host_keys = Vec::new();
        let ports = vm_ssh_ports(self.state.id, &self.state.hosts)?;
        for index in 0..self.state.hosts.len() {
            let name = self.state.hosts[index].name().to_owned();
            if self.state.hosts[index].is_vm() {
                self.state.hosts[index].address = "127.0.0.1".to_owned();
                self.state.hosts[index].ssh_port = ports.get(&index).copied();
                self.state.save(&self.dir)?;
                let host_dir = self.dir.host(&name);
                fs::create_dir_all(host_dir.root())?;
                host_keys.push((name.clone(), ssh_setup::host_key(&host_dir.host_keys_dir(), &name)?));
                continue;
            }
            progress(&format!("{name}: network, disks, hardware"));
            network::add_host(self.state.id, index, &name)?;
            self.create_disks(index)?;
            self.state.save(&self.dir)?;
            let host_dir = self.dir.host(&name);
            host_keys.push((name.clone(), ssh_setup::host_key(&host_dir.host_keys_dir(), &name)?));
            let host = &self.state.hosts[index];
            let hardware = Hardware::of(host, &crate::init::loop_numbers(host)?);
            hardware.write_sysfs(&host_dir.sys_dir(), host.uses_esp())?;
        }
        ssh_setup::write_client_config(&self.dir, &self.state, &host_keys)?;
        let image = match self.state.hosts.iter().any(HostState::is_vm) {
            true => Some(vm::image::ensure(progress)?),
            false => None,
        };
        for host in &self.state.hosts {
            let name = host.name();
            let system = systems.get(name).context("nix build returned no system")?;
            progress(&format!("{name}: installing {system}"));
            match &image {
                Some(image) if host.is_vm() => {
                    let dir = self.dir.host(name);
                    let id = vm::assemble::HostIdentity {
                        host,
                        dir: &dir,
                        client_key: &client_key,
                        host_keys: &dir.host_keys_dir(),
                    };
                    vm::assemble::assemble(&id, image, system)
                        .with_context(|| format!("making the disk of VM {name}"))?;
                }
                _ => self.install(host, system, &client_key)?,
            }
        }
        for host in &self.state.hosts {
            progress(&format!("{}: power on", host.name()));
            self.start_supervisor(host)?;
        }
        for host in &self.state.hosts {
            let timeout = boot_timeout(host);
            let status = self.wait(host.name(), 1, &[Power::Running, Power::Hung, Power::Emergency], timeout)?;
            if status.power != Power::Running {
                bail!("{} did not come up: {:?} ({})", host.name(), status.power, status.reason.unwrap_or_default());
            }
            progress(&format!("{}: up, boot_id {}", host.name(), status.boot_id.unwrap_or_default()));
        }
        Ok(())
    }

    fn create_disks(&mut self, index: usize) -> anyhow::Result<()> {
        let host = &self.state.hosts[index];
        let dir = self.dir.host(host.name());
        fs::create_dir_all(dir.root())?;
        disk::create_ext4_image(
            &dir.root_image(),
            host.spec.root_size_mib,
            &host.spec.root_label,
            &host.disks.root_fs_uuid,
        )?;
        let root_loop = disk::attach_loop(&dir.root_image())?;
        self.state.hosts[index].root_loop = Some(root_loop);
        if self.state.hosts[index].uses_esp() {
            let host = &self.state.hosts[index];
            disk::create_ext4_image(&dir.esp_image(), 256, "boot", &host.disks.esp_fs_uuid)?;
            self.state.hosts[index].esp_loop = Some(disk::attach_loop(&dir.esp_image())?);
        }
        Ok(())
    }

    /// `nixos-install`: fill the new disk, then run the system's
    /// `switch-to-configuration boot` inside the host to install its boot loader.
    fn install(&self, host: &HostState, system: &str, client_key: &str) -> anyhow::Result<()> {
        let exe = lab_binary()?;
        let mut prepare = Command::new("unshare");
        prepare
            .args(["--mount", "--propagation", "private", "--"])
            .arg(&exe)
            .arg("__prepare")
            .arg("--lab")
            .arg(self.dir.root())
            .args(["--host", host.name(), "--system", system])
            .env("FLEETGATE_LAB_CLIENT_KEY", client_key);
        process::run(&mut prepare, INSTALL_TIMEOUT)
            .with_context(|| format!("preparing the disk of {}", host.name()))?;
        // The installer is a boot of its own, with a boot id of its own.
        let boot_id = fs::read_to_string("/proc/sys/kernel/random/uuid")?;
        fs::write(self.dir.host(host.name()).boot_id_file(), boot_id)?;
        let mut install =
            crate::init::command(self.dir.root(), host, &crate::init::Mode::Install { system: system.to_owned() })?;
        let (status, stdout, stderr) = process::run_status(&mut install, INSTALL_TIMEOUT)?;
        if !status.success() {
            bail!(
                "installing {} failed ({status}):\n{}\n{}",
                host.name(),
                process::tail(&stdout),
                process::tail(&stderr)
            );
        }
        Ok(())
    }

    fn start_supervisor(&self, host: &HostState) -> anyhow::Result<()> {
        let exe = lab_binary()?;
        let dir = self.dir.host(host.name());
        let log = fs::File::create(dir.vmm_log())?;
        // `setsid --fork`: the supervisor is re-parented away from us at once,
        // so it never lingers as our zombie; its stdout still reaches us. A
        // netns host's supervisor mounts its disks, in a namespace of its own.
        let mut command = Command::new("setsid");
        command.arg("--fork");
        if host.is_vm() {
            command.arg(&exe).arg("__vm");
        } else {
            command.args(["unshare", "--mount", "--propagation", "private", "--"]).arg(&exe).arg("__vmm");
        }
        let mut child = command
            .arg("--lab")
            .arg(self.dir.root())
            .args(["--host", host.name()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting the host supervisor")?;
        let stdout = child.stdout.take().context("supervisor has no stdout")?;
        let (ready, wait_ready) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = ready.send(line);
        });
        let ready = wait_ready.recv_timeout(Duration::from_secs(30));
        let _ = process::wait_deadline(&mut child, Duration::from_secs(10), "setsid --fork");
        match ready {
            Ok(line) if line.trim() == "ready" => Ok(()),
            Ok(line) => bail!(
                "the supervisor of {} failed to start ({}); see {}",
                host.name(),
                line.trim(),
                dir.vmm_log().display()
            ),
            Err(_) => {
                bail!("the supervisor of {} did not start within 30s; see {}", host.name(), dir.vmm_log().display())
            }
        }
    }

    /// Removes every namespace, mount, loop device and process of the lab in
    /// `dir`, then the directory itself.
    pub fn down(dir: &LabDir, progress: &mut dyn FnMut(&str)) -> anyhow::Result<()> {
        let state = match LabState::load(dir) {
            Ok(state) => state,
            Err(err) if !dir.state_file().exists() => {
                if dir.root().join("hosts").exists() || dir.root().join("fleet").exists() {
                    fs::remove_dir_all(dir.root()).with_context(|| format!("removing {}", dir.root().display()))?;
                    return Ok(());
                }
                return Err(err.into());
            }
            Err(err) => return Err(err.into()),
        };
        let mut problems = Vec::new();
        for (index, host) in state.hosts.iter().enumerate() {
            let host_dir = dir.host(host.name());
            let socket = host_dir.vmm_socket();
            let stopped = socket.exists()
                && control::request(host.name(), &socket, &Request::Shutdown, Duration::from_secs(30)).is_ok();
            if !stopped {
                kill_pid_file(&host_dir.vmm_pid_file(), dir.root());
            }
            // The supervisor answers `Shutdown` just before it exits.
            if !wait_until_exited(&host_dir.vmm_pid_file(), Duration::from_secs(15)) {
                kill_pid_file(&host_dir.vmm_pid_file(), dir.root());
                if !wait_until_exited(&host_dir.vmm_pid_file(), Duration::from_secs(15)) {
                    problems.push(format!("{}: the supervisor does not exit", host.name()));
                }
            }
            if host.is_vm() {
                kill_leftover_qemu(&host_dir.qemu_pid_file(), dir.root());
            }
            if network::netns_exists(state.id, host.name()) {
                kill_netns_processes(&host.netns);
            }
            for image in [host_dir.root_image(), host_dir.esp_image()] {
                if image.exists() {
                    for device in disk::loops_backing(&image).unwrap_or_default() {
                        if let Err(err) = disk::detach_loop(&device) {
                            problems.push(format!("{}: {err}", host.name()));
                        }
                    }
                }
            }
            if let Err(err) = network::remove_host(state.id, index, host.name()) {
                problems.push(format!("{}: {err}", host.name()));
            }
            progress(&format!("{}: down", host.name()));
        }
        if let Err(err) = network::remove_bridge(state.id) {
            problems.push(err.to_string());
        }
        if !problems.is_empty() {
            bail!("the lab could not be removed completely:\n  {}", problems.join("\n  "));
        }
        fs::remove_dir_all(dir.root()).with_context(|| format!("removing {}", dir.root().display()))?;
        Ok(())
    }

    fn control(&self, host: &str, request: &Request, timeout: Duration) -> anyhow::Result<HostStatus> {
        self.state.host(host)?;
        Ok(control::request(host, &self.dir.host(host).vmm_socket(), request, timeout)?)
    }

    pub fn status(&self, host: &str) -> anyhow::Result<HostStatus> {
        self.control(host, &Request::Status, Duration::from_secs(10))
    }

    /// Waits until `host` made at least `min_boots` boot attempts and is in one
    /// of `states`.
    pub fn wait(&self, host: &str, min_boots: u64, states: &[Power], timeout: Duration) -> anyhow::Result<HostStatus> {
        let request = Request::Wait { min_boots, states: states.to_vec(), timeout_ms: timeout.as_millis() as u64 };
        self.control(host, &request, timeout + Duration::from_secs(5))
    }

    /// Waits for the next boot of `host` (after `after_boots`) to settle:
    /// running, hung or in emergency mode.
    pub fn wait_next_boot(&self, host: &str, after_boots: u64) -> anyhow::Result<HostStatus> {
        let timeout = boot_timeout(self.state.host(host)?);
        self.wait(host, after_boots + 1, &[Power::Running, Power::Hung, Power::Emergency, Power::Off], timeout)
    }

    /// A clean reboot; returns once the next boot settled.
    pub fn reboot(&self, host: &str) -> anyhow::Result<HostStatus> {
        let before = self.status(host)?.boots;
        self.control(host, &Request::Reboot, CONTROL_TIMEOUT)?;
        self.wait_next_boot(host, before)
    }

    /// Cut the power and turn it back on; returns once the next boot settled.
    pub fn power_cycle(&self, host: &str) -> anyhow::Result<HostStatus> {
        let before = self.status(host)?.boots;
        self.control(host, &Request::PowerCycle, CONTROL_TIMEOUT)?;
        self.wait_next_boot(host, before)
    }

    pub fn power_off(&self, host: &str) -> anyhow::Result<HostStatus> {
        self.control(host, &Request::PowerOff, CONTROL_TIMEOUT)?;
        self.wait(host, 0, &[Power::Off], CONTROL_TIMEOUT)
    }

    pub fn power_on(&self, host: &str) -> anyhow::Result<HostStatus> {
        let before = self.status(host)?.boots;
        self.control(host, &Request::PowerOn, CONTROL_TIMEOUT)?;
        self.wait_next_boot(host, before)
    }

    /// What `host` runs now (`/run/current-system`), asked over SSH; `None`
    /// if it cannot be asked (not running, not answering).
    pub fn current_system(&self, host: &str) -> Option<String> {
        let mut command = self.ssh_command(host);
        command.args(["-o", "ConnectTimeout=3", "--", "readlink -f /run/current-system"]);
        let out = process::run(&mut command, Duration::from_secs(15)).ok()?;
        Some(out.stdout.trim().to_owned()).filter(|s| s.starts_with('/'))
    }

    /// `ssh -F <lab ssh_config> <host>`, ready for arguments.
    pub fn ssh_command(&self, host: &str) -> Command {
        let mut command = Command::new("ssh");
        command.arg("-F").arg(self.dir.ssh_config()).arg(host);
        command
    }

    /// Runs a shell command on `host` over real SSH and returns its stdout.
    pub fn ssh(&self, host: &str, script: &str) -> anyhow::Result<String> {
        let mut command = self.ssh_command(host);
        command.arg("--").arg(script);
        Ok(process::run(&mut command, SSH_TIMEOUT)?.stdout)
    }

    /// The console log of `host`.
    pub fn console(&self, host: &str) -> anyhow::Result<String> {
        let path = self.dir.host(host).console_log();
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// The knobs of every fixture host (`fleet.json`).
    pub fn knobs(&self) -> anyhow::Result<fixture::FleetKnobs> {
        Ok(fixture::FleetKnobs::load(&self.fleet_dir())?)
    }

    /// Changes the knobs of one host; the next build makes a new generation.
    pub fn edit_host(&self, host: &str, change: impl FnOnce(&mut fixture::HostKnobs)) -> anyhow::Result<()> {
        let mut knobs = self.knobs()?;
        let entry = knobs.hosts.get_mut(host).with_context(|| format!("the fixture has no host {host}"))?;
        change(entry);
        knobs.save(&self.fleet_dir())?;
        Ok(())
    }

    /// Builds the current fixture systems of `hosts`.
    pub fn build(&self, hosts: &[&str]) -> anyhow::Result<BTreeMap<String, String>> {
        let names: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        build_systems(&self.fleet_dir(), &names)
    }
}

/// `nix build` of `nixosConfigurations.<host>.config.system.build.toplevel`
/// for every host at once; returns host → store path. `nix build --json`
/// lists results in no particular order, so they are matched by `drvPath`.
pub fn build_systems(fleet: &Path, hosts: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let flake = format!("path:{}", fleet.display());
    let mut eval = Command::new("nix");
    eval.env("NIX_CONFIG", NIX_CONFIG)
        .args(["eval", "--json", &format!("{flake}#nixosConfigurations"), "--apply"])
        .arg("cs: builtins.mapAttrs (n: c: c.config.system.build.toplevel.drvPath) cs");
    let drvs: BTreeMap<String, String> = serde_json::from_str(&process::run_nix(&mut eval, BUILD_TIMEOUT)?.stdout)
        .context("parsing `nix eval --json`")?;
    let mut command = Command::new("nix");
    command.env("NIX_CONFIG", NIX_CONFIG).args(["build", "--no-link", "--json"]);
    for host in hosts {
        command.arg(format!("{flake}#nixosConfigurations.{host}.config.system.build.toplevel"));
    }
    let out = process::run_nix(&mut command, BUILD_TIMEOUT)?;
    let built: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).context("parsing `nix build --json`")?;
    let mut systems = BTreeMap::new();
    for host in hosts {
        let drv = drvs.get(host).with_context(|| format!("the fixture flake has no host {host}"))?;
        let item = built
            .iter()
            .find(|item| item["drvPath"].as_str() == Some(drv))
            .with_context(|| format!("`nix build` did not build {host}"))?;
        let path = item["outputs"]["out"].as_str().context("`nix build --json` gave no output path")?;
        systems.insert(host.clone(), path.to_owned());
    }
    Ok(systems)
}

/// The `fleetgate-lab` executable, which hosts run as their init and
/// userland: `$FLEETGATE_LAB_BIN`, this program if it is the lab, or the one
/// cargo built next to this program (tests run from `target/*/deps`).
pub fn lab_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FLEETGATE_LAB_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    if exe.file_name().is_some_and(|n| n == "fleetgate-lab") {
        return Ok(exe);
    }
    let candidates = exe.ancestors().skip(1).take(2).map(|dir| dir.join("fleetgate-lab"));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find the fleetgate-lab binary next to {} (build it: `cargo build -p fleetgate-lab`, or set FLEETGATE_LAB_BIN)",
        exe.display()
    )
}

/// How long `host` may take to boot.
pub fn boot_timeout(host: &HostState) -> Duration {
    if host.is_vm() { VM_BOOT_TIMEOUT } else { BOOT_TIMEOUT }
}

/// Loopback ports for the VMs' forwarded sshd, by host index: a fixed range
/// per lab id (labs on one machine have distinct ids), or any free port if
/// that one is taken.
fn vm_ssh_ports(id: u8, hosts: &[HostState]) -> anyhow::Result<BTreeMap<usize, u16>> {
    let mut ports = BTreeMap::new();
    let mut held = Vec::new();
    for (index, host) in hosts.iter().enumerate().filter(|(_, h)| h.is_vm()) {
        let preferred = 20_000 + u16::from(id) * 64 + u16::try_from(index).unwrap_or(63).min(63);
        let listener = std::net::TcpListener::bind(("127.0.0.1", preferred))
            .or_else(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
            .with_context(|| format!("finding a loopback port for the sshd of {}", host.name()))?;
        ports.insert(index, listener.local_addr()?.port());
        held.push(listener);
    }
    Ok(ports)
}

/// Kills a VM's QEMU if its supervisor left it behind.
fn kill_leftover_qemu(pid_file: &Path, lab_root: &Path) {
    if kill_if_ours(pid_file, lab_root, "qemu-system") {
        wait_until_exited(pid_file, Duration::from_secs(15));
    }
}

/// Kills the supervisor named by a pid file.
fn kill_pid_file(path: &Path, lab_root: &Path) {
    kill_if_ours(path, lab_root, "__vm");
}

/// Kills the process of a pid file, but only if it still is this lab's
/// (its command line names `marker` and the lab's directory: after a crash
/// the number may belong to anyone). True if it was killed.
fn kill_if_ours(pid_file: &Path, lab_root: &Path, marker: &str) -> bool {
    let Some(raw) = fs::read_to_string(pid_file).ok().and_then(|t| t.trim().parse::<i32>().ok()) else { return false };
    let cmdline = fs::read(format!("/proc/{raw}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    if !(cmdline.contains(marker) && cmdline.contains(&lab_root.display().to_string())) {
        return false;
    }
    match rustix::process::Pid::from_raw(raw) {
        Some(pid) => rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok(),
        None => false,
    }
}

/// Waits until the process of a pid file has exited (gone, or a zombie
/// waiting for PID 1 to reap it); false if it still runs at the deadline.
fn wait_until_exited(pid_file: &Path, timeout: Duration) -> bool {
    let Some(pid) = fs::read_to_string(pid_file).ok().and_then(|t| t.trim().parse::<u32>().ok()) else { return true };
    let exited = || match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    };
    process::poll_until(timeout, Duration::from_millis(100), || exited().then_some(())).is_some()
}

/// Kills whatever still runs in a host's network namespace.
fn kill_netns_processes(netns: &str) {
    if let Ok(out) = process::run(Command::new("ip").args(["netns", "pids", netns]), Duration::from_secs(10)) {
        for pid in out
            .stdout
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .filter_map(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}
