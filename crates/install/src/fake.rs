//! [`FakeTarget`]: a scripted target in memory, for the unit tests of every
//! exit of the protocol. It models three systems — the old OS, the
//! installer and the installed system — and what the tests script: what a
//! kexec or a reboot does, what uses the disks, what disko creates, what the
//! installed boot loader's default is, and how long each step takes. Every
//! call is logged, so a test can show a disk was never touched.

use std::collections::BTreeMap;
use std::time::Duration;

use fleetgate_check::{Decision, Report};
use fleetgate_facts::{BlockDevice, Device, DiskLink, Facts, Finding, Severity};
use fleetgate_system::RootSpec;

use crate::enrol::{EnrolFile, Enrolment, Found, ReadBack};
use crate::kexec::Nonce;
use crate::layout::Layout;
use crate::phase::Phases;
use crate::protocol::{Plan, SystemCheck};

use crate::target::{DiskUser, Health, Look, MountLine, SameBootEnds, StagedKexec, Target, TargetError, Waited};

/// What runs on the fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Running {
    /// The OS it had.
    Old,
    /// The installer fleetgate kexec'd into.
    Installer,
    /// The installed system.
    Installed,
    /// Something else (a kexec into a stale image, a reboot into the old boot loader).
    Other,
}

/// What `start_kexec` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KexecEffect {
    /// Boots the installer, with the marker.
    Boots,
    /// Returns success, and nothing happens (seed 001).
    Nothing,
    /// Boots something without the marker.
    BootsOther,
    /// Never answers again.
    Hangs,
}

/// What `reboot` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootEffect {
    /// Boots the installed system.
    Boots,
    /// Stage 1 hangs: never answers; the console shows these lines.
    Hangs(Vec<String>),
    /// Boots, but `/run/booted-system` is something else.
    BootsOther,
}

/// The scripted target.
#[derive(Debug, Clone)]
pub struct FakeTarget {
    /// What runs now.
    pub running: Running,
    /// Every call, in order (`look`, `stage_kexec`, `run_disko`, …).
    pub calls: Vec<String>,
    /// Scripted failures of a step, by call name.
    pub fail: BTreeMap<&'static str, TargetError>,
    /// How long a step takes, by call name (default 1 s).
    pub cost: BTreeMap<&'static str, Duration>,
    /// What the kexec does.
    pub kexec: KexecEffect,
    /// The installer kernel's release as its image header says.
    pub installer_kernel: Option<String>,
    /// Disk mounts the installer has (none, normally).
    pub installer_disk_mounts: Vec<MountLine>,
    /// What uses the disks.
    pub disk_users: Vec<DiskUser>,
    /// The partition labels disko creates (`disk-main-root` → `/dev/vda2`).
    pub disko_creates: Vec<(String, String, String)>,
    /// The installed boot loader's default (`None`: the installed system).
    pub boot_default: Option<Option<String>>,
    /// What the reboot does.
    pub boot: BootEffect,
    /// The installed system's health.
    pub health: Health,
    /// The old OS's facts.
    pub old_facts: Facts,
    /// Facts kept on the installer.
    pub kept: Option<Facts>,
    /// The marker `run` was given.
    pub marker: Option<String>,
    /// The system nixos-install installed.
    pub installed: Option<String>,
    /// Whether disko ran (the disks were touched).
    pub disks_written: bool,
    /// The agent's files written under `/mnt`, as they read back.
    pub enrolled: BTreeMap<String, Found>,
    /// Whether writing a file keeps only half of it (a full disk).
    pub enrol_truncates: bool,
    /// The old OS's `/sys/kernel/kexec_loaded` (the tarball's `kexec` of
    /// [`KexecEffect::Nothing`] loads nothing: `Some(false)`).
    pub old_kexec_loaded: Option<bool>,
    clock: Duration,
    boots: u32,
}

impl Default for FakeTarget {
    fn default() -> FakeTarget {
        FakeTarget::new()
    }
}

/// A device on a root chain, bound to a virtio driver.
#[must_use]
pub fn chain_device(sysfs: &str, driver: Option<&str>, module: Option<&str>) -> Device {
    Device {
        sysfs: sysfs.into(),
        subsystem: Some("virtio".into()),
        driver: driver.map(Into::into),
        module: module.map(Into::into),
        modalias: Some("virtio:d00000002v00001AF4".into()),
        devname: None,
    }
}

fn block(name: &str) -> BlockDevice {
    BlockDevice { name: name.into(), dev: None, sysfs: None }
}

impl FakeTarget {
    /// A Debian-like machine with one virtio disk `/dev/vda` (its root on
    /// `/dev/vda1`), where everything works.
    #[must_use]
    pub fn new() -> FakeTarget {
        let old_facts = Facts {
            format: 1,
            target: "ssh://root@192.0.2.10".into(),
            kernel_release: Some("6.1.0-28-amd64".into()),
            boot_id: Some("boot-1".into()),
            root_chain: vec![
                chain_device("/sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda/vda1", None, None),
                chain_device("/sys/devices/pci0000:00/0000:00:04.0/virtio1", Some("virtio_blk"), Some("virtio_blk")),
                chain_device("/sys/devices/pci0000:00/0000:00:04.0", Some("virtio-pci"), Some("virtio_pci")),
            ],
            block_devices: vec![block("vda"), block("vda1")],
            ..Facts::default()
        };
        FakeTarget {
            running: Running::Old,
            calls: Vec::new(),
            fail: BTreeMap::new(),
            cost: BTreeMap::new(),
            kexec: KexecEffect::Boots,
            installer_kernel: Some("6.12.1".into()),
            installer_disk_mounts: Vec::new(),
            disk_users: Vec::new(),
            disko_creates: vec![
                ("by-partlabel".into(), "disk-main-ESP".into(), "/dev/vda1".into()),
                ("by-partlabel".into(), "disk-main-root".into(), "/dev/vda2".into()),
            ],
            boot_default: None,
            boot: BootEffect::Boots,
            health: Health { state: "running".into(), failed_units: Vec::new() },
            old_facts,
            kept: None,
            marker: None,
            installed: None,
            disks_written: false,
            enrolled: BTreeMap::new(),
            enrol_truncates: false,
            old_kexec_loaded: Some(false),
            clock: Duration::ZERO,
            boots: 1,
        }
    }

    /// The fake already running an installer fleetgate started, with the
    /// old OS's facts kept on it (a resumed install).
    #[must_use]
    pub fn in_installer() -> FakeTarget {
        let mut t = FakeTarget::new();
        t.running = Running::Installer;
        t.boots = 2;
        t.marker = Some("fleetgate.install=00000000000000000000000000000001".into());
        t.kept = Some(t.old_facts.clone());
        t
    }

    /// Whether `name` was called.
    #[must_use]
    pub fn called(&self, name: &str) -> bool {
        self.calls.iter().any(|c| c == name)
    }

    fn step(&mut self, name: &'static str) -> Result<(), TargetError> {
        self.calls.push(name.to_owned());
        self.clock += self.cost.get(name).copied().unwrap_or(Duration::from_secs(1));
        match self.fail.get(name) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn current_look(&self) -> Look {
        let boot_id = format!("boot-{}", self.boots);
        match self.running {
            Running::Old => Look {
                boot_id,
                cmdline: "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=/dev/vda1 ro quiet".into(),
                kernel_release: "6.1.0-28-amd64".into(),
                booted_system: None,
                mounts: vec![MountLine { source: "/dev/vda1".into(), mount_point: "/".into() }],
                kexec_loaded: self.old_kexec_loaded,
            },
            Running::Installer => {
                let mut mounts = vec![
                    MountLine { source: "tmpfs".into(), mount_point: "/".into() },
                    MountLine { source: "/dev/loop0".into(), mount_point: "/nix/.ro-store".into() },
                ];
                mounts.extend(self.installer_disk_mounts.iter().cloned());
                if self.disks_written {
                    mounts.push(MountLine { source: "/dev/vda2".into(), mount_point: "/mnt".into() });
                    mounts.push(MountLine { source: "/dev/vda1".into(), mount_point: "/mnt/boot".into() });
                }
                Look {
                    boot_id,
                    cmdline: format!(
                        "init=/nix/store/i-nixos-system-installer/init console=ttyS0 {}",
                        self.marker.clone().unwrap_or_default()
                    ),
                    kernel_release: self.installer_kernel.clone().unwrap_or_else(|| "6.12.1".into()),
                    booted_system: Some("/nix/store/i-nixos-system-installer".into()),
                    mounts,
                    kexec_loaded: Some(false),
                }
            }
            Running::Installed => Look {
                boot_id,
                cmdline: format!(
                    "init={}/init root=PARTLABEL=disk-main-root",
                    self.installed.clone().unwrap_or_default()
                ),
                kernel_release: "6.12.1".into(),
                booted_system: self.installed.clone(),
                mounts: vec![MountLine { source: "/dev/vda2".into(), mount_point: "/".into() }],
                kexec_loaded: Some(false),
            },
            Running::Other => Look {
                boot_id,
                cmdline: "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=/dev/vda1".into(),
                kernel_release: "6.1.0-28-amd64".into(),
                booted_system: Some("/nix/store/o-nixos-system-other".into()),
                mounts: Vec::new(),
                kexec_loaded: None,
            },
        }
    }

    fn installer_facts(&self) -> Facts {
        let mut f = Facts {
            format: 1,
            target: self.old_facts.target.clone(),
            kernel_release: Some("6.12.1".into()),
            block_devices: vec![block("vda"), block("loop0")],
            ..Facts::default()
        };
        if self.disks_written {
            f.block_devices.extend([block("vda1"), block("vda2")]);
            for (kind, name, target) in &self.disko_creates {
                f.disk_links.push(DiskLink { kind: kind.clone(), name: name.clone(), target: target.clone() });
            }
        }
        f
    }
}

impl Target for FakeTarget {
    fn describe(&self) -> String {
        "fake".into()
    }

    fn now(&self) -> Duration {
        self.clock
    }

    fn look(&mut self, _: Duration) -> Result<Look, TargetError> {
        self.step("look")?;
        Ok(self.current_look())
    }

    fn facts(&mut self, _: Duration) -> Result<Facts, TargetError> {
        self.step("facts")?;
        Ok(match self.running {
            Running::Old => self.old_facts.clone(),
            _ => self.installer_facts(),
        })
    }

    fn keep_facts(&mut self, facts: &Facts, _: Duration) -> Result<(), TargetError> {
        self.step("keep_facts")?;
        self.kept = Some(facts.clone());
        Ok(())
    }

    fn kept_facts(&mut self, _: Duration) -> Result<Option<Facts>, TargetError> {
        self.step("kept_facts")?;
        Ok(self.kept.clone())
    }

    fn stage_kexec(&mut self, marker: &str, _: Duration) -> Result<StagedKexec, TargetError> {
        self.step("stage_kexec")?;
        self.marker = Some(marker.to_owned());
        Ok(StagedKexec { kernel_release: self.installer_kernel.clone() })
    }

    fn start_kexec(&mut self, _: Duration) -> Result<(), TargetError> {
        self.step("start_kexec")?;
        match self.kexec {
            KexecEffect::Boots => {
                self.running = Running::Installer;
                self.boots += 1;
            }
            KexecEffect::Nothing => {}
            KexecEffect::BootsOther => {
                self.running = Running::Other;
                self.boots += 1;
            }
            KexecEffect::Hangs => {
                self.running = Running::Other;
                self.boots += 1;
                self.fail.insert("wait_for_boot", TargetError::Lost("no route to host".into()));
            }
        }
        Ok(())
    }

    fn wait_for_boot(&mut self, old_boot_id: &str, same_boot_ends: SameBootEnds, timeout: Duration) -> Waited {
        if let Err(e) = self.step("wait_for_boot") {
            self.clock += timeout;
            return Waited::Unreachable(e.line());
        }
        self.calls.push(format!("wait_for_boot: {same_boot_ends:?}"));
        let look = self.current_look();
        if look.boot_id == old_boot_id {
            self.clock += if same_boot_ends.ends_with(&look) {
                Duration::from_secs(1)
            } else {
                timeout.saturating_sub(Duration::from_secs(1))
            };
            Waited::SameBoot(look)
        } else {
            Waited::NewBoot(look)
        }
    }

    fn disk_users(&mut self, _: &[String], _: Duration) -> Result<Vec<DiskUser>, TargetError> {
        self.step("disk_users")?;
        Ok(self.disk_users.clone())
    }

    fn copy_paths(&mut self, _: &[String], into_mnt: bool, _: Duration) -> Result<(), TargetError> {
        self.step(if into_mnt { "copy_system" } else { "copy_disko" })
    }

    fn run_disko(&mut self, _: &str, _: Duration) -> Result<(), TargetError> {
        self.step("run_disko")?;
        self.disks_written = true;
        Ok(())
    }

    fn install_system(&mut self, system: &str, _: Duration) -> Result<(), TargetError> {
        self.step("install_system")?;
        self.installed = Some(system.to_owned());
        Ok(())
    }

    fn installed_boot_default(&mut self, _: Duration) -> Result<Option<String>, TargetError> {
        self.step("installed_boot_default")?;
        Ok(self.boot_default.clone().unwrap_or_else(|| self.installed.clone()))
    }

    fn enrol(&mut self, files: &[EnrolFile], _: Duration) -> Result<(), TargetError> {
        self.step("enrol")?;
        for file in files {
            let mut written = file.clone();
            if self.enrol_truncates {
                written.contents.truncate(file.contents.len() / 2);
            }
            let found =
                Found { size: written.contents.len() as u64, mode: file.mode, uid: 0, sha256: written.sha256() };
            self.enrolled.insert(file.path.clone(), found);
        }
        Ok(())
    }

    fn read_back_enrolled(&mut self, files: &[EnrolFile], _: Duration) -> Result<Vec<ReadBack>, TargetError> {
        self.step("read_back_enrolled")?;
        Ok(files
            .iter()
            .map(|f| ReadBack { path: f.path.clone(), found: self.enrolled.get(&f.path).cloned() })
            .collect())
    }

    fn reboot(&mut self, _: Duration) -> Result<(), TargetError> {
        self.step("reboot")?;
        self.boots += 1;
        match &self.boot {
            BootEffect::Boots => self.running = Running::Installed,
            BootEffect::BootsOther => self.running = Running::Other,
            BootEffect::Hangs(_) => {
                self.running = Running::Other;
                self.fail.insert("wait_for_boot", TargetError::Lost("connection timed out".into()));
            }
        }
        Ok(())
    }

    fn health(&mut self, _: Duration) -> Result<Health, TargetError> {
        self.step("health")?;
        Ok(self.health.clone())
    }

    fn console_tail(&mut self) -> Vec<String> {
        self.calls.push("console_tail".into());
        if self.kexec == KexecEffect::Hangs {
            return vec!["kexec_core: Starting new kernel".into()];
        }
        match &self.boot {
            BootEffect::Hangs(lines) => lines.clone(),
            _ => vec!["<<< NixOS Stage 2 >>>".into()],
        }
    }
}

/// The system toplevel of [`plan`].
pub const SYSTEM: &str = "/nix/store/s-nixos-system-web1-25.05";

/// The system of the tests, its check scripted: findings by whether the
/// facts are the old OS's (pre-flight) or the installer's (install's second
/// check).
pub struct FakeSystem {
    /// The findings of the pre-flight check.
    pub preflight: Vec<Finding>,
    /// The findings of the install phase's check.
    pub installed: Vec<Finding>,
    /// The block devices its fstab needs.
    pub needed: Vec<(String, RootSpec)>,
}

impl Default for FakeSystem {
    fn default() -> FakeSystem {
        FakeSystem {
            preflight: Vec::new(),
            installed: Vec::new(),
            needed: vec![
                ("/".into(), RootSpec::parse("/dev/disk/by-partlabel/disk-main-root")),
                ("/boot".into(), RootSpec::parse("/dev/disk/by-partlabel/disk-main-ESP")),
            ],
        }
    }
}

impl SystemCheck for FakeSystem {
    fn check(&self, facts: &Facts, _: Duration) -> Report {
        let findings = if facts.disk_links.is_empty() { self.preflight.clone() } else { self.installed.clone() };
        let blocked = findings.iter().any(|f| f.severity == Severity::Error);
        Report {
            format: 1,
            target: facts.target.clone(),
            system: SYSTEM.into(),
            current: None,
            booted: None,
            decision: if blocked { Decision::Blocked } else { Decision::Boot },
            next_step: String::new(),
            closure: None,
            findings,
        }
    }

    fn needed_devices(&self) -> Vec<(String, RootSpec)> {
        self.needed.clone()
    }
}

/// The disko layout of [`plan`]: `/dev/vda` with an ESP and a root labelled `nixos`.
pub const LAYOUT: &str = r#"{"main":{"device":"/dev/vda","partitions":{
    "ESP":{"type":"filesystem","format":"vfat","mountpoint":"/boot"},
    "root":{"type":"filesystem","format":"ext4","mountpoint":"/","extraArgs":["-L","nixos"]}}}}"#;

/// A plan to install [`SYSTEM`] with [`LAYOUT`] on `ssh://root@192.0.2.10`,
/// the default deadlines, a fixed nonce, and these `--phases`.
///
/// # Panics
/// When `phases` is not a valid `--phases` value (a test's mistake).
#[must_use]
pub fn plan(phases: &str) -> Plan {
    Plan {
        flake: ".#web1".into(),
        target: "ssh://root@192.0.2.10".into(),
        system: SYSTEM.into(),
        disko_script: "/nix/store/d-disko".into(),
        layout: Layout::parse(LAYOUT).expect("layout"),
        phases: Phases::parse(phases).expect("phases"),
        deadlines: Plan::default_deadlines(),
        nonce: Nonce::parse("0123456789abcdef0123456789abcdef").expect("nonce"),
        enrol: Enrolment::default(),
    }
}
