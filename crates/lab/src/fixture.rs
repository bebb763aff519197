//! The lab's fixture flake: NixOS-shaped systems built from plain derivations.
//! `write` lays it out in a directory: the embedded `flake.nix` and builders,
//! this machine's real Debian kernel with just the modules the fixtures use
//! (and the kernel's complete module metadata), and `fleet.json`, the knobs of
//! every host, meant to be edited to make new generations.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::process::{self, ProcessError};
use crate::spec::DiskBus;
use crate::state::LabState;

const FILES: [(&str, &str); 15] = [
    ("flake.nix", include_str!("../fixture/flake.nix")),
    ("builders/kernel.sh", include_str!("../fixture/builders/kernel.sh")),
    ("builders/write-text.sh", include_str!("../fixture/builders/write-text.sh")),
    ("builders/system-path.sh", include_str!("../fixture/builders/system-path.sh")),
    ("builders/copy-binary.sh", include_str!("../fixture/builders/copy-binary.sh")),
    ("builders/modules-closure.sh", include_str!("../fixture/builders/modules-closure.sh")),
    ("builders/initrd.sh", include_str!("../fixture/builders/initrd.sh")),
    ("builders/etc.sh", include_str!("../fixture/builders/etc.sh")),
    ("builders/toplevel.sh", include_str!("../fixture/builders/toplevel.sh")),
    ("builders/activate.sh", include_str!("../fixture/builders/activate.sh")),
    ("builders/stage-1-init.sh", include_str!("../fixture/builders/stage-1-init.sh")),
    ("builders/stage-2-init.sh", include_str!("../fixture/builders/stage-2-init.sh")),
    ("builders/activatable.sh", include_str!("../fixture/builders/activatable.sh")),
    ("builders/switch-to-configuration.pl", include_str!("../fixture/builders/switch-to-configuration.pl")),
    ("builders/install-bootloader.pl", include_str!("../fixture/builders/install-bootloader.pl")),
];

/// Modules any fixture may put in its initrd, and those a VM's stage 2 loads
/// (its network card, entropy source, EFI variables, the FAT ESP); their
/// dependency closure is shipped in the fixture kernel.
pub const SHIPPED_MODULES: [&str; 14] = [
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "nvme",
    "ahci",
    "sd_mod",
    "ext4",
    "virtio_net",
    "virtio_rng",
    "efivarfs",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
];

/// Module metadata copied unmodified from the real kernel.
const METADATA: [&str; 14] = [
    "modules.alias",
    "modules.alias.bin",
    "modules.builtin",
    "modules.builtin.alias.bin",
    "modules.builtin.bin",
    "modules.builtin.modinfo",
    "modules.dep",
    "modules.dep.bin",
    "modules.devname",
    "modules.order",
    "modules.softdep",
    "modules.symbols",
    "modules.symbols.bin",
    "modules.weakdep",
];

const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error(
        "no kernel found: need /boot/vmlinuz-<ver> with /lib/modules/<ver> (scripts/setup installs linux-image-amd64)"
    )]
    NoKernel,
    #[error(transparent)]
    Tool(#[from] ProcessError),
    #[error("{what}")]
    Io { what: String, source: std::io::Error },
    #[error("fleet.json: {0}")]
    Json(#[from] serde_json::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FixtureError {
    let what = what.into();
    move |source| FixtureError::Io { what, source }
}

/// The machine's kernel: the newest version that has both an image and modules.
pub fn host_kernel() -> Result<(String, PathBuf), FixtureError> {
    let mut versions: Vec<String> = fs::read_dir("/lib/modules")
        .map_err(|_| FixtureError::NoKernel)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|v| Path::new("/boot").join(format!("vmlinuz-{v}")).is_file())
        .collect();
    versions.sort_by(|a, b| crate::firmware::systemd_boot::version_compare(a, b));
    let version = versions.pop().ok_or(FixtureError::NoKernel)?;
    let image = Path::new("/boot").join(format!("vmlinuz-{version}"));
    Ok((version, image))
}

/// Knobs of one host; see `fixture/flake.nix` for what each changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostKnobs {
    pub revision: u64,
    pub bootloader: String,
    pub available_kernel_modules: Vec<String>,
    pub kernel_modules: Vec<String>,
    pub root_device: String,
    pub root_fs_type: String,
    pub kernel_params: Vec<String>,
    pub switch_inhibitors: BTreeMap<String, String>,
    pub activation_fails: bool,
    pub stage2_fails: bool,
    pub services: BTreeMap<String, bool>,
    pub boot_counting: u32,
    pub systemd_version: String,
    pub firmware_revision: u64,
    pub init_interface_version: u32,
    pub facter_report_path: Option<String>,
    pub sops_keep_generations: u32,
    pub microvm_shares: Vec<Value>,
    pub deploy: DeployKnobs,
    /// `boot.loader.timeout`: seconds the boot menu waits.
    #[serde(default = "default_loader_timeout")]
    pub loader_timeout: u32,
    /// `boot.loader.grub.extraConfig`: lines added to grub.cfg's header.
    #[serde(default)]
    pub grub_extra_config: String,
    /// `specialisation.<name>`: each one the same system with the kernel
    /// parameter `fleetgate.specialisation=<name>`.
    #[serde(default)]
    pub specialisations: Vec<String>,
    /// `boot.loader.grub.default`: an entry number, or `saved`
    /// (`grub-set-default`, and each boot saves its entry).
    #[serde(default = "default_grub_default")]
    pub grub_default: String,
    /// A boot service that runs the product's `fleetgate resume-pending` (the
    /// boot unit of the agent's NixOS module) with this binary. The lab only
    /// runs it; it decides nothing with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_binary: Option<ResumeBinary>,
    /// A service that runs the product's `fleetgate agent` (the daemon of
    /// the agent's NixOS module) with this binary and configuration. The lab
    /// only starts it; it decides nothing with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentKnob>,
    /// The host's PID 1 is a real systemd (a VM): the agent's and the resume
    /// units are the agent's NixOS module's own (`nix/module.nix`: a
    /// `Type=simple` daemon restarted always, a `Type=oneshot` boot unit),
    /// not the run-to-completion stand-ins the netns hosts' service runner needs.
    #[serde(default)]
    pub real_systemd: bool,
    /// The tools the system path links to besides the machine's `/usr/bin`
    /// ones, by absolute path: the lab's userland in netns hosts, the
    /// guest's real systemd tools in VMs.
    #[serde(default = "lab_system_tools")]
    pub system_tools: Vec<String>,
    /// The file system of systemd-boot's `/boot` in the fstab: `ext4` (the
    /// netns model's ESP) unless set; `vfat` for a system installed on a
    /// real machine (`fleetgate install` on a VM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esp_fs_type: Option<String>,
    /// `boot.initrd.postDeviceCommands`: shell the initrd's stage 1 runs
    /// once the modules are loaded, before it waits for the root device (as
    /// nixpkgs' stage-1-init.sh). Real kernels only (VMs); the netns model
    /// has no stage 1 to run it. A command that waits for something that
    /// never comes hangs the first boot where no `check` can foresee it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub initrd_post_device_commands: String,
}

/// The product's agent in a host's generations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentKnob {
    /// The fleetgate binary.
    pub binary: ResumeBinary,
    /// Its configuration file's text (TOML), put in the store.
    pub config: String,
}

/// A fleetgate binary copied into the host's generations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumeBinary {
    /// Where it is on this machine.
    pub path: String,
    /// Changes when the file does (size and modification time): a new
    /// binary is a new store path.
    pub identity: String,
}

impl ResumeBinary {
    /// The binary at `path`.
    pub fn at(path: &Path) -> std::io::Result<ResumeBinary> {
        let meta = std::fs::metadata(path)?;
        let mtime = meta.modified()?.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Ok(ResumeBinary { path: path.display().to_string(), identity: format!("{}-{}", meta.len(), mtime.as_nanos()) })
    }
}

fn default_grub_default() -> String {
    "0".to_owned()
}

fn default_loader_timeout() -> u32 {
    5
}

/// A netns host's system tools: the lab binary answers as each of them.
fn lab_system_tools() -> Vec<String> {
    ["systemctl", "reboot", "poweroff", "halt", "bootctl"].iter().map(|t| format!("/run/lab/bin/{t}")).collect()
}

/// A VM guest's system tools: Debian 12's real systemd (merged `/usr`), as
/// nixpkgs' system-path puts systemd's `bin` in every NixOS system's `sw`.
pub const VM_SYSTEM_TOOLS: [&str; 9] = [
    "/usr/bin/systemctl",
    "/usr/sbin/reboot",
    "/usr/sbin/poweroff",
    "/usr/sbin/halt",
    "/usr/bin/bootctl",
    "/usr/bin/systemd-run",
    "/usr/bin/journalctl",
    "/usr/bin/busctl",
    "/usr/bin/systemd-detect-virt",
];

/// What a VPS's NixOS configuration sets for its serial console: the
/// kernel's console, and GRUB's menu on the serial port too.
pub const SERIAL_KERNEL_PARAM: &str = "console=ttyS0";
pub const VM_SPEED_KERNEL_PARAMS: [&str; 2] = ["init_on_alloc=0", "mitigations=off"];
const SERIAL_GRUB_CONFIG: &str =
    "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployKnobs {
    pub hostname: String,
    pub ssh_opts: Vec<String>,
}

/// What a NixOS configuration for this hardware would put in its initrd:
/// nixpkgs' default `availableKernelModules` that the lab ships, plus the
/// virtio drivers a VM's hardware configuration (or nixos-facter) adds.
pub fn default_initrd_modules(disk: DiskBus) -> Vec<String> {
    let mut modules = vec!["ahci", "nvme", "sd_mod"];
    if disk == DiskBus::Virtio {
        modules.extend(["virtio_pci", "virtio_blk", "virtio_scsi"]);
    }
    modules.into_iter().map(str::to_owned).collect()
}

pub fn default_knobs(host: &crate::state::HostState, ssh_config: &Path) -> HostKnobs {
    let vm = host.is_vm();
    let mut kernel_params = vec!["loglevel=4".to_owned(), "root=fstab".to_owned()];
    if vm {
        kernel_params.push(SERIAL_KERNEL_PARAM.to_owned());
        // Under TCG every exec costs tens of milliseconds; zeroing each new
        // page and the Spectre mitigations made it about 1.5x slower (and
        // fleetgate's facts script forks hundreds of processes). Nothing
        // fleetgate checks depends on either.
        kernel_params.extend(VM_SPEED_KERNEL_PARAMS.iter().map(|p| (*p).to_owned()));
    }
    HostKnobs {
        revision: 1,
        bootloader: host.spec.bootloader.as_str().to_owned(),
        available_kernel_modules: default_initrd_modules(host.spec.disk),
        kernel_modules: Vec::new(),
        root_device: format!("/dev/disk/by-label/{}", host.spec.root_label),
        root_fs_type: "ext4".into(),
        kernel_params,
        switch_inhibitors: BTreeMap::from([("dbus-implementation".to_owned(), "dbus".to_owned())]),
        activation_fails: false,
        stage2_fails: false,
        services: BTreeMap::from([("app".to_owned(), true)]),
        boot_counting: 0,
        systemd_version: "254.6".into(),
        firmware_revision: 1,
        init_interface_version: 2,
        facter_report_path: None,
        sops_keep_generations: 1,
        microvm_shares: Vec::new(),
        resume_binary: None,
        agent: None,
        real_systemd: vm,
        system_tools: if vm { VM_SYSTEM_TOOLS.iter().map(|t| (*t).to_owned()).collect() } else { lab_system_tools() },
        esp_fs_type: None,
        initrd_post_device_commands: String::new(),
        deploy: DeployKnobs {
            hostname: host.name().to_owned(),
            ssh_opts: vec!["-F".into(), ssh_config.display().to_string()],
        },
        // A VM's boots cost real time: a one-second menu, as on many servers.
        loader_timeout: if vm { 1 } else { default_loader_timeout() },
        grub_extra_config: if vm { SERIAL_GRUB_CONFIG.to_owned() } else { String::new() },
        specialisations: Vec::new(),
        // GRUB on UEFI guests remember the entry they booted, as
        // `boot.loader.grub.default = "saved"` makes NixOS do.
        grub_default: if vm && host.spec.bootloader == crate::spec::Bootloader::GrubEfi {
            "saved".to_owned()
        } else {
            default_grub_default()
        },
    }
}

/// The whole of `fleet.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetKnobs {
    pub system: String,
    pub kernel_version: String,
    pub nixos_release: String,
    pub hosts: BTreeMap<String, HostKnobs>,
}

impl FleetKnobs {
    pub fn load(fleet_dir: &Path) -> Result<FleetKnobs, FixtureError> {
        let path = fleet_dir.join("fleet.json");
        let text = fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
        Ok(serde_json::from_str(&text)?)
    }

    pub fn save(&self, fleet_dir: &Path) -> Result<(), FixtureError> {
        let path = fleet_dir.join("fleet.json");
        let text = serde_json::to_string_pretty(self)? + "\n";
        crate::state::write_atomically(&path, text.as_bytes()).map_err(io(format!("writing {}", path.display())))
    }
}

/// Writes `fleetgate.toml` beside the flake: how `fleetgate deploy` recovers a
/// lab host that does not come back (the lab's power-cycle) and what makes
/// one healthy. Tests may overwrite it.
/// A lab with VMs gets VM-sized timeouts: a real boot under TCG takes a
/// minute or more.
pub fn write_deploy_config(
    fleet_dir: &Path,
    lab_root: &Path,
    lab_binary: &Path,
    vms: bool,
) -> Result<(), FixtureError> {
    // A VM's facts script forks hundreds of processes under TCG: minutes.
    let (confirm, reboot, facts) = if vms { (300, 600, "facts_timeout_secs = 300\n") } else { (60, 60, "") };
    let text = format!(
        "# Written by fleetgate-lab: how `fleetgate deploy` reaches and recovers the lab's hosts.\n\
         [deploy]\nstrategy = \"canary\"\nconfirm_timeout_secs = {confirm}\nreboot_timeout_secs = {reboot}\n\
         {facts}\n\
         [defaults]\npower_cycle = \"{} --lab {} power-cycle {{host}}\"\nhealth.units = [\"app.service\"]\n",
        lab_binary.display(),
        lab_root.display()
    );
    let path = fleet_dir.join("fleetgate.toml");
    fs::write(&path, text).map_err(io(format!("writing {}", path.display())))
}

/// Writes the fixture flake for `state`'s hosts into `fleet_dir`.
pub fn write(fleet_dir: &Path, state: &LabState, ssh_config: &Path) -> Result<FleetKnobs, FixtureError> {
    for (name, text) in FILES {
        let path = fleet_dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io("creating the fleet directory"))?;
        }
        fs::write(&path, text).map_err(io(format!("writing {}", path.display())))?;
    }
    let (version, image) = host_kernel()?;
    write_kernel(&fleet_dir.join("kernel"), &version, &image)?;
    let knobs = FleetKnobs {
        system: "x86_64-linux".into(),
        kernel_version: version,
        nixos_release: "25.05".into(),
        hosts: state.hosts.iter().map(|h| (h.name().to_owned(), default_knobs(h, ssh_config))).collect(),
    };
    knobs.save(fleet_dir)?;
    Ok(knobs)
}

fn write_kernel(dir: &Path, version: &str, image: &Path) -> Result<(), FixtureError> {
    let source = Path::new("/lib/modules").join(version);
    let target = dir.join("lib/modules").join(version);
    fs::create_dir_all(&target).map_err(io("creating the fixture kernel"))?;
    fs::copy(image, dir.join("bzImage")).map_err(io(format!("copying {}", image.display())))?;
    for file in METADATA {
        let from = source.join(file);
        if from.exists() {
            fs::copy(&from, target.join(file)).map_err(io(format!("copying {}", from.display())))?;
        }
    }
    for module in shipped_module_files(version)? {
        let relative = module.strip_prefix(&source).unwrap_or(&module);
        let to = target.join(relative);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(io("creating the module tree"))?;
        }
        fs::copy(&module, &to).map_err(io(format!("copying {}", module.display())))?;
    }
    Ok(())
}

/// Files of [`SHIPPED_MODULES`] and everything they depend on, per kmod.
fn shipped_module_files(version: &str) -> Result<BTreeSet<PathBuf>, FixtureError> {
    let mut files = BTreeSet::new();
    for module in SHIPPED_MODULES {
        let out = process::run(
            Command::new("modprobe").args(["--config=/dev/null", "--set-version", version, "--show-depends", module]),
            TOOL_TIMEOUT,
        )?;
        for line in out.stdout.lines() {
            if let Some(path) = line.strip_prefix("insmod ") {
                files.insert(PathBuf::from(path.split_whitespace().next().unwrap_or_default()));
            }
        }
    }
    Ok(files)
}
