//! Issue 13's proof on a machine: `fleetgate install` against a QEMU guest
//! that boots plain Debian 12 first (Debian's kernel and initramfs,
//! systemd-boot on OVMF, Debian's systemd and sshd:
//! `fleetgate_lab::vm::debian_first`), with a kexec tarball in
//! nix-community/nixos-images' format (`fleetgate_lab::vm::kexec_tarball`).
//! fleetgate is driven only through its binary and its `--json` report;
//! what the machine is left in is read from the machine itself (its boot
//! id, its partition table, its mounts).
//!
//! The systems come from the lab's fixture flake (a netns lab only builds
//! them; its host is not used); the host's disko configuration is a small
//! flake of the test's own (`config.disko.devices.disk`, as disko's module
//! evaluates it), the built paths go in with `--store-paths`, as
//! nixos-anywhere's. Needs root, like the lab. Cost: docs/benchmarks.md.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fleetgate_lab::fixture::FleetKnobs;
use fleetgate_lab::testing::LabGuard;
use fleetgate_lab::vm::debian_first::{self, DebianFirstVm, DebianKernel, Identity};
use fleetgate_lab::vm::kexec_tarball::{self, Parts, Tool};
use fleetgate_lab::vm::{image, qemu};
use serde_json::Value;

mod support;

use support::offline;

/// How long Debian may take to boot under TCG before the test gives up.
const BOOT_DEADLINE: Duration = Duration::from_secs(600);

/// A measurement for docs/benchmarks.md, never an assertion.
fn timed<T>(what: &str, step: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = step();
    eprintln!("install_vm timing: {what}: {:.0} s", start.elapsed().as_secs_f64());
    out
}

/// The Debian-first machine, reached as `ssh://root@debian` through the
/// test's own ssh_config (its own known_hosts: the host key is pinned).
struct Machine {
    vm: DebianFirstVm,
    dir: tempfile::TempDir,
    kernel: DebianKernel,
    accel: qemu::Accel,
}

impl Machine {
    fn boot(lab: &LabGuard) -> Machine {
        let dir = tempfile::Builder::new().prefix("fleetgate-install-vm-").tempdir().expect("scratch");
        // Who owns it: scripts/test sweeps the dirs of killed tests (a 1.7 GB disk each).
        std::fs::write(dir.path().join("owner.pid"), std::process::id().to_string()).expect("owner.pid");
        let image = image::ensure(&mut |line| eprintln!("{line}")).expect("the guest image");
        let kernel = DebianKernel::of_this_machine().expect("Debian's kernel");
        let client_key = fleetgate_lab::ssh_setup::client_key(lab.dir()).expect("client key");
        let keys = dir.path().join("host-keys");
        let host_key = fleetgate_lab::ssh_setup::host_key(&keys, "debian").expect("host key");
        let id = Identity { host_name: "debian", client_key: &client_key, host_keys: &keys };
        timed("assembling the Debian disk", || {
            debian_first::assemble(dir.path(), &id, &image, &kernel).expect("the Debian disk");
        });
        let port = debian_first::free_port().expect("a port");
        std::fs::write(dir.path().join("known_hosts"), format!("fleetgate-install-vm {host_key}\n"))
            .expect("known_hosts");
        std::fs::write(
            dir.path().join("ssh_config"),
            format!(
                "Host debian\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n  \
                 UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n  HostKeyAlias fleetgate-install-vm\n  \
                 BatchMode yes\n  ConnectTimeout 10\n  LogLevel ERROR\n",
                key = lab.dir().ssh_key().display(),
                known = dir.path().join("known_hosts").display()
            ),
        )
        .expect("ssh_config");
        let accel = qemu::accel(&image::cache_dir(), &kernel.image);
        let vm = DebianFirstVm::start(dir.path(), port, accel).expect("qemu starts");
        let mut machine = Machine { vm, dir, kernel, accel };
        timed("booting Debian", || machine.wait_for_ssh());
        machine
    }

    fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.vm.console()).unwrap_or_default()
    }

    /// Runs `script` on the machine; None when ssh fails.
    fn try_sh(&self, script: &str) -> Option<String> {
        let out = Command::new("ssh")
            .arg("-F")
            .arg(self.ssh_config())
            .args(["debian", "sh", "-c"])
            .arg(fleetgate_transport::shell_quote(script))
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn sh(&self, script: &str) -> String {
        self.try_sh(script).unwrap_or_else(|| panic!("ssh debian {script:?} failed; console:\n{}", self.console()))
    }

    fn wait_for_ssh(&mut self) {
        let until = Instant::now() + BOOT_DEADLINE;
        loop {
            if self.try_sh("true").is_some() {
                return;
            }
            assert!(self.vm.running(), "QEMU ended; console:\n{}", self.console());
            assert!(Instant::now() < until, "no sshd within {BOOT_DEADLINE:?}; console:\n{}", self.console());
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// What must not change while the old OS stays untouched: the boot, the
    /// partition table, the root's mount.
    fn untouched_state(&self) -> String {
        self.sh("cat /proc/sys/kernel/random/boot_id; sfdisk --dump /dev/vda; findmnt -n -o SOURCE,FSTYPE /; ls -d /root/kexec 2>/dev/null || true")
    }

    /// `fleetgate install` against this machine, as root.
    fn install(&self, flake: &str, system: &str, disko: &str, extra: &[&str]) -> (i32, Value, String) {
        self.install_as("root", flake, system, disko, extra)
    }

    /// `fleetgate install` as `user` with the lab's installer, once more on
    /// the power-cycled old OS if the installer never answered after the
    /// kexec. That has happened once, in CI (2026-11-27, two lab tests
    /// beside the TCG guest), and not in ten kexecs here since: fleetgate's
    /// side of it — state unknown, nothing after the kexec done, the
    /// console's tail in the report — is asserted, the console printed, and
    /// the machine (its disk untouched by the kexec phase) tried again.
    fn install_through_the_installer(
        &mut self,
        user: &str,
        flake: &str,
        system: &str,
        disko: &str,
        extra: &[&str],
    ) -> (i32, Value, String) {
        let (code, report, stderr) = self.install_as(user, flake, system, disko, extra);
        let hung = phase(&report, "kexec")["result"] == "failed" && report["standing"] == "unknown";
        if !hung {
            return (code, report, stderr);
        }
        assert_eq!(code, 3, "state unknown: {report:#}");
        assert_eq!(phase(&report, "disko")["result"], "not-reached", "{report:#}");
        assert!(report["console_tail"].as_array().is_some_and(|t| !t.is_empty()), "the console's tail: {report:#}");
        eprintln!(
            "install_vm: the installer did not answer after the kexec (reported unknown, as it must be); console:\n{}\n\
             install_vm: power-cycling the old OS and trying once more",
            self.console()
        );
        self.vm.power_cycle(self.dir.path(), self.accel).expect("QEMU starts again");
        timed("booting Debian again", || self.wait_for_ssh());
        self.install_as(user, flake, system, disko, extra)
    }

    /// `fleetgate install` against this machine as `user` (`ssh://user@debian`).
    fn install_as(&self, user: &str, flake: &str, system: &str, disko: &str, extra: &[&str]) -> (i32, Value, String) {
        let target = format!("ssh://{user}@debian");
        let ssh_config = self.ssh_config().display().to_string();
        let console = self.vm.console().display().to_string();
        let mut args = vec![
            "install",
            flake,
            "--target",
            &target,
            "--ssh-config",
            &ssh_config,
            "--store-paths",
            disko,
            system,
            "--console-log",
            &console,
            "--json",
        ];
        args.extend_from_slice(extra);
        let run = offline(&args);
        eprintln!("fleetgate install stderr:\n{}", run.stderr);
        let report = run.json();
        (run.code, report, run.stderr)
    }
}

/// The host's disko configuration as disko's module evaluates it: one disk,
/// the one Debian booted from (as nixos-anywhere installs), the ESP and the
/// root labelled as the fixture's fstab names them.
const DISKO_JSON: &str = r#"{
  "main": {
    "device": "/dev/vda",
    "type": "disk",
    "content": {
      "type": "gpt",
      "partitions": {
        "ESP": { "size": "128M", "type": "EF00",
                 "content": { "type": "filesystem", "format": "vfat", "mountpoint": "/boot", "extraArgs": ["-n", "boot"] } },
        "root": { "size": "100%",
                  "content": { "type": "filesystem", "format": "ext4", "mountpoint": "/", "extraArgs": ["-L", "NIXOS_ROOT"] } }
      }
    }
  }
}"#;

/// disko's script for [`DISKO_JSON`] (`config.system.build.diskoScript`'s
/// interface: no arguments, leaves the new system's file systems under `/mnt`).
const DISKO_SCRIPT: &str = r#"#!/bin/sh
set -eux
sfdisk --wipe always --wipe-partitions always /dev/vda <<EOF
label: gpt
start=1MiB, size=128MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=disk-main-ESP
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=disk-main-root
EOF
udevadm settle --timeout=60 || true
mkfs.vfat -n boot /dev/disk/by-partlabel/disk-main-ESP
mkfs.ext4 -q -F -L NIXOS_ROOT /dev/disk/by-partlabel/disk-main-root
mkdir -p /mnt
mount /dev/disk/by-partlabel/disk-main-root /mnt
mkdir -p /mnt/boot
mount -o umask=0077 /dev/disk/by-partlabel/disk-main-ESP /mnt/boot
"#;

/// The test's host flake (the layout) and the disko script in the store.
fn host_flake(dir: &Path) -> (String, String) {
    let flake = dir.join("host-flake");
    std::fs::create_dir_all(&flake).expect("flake dir");
    std::fs::write(flake.join("disko.json"), DISKO_JSON).expect("disko.json");
    std::fs::write(
        flake.join("flake.nix"),
        "{\n  outputs = { self }: {\n    nixosConfigurations.web1.config.disko.devices.disk =\n      builtins.fromJSON (builtins.readFile ./disko.json);\n  };\n}\n",
    )
    .expect("flake.nix");
    let script = dir.join("disko-web1");
    std::fs::write(&script, DISKO_SCRIPT).expect("disko script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = Command::new("nix-store").arg("--add").arg(&script).output().expect("nix-store --add");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (format!("{}#web1", flake.display()), String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A fixture system for `web1` with these initrd modules.
fn system_with_modules(lab: &LabGuard, modules: &[String]) -> String {
    let fleet = lab.fleet_dir();
    let mut knobs = FleetKnobs::load(&fleet).expect("knobs");
    let web1 = knobs.hosts.get_mut("web1").expect("web1");
    web1.available_kernel_modules = modules.to_vec();
    web1.revision += 1;
    knobs.save(&fleet).expect("save knobs");
    lab.build(&["web1"]).expect("build").remove("web1").expect("web1 built")
}

/// A tarball of nixos-images' shape whose `kexec` reports success and does
/// nothing: the machine never leaves the old OS (seed 001).
fn kexec_that_does_nothing(machine: &Machine) -> PathBuf {
    let out = machine.dir.path().join("kexec-does-nothing.tar.gz");
    let parts = Parts {
        bzimage: &machine.kernel.image,
        initrd: &machine.kernel.initrd,
        kexec: Tool::Script("#!/bin/sh\nexit 0\n".into()),
        ip: Tool::Bundled { root: "/".into(), binary: "/usr/sbin/ip".into() },
        init: "/init",
        kernel_params: "console=ttyS0",
    };
    kexec_tarball::write(&out, machine.dir.path(), &parts).expect("tarball");
    out
}

/// The initrd modules a `--generate-hardware-config` report names.
fn report_modules(report: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(report).expect("the hardware report was written");
    assert!(text.contains("\"virtio_blk\""), "{text}");
    text.split('"')
        .skip(1)
        .step_by(2)
        .filter(|m| m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_owned)
        .collect()
}

/// `boot.initrd.postDeviceCommands` that wait for a disk this machine does
/// not have (a pool's second disk, say), printing what NixOS's stage 1
/// prints while it waits: the first boot hangs in stage 1, which no check of
/// the system against the hardware can foresee.
const STAGE1_HANG: &str = "while [ ! -e /dev/disk/by-id/virtio-fleetgate-data ]; do
  \
    echo 'waiting for device /dev/disk/by-id/virtio-fleetgate-data to appear...'
  sleep 5
done";

/// The kexec installer the lab builds from Debian packages (cached).
fn installer(machine: &Machine) -> String {
    let tarball = timed("the kexec installer (cached after the first build)", || {
        fleetgate_lab::vm::kexec_installer::ensure(&machine.kernel, &mut |l| eprintln!("{l}")).expect("installer")
    });
    tarball.display().to_string()
}

fn finding<'a>(report: &'a Value, id: &str) -> Option<&'a Value> {
    report["findings"].as_array()?.iter().find(|f| f["id"] == id)
}

fn phase<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["phases"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["phase"] == name))
        .unwrap_or_else(|| panic!("no phase {name} in {report:#}"))
}

/// On one booted Debian, before anything may touch it: seed 000 (an initrd
/// without the disk's drivers is refused at pre-flight; the hardware report
/// names them, and the system built with it passes), then seed 001 (a kexec
/// that reports success and does nothing is detected). Both leave the old
/// OS as it was: same boot, same partition table, same root.
#[test]
fn install_vm_refusals_leave_the_old_os_untouched() {
    let lab = LabGuard::up(&["web1=virtio,systemd-boot"]).expect("a lab to build the fixture");
    let mut machine = Machine::boot(&lab);
    let (flake, disko) = host_flake(machine.dir.path());
    let before = machine.untouched_state();
    let noop = kexec_that_does_nothing(&machine);
    let noop_arg = noop.display().to_string();

    // Seed 000: the refactor dropped the virtio drivers from the initrd.
    let driverless = system_with_modules(&lab, &["ahci".into(), "nvme".into(), "sd_mod".into()]);
    let hw = machine.dir.path().join("hardware.nix");
    let hw_arg = hw.display().to_string();
    // As a login user who is not root (nixos-anywhere's sudo path).
    let (code, report, _) = timed("install, seed 000 (pre-flight refusal, as admin through sudo)", || {
        let extra = ["--kexec", &noop_arg, "--generate-hardware-config", &hw_arg];
        machine.install_as(debian_first::SUDO_USER, &flake, &driverless, &disko, &extra)
    });
    assert_eq!(code, 1, "refused, state known: {report:#}");
    assert_eq!(report["outcome"], "refused", "{report:#}");
    assert_eq!(report["standing"], "old-os-untouched", "{report:#}");
    assert_eq!(phase(&report, "pre-flight")["result"], "refused", "{report:#}");
    assert_eq!(phase(&report, "kexec")["result"], "not-reached", "{report:#}");
    let missing = finding(&report, "initrd.missing-modules").unwrap_or_else(|| panic!("no finding: {report:#}"));
    assert!(missing["message"].as_str().unwrap_or_default().contains("virtio_blk"), "{missing:#}");
    assert_eq!(machine.untouched_state(), before, "seed 000 touched the machine");
    // Its facts were read as root: through sudo, as sudo's own log says.
    let sudo_log = machine.sh("journalctl -q -o cat _COMM=sudo");
    let user = debian_first::SUDO_USER;
    assert!(sudo_log.lines().any(|l| l.contains(&format!("{user} : ")) && l.contains("USER=root")), "{sudo_log}");

    // The hardware report names the disk chain's drivers; built with them,
    // the system passes pre-flight.
    let modules = report_modules(&hw);
    let with_report = system_with_modules(&lab, &modules);

    // Seed 001: the kexec "succeeds" and the machine stays in Debian. Its
    // `kexec` loaded nothing (/sys/kernel/kexec_loaded is 0): said as soon
    // as the old OS answers, not at the phase's deadline (here 300 s).
    let (code, report, _) = timed("install, seed 001 (kexec that does nothing)", || {
        machine.install(&flake, &with_report, &disko, &["--kexec", &noop_arg, "--phase-timeout", "kexec=300"])
    });
    assert_eq!(phase(&report, "pre-flight")["result"], "proven", "the hardware report's modules pass: {report:#}");
    assert_eq!(code, 1, "failed, state known: {report:#}");
    assert_eq!(report["outcome"], "failed", "{report:#}");
    assert_eq!(report["standing"], "old-os-untouched", "{report:#}");
    let kexec = phase(&report, "kexec");
    assert_eq!(kexec["result"], "failed", "{report:#}");
    assert!(kexec["error"].as_str().unwrap_or_default().contains("/sys/kernel/kexec_loaded is 0"), "{kexec:#}");
    assert!(kexec["seconds"].as_u64().is_some_and(|s| s < 150), "not the deadline: {kexec:#}");
    assert_eq!(phase(&report, "disko")["result"], "not-reached", "{report:#}");
    // Its run did stage and run (the tarball is under /root/kexec) and
    // nothing else changed.
    let after = machine.untouched_state();
    assert_eq!(after.replace("/root/kexec\n", ""), before, "seed 001 touched the disks or rebooted");

    // A full install whose first boot hangs in stage 1: every phase before
    // the reboot proven, then no answer by the reboot's deadline: state
    // unknown (exit 3), the stage-1 lines from the serial console in the
    // report, and what to do next.
    let tarball = installer(&machine);
    let hang = vm_system(&lab, |web1| STAGE1_HANG.clone_into(&mut web1.initrd_post_device_commands));
    let (code, report, _) = timed("install, first boot hangs in stage 1 (reboot deadline 150 s)", || {
        let extra = ["--kexec", &tarball, "--phase-timeout", "reboot=150"];
        machine.install_through_the_installer("root", &flake, &hang, &disko, &extra)
    });
    assert_eq!(code, 3, "state unknown: {report:#}\nconsole:\n{}", machine.console());
    assert_eq!(report["outcome"], "unknown", "{report:#}");
    assert_eq!(report["standing"], "unknown", "{report:#}");
    for proven in ["pre-flight", "kexec", "disko", "install"] {
        assert_eq!(phase(&report, proven)["result"], "proven", "{proven}: {report:#}");
    }
    assert_eq!(phase(&report, "reboot")["result"], "failed", "{report:#}");
    let tail = report["console_tail"].as_array().map(|l| l.iter().filter_map(Value::as_str).collect::<Vec<_>>());
    let tail = tail.unwrap_or_default().join("\n");
    assert!(tail.contains("waiting for device /dev/disk/by-id/virtio-fleetgate-data to appear"), "{report:#}");
    assert!(report["next_step"].as_str().unwrap_or_default().contains("console"), "{report:#}");
    assert!(machine.try_sh("true").is_none(), "the hung machine answered");
    drop(machine);
    assert_eq!(lab.down().expect("lab down"), Vec::<String>::new());
}

/// The fixture's `web1` as a system for this machine: the VM's serial
/// console and the guest's real systemd tools, `/boot` on the FAT ESP.
fn vm_system(lab: &LabGuard, mutate: impl FnOnce(&mut fleetgate_lab::fixture::HostKnobs)) -> String {
    let fleet = lab.fleet_dir();
    let mut knobs = FleetKnobs::load(&fleet).expect("knobs");
    let web1 = knobs.hosts.get_mut("web1").expect("web1");
    for param in std::iter::once(fleetgate_lab::fixture::SERIAL_KERNEL_PARAM)
        .chain(fleetgate_lab::fixture::VM_SPEED_KERNEL_PARAMS)
    {
        if !web1.kernel_params.iter().any(|p| p == param) {
            web1.kernel_params.push(param.to_owned());
        }
    }
    web1.system_tools = fleetgate_lab::fixture::VM_SYSTEM_TOOLS.iter().map(|t| (*t).to_owned()).collect();
    web1.esp_fs_type = Some("vfat".into());
    web1.loader_timeout = 1;
    mutate(web1);
    web1.revision += 1;
    knobs.save(&fleet).expect("save knobs");
    lab.build(&["web1"]).expect("build").remove("web1").expect("web1 built")
}

/// The kexec into the lab's installer (nixos-images' format, built from
/// Debian packages) proven, with the same host key answering after it (the
/// test pins it); a partition mounted in the installer refuses disko,
/// naming the mount, disks untouched; then disko, an install cut short by
/// its deadline (disks written, resume `--phases install,reboot`), the
/// resumed install and the first boot, each proven, and `fleetgate facts`
/// on the installed system.
#[test]
fn install_vm_kexec_mounted_disk_then_full_install() {
    let lab = LabGuard::up(&["web1=virtio,systemd-boot"]).expect("a lab to build the fixture");
    let mut machine = Machine::boot(&lab);
    let tarball_arg = installer(&machine);
    let (flake, disko) = host_flake(machine.dir.path());
    let system = vm_system(&lab, |_| {});
    let old_boot = machine.sh("cat /proc/sys/kernel/random/boot_id");

    // nixos-anywhere's non-root path: pre-flight and the kexec as `admin`
    // through sudo. Root's own key is gone first, so the installer's root
    // answers only because `run`, started through sudo, carried
    // $SUDO_USER's keys (nixos-images' kexec-run.sh); the hardware report is
    // written for seed 000's fix.
    machine.sh("rm /root/.ssh/authorized_keys");
    let hw = machine.dir.path().join("hardware.nix");
    let hw_arg = hw.display().to_string();
    let (code, report, _) = timed("install --phases kexec (as admin through sudo)", || {
        let extra = ["--kexec", &tarball_arg, "--phases", "kexec", "--generate-hardware-config", &hw_arg];
        machine.install_through_the_installer(debian_first::SUDO_USER, &flake, &system, &disko, &extra)
    });
    assert_eq!(code, 0, "{report:#}\nconsole:\n{}", machine.console());
    assert_eq!(phase(&report, "pre-flight")["result"], "proven", "{report:#}");
    assert_eq!(phase(&report, "kexec")["result"], "proven", "{report:#}");
    assert_eq!(report["standing"], "installer-disks-untouched", "{report:#}");
    let installer = machine.sh("cat /proc/sys/kernel/random/boot_id; cat /proc/cmdline; hostname");
    assert_ne!(installer.lines().next(), old_boot.lines().next(), "a new boot");
    assert!(installer.contains("fleetgate.install="), "{installer}");
    assert!(installer.contains("nixos-installer"), "the installer answers, with the old OS's host key: {installer}");

    // Seed 000's fix: the system built with the hardware report's modules
    // is the one installed and booted below.
    let fixed = vm_system(&lab, |web1| web1.available_kernel_modules = report_modules(&hw));
    assert_ne!(fixed, system, "the report's modules make another initrd");
    let system = fixed;
    let before = machine.sh("sfdisk --dump /dev/vda");

    // Something mounts a partition of the target disk: disko refuses.
    machine.sh("mkdir -p /mnt/old && mount -o ro /dev/vda2 /mnt/old");
    let (code, report, _) = timed("install --phases disko,install,reboot (mounted)", || {
        machine.install(&flake, &system, &disko, &["--phases", "disko,install,reboot"])
    });
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["outcome"], "refused", "{report:#}");
    assert_eq!(report["standing"], "installer-disks-untouched", "{report:#}");
    let users = report["disk_users"].to_string();
    assert!(users.contains("/dev/vda2") && users.contains("/mnt/old"), "{users}");
    assert!(phase(&report, "disko")["error"].as_str().unwrap_or_default().contains("/mnt/old"), "{report:#}");
    assert_eq!(machine.sh("sfdisk --dump /dev/vda"), before, "the refused disko touched the disk");
    machine.sh("umount /mnt/old && rmdir /mnt/old");

    // The install proper, resumed from disko, interrupted: the install
    // phase's deadline passes during the closure copy.
    let (code, report, _) = timed("install --phases disko,install,reboot (install cut at 5 s)", || {
        machine.install(&flake, &system, &disko, &["--phases", "disko,install,reboot", "--phase-timeout", "install=5"])
    });
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(phase(&report, "disko")["result"], "proven", "{report:#}");
    assert_eq!(phase(&report, "install")["result"], "failed", "{report:#}");
    assert_eq!(report["standing"], "disks-written", "{report:#}");
    let resume = report["resume"].as_str().unwrap_or_default().to_owned();
    assert!(resume.ends_with("--phases install,reboot"), "{resume}");

    // The resume command's phases finish it.
    let (code, report, _) = timed("install --phases install,reboot (resumed)", || {
        machine.install(&flake, &system, &disko, &["--phases", "install,reboot"])
    });
    assert_eq!(code, 0, "{report:#}\nconsole:\n{}", machine.console());
    assert_eq!(report["outcome"], "installed", "{report:#}");
    assert_eq!(report["standing"], "booted", "{report:#}");
    let booted = machine.sh("readlink -f /run/booted-system");
    assert_eq!(booted.trim(), system, "the installed system booted");
    let facts = offline(&[
        "facts",
        "--target",
        "ssh://root@debian",
        "--ssh-config",
        &machine.ssh_config().display().to_string(),
        "--timeout",
        "300",
        "--json",
    ]);
    assert_eq!(facts.code, 0, "{}{}", facts.stdout, facts.stderr);
    assert_eq!(facts.json()["booted_system"]["path"], system.as_str(), "{}", facts.stdout);
    drop(machine);
    assert_eq!(lab.down().expect("lab down"), Vec::<String>::new());
}
