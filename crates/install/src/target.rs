//! [`Target`]: what the install protocol needs from the machine it installs,
//! and nothing else (as `fleetgate-apply`'s `Machine`, colmena's `Host`).
//! [`crate::ssh::SshTarget`] implements it over OpenSSH;
//! [`crate::fake::FakeTarget`] in memory, scripted, for the unit tests of
//! every exit.

use std::time::Duration;

use fleetgate_facts::Facts;
use serde::{Deserialize, Serialize};

use crate::enrol::{EnrolFile, ReadBack};

/// What a step on the target can end with, besides success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The target could not be reached, or the call timed out: the step may
    /// or may not have run.
    #[error("lost contact with the target: {0}")]
    Lost(String),
    /// The step ran and failed.
    #[error("{0}")]
    Failed(String),
    /// The step cannot be done at all here (a missing tool, a tarball in an
    /// unknown format): nothing was changed.
    #[error("{0}")]
    Cannot(String),
}

impl TargetError {
    /// The message's first line.
    #[must_use]
    pub fn line(&self) -> String {
        self.to_string().lines().next().unwrap_or_default().to_owned()
    }
}

/// One mount, as `/proc/self/mounts` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountLine {
    /// The source (`/dev/vda1`, `tmpfs`).
    pub source: String,
    /// Where it is mounted.
    pub mount_point: String,
}

/// One look at what runs on the target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Look {
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// `/proc/cmdline`.
    pub cmdline: String,
    /// `uname -r`.
    pub kernel_release: String,
    /// `/run/booted-system`, when there is one.
    pub booted_system: Option<String>,
    /// Every mount.
    pub mounts: Vec<MountLine>,
    /// `/sys/kernel/kexec_loaded`: whether a kernel is loaded for `kexec -e`
    /// (`None`: the kernel has no such file, or it could not be read).
    #[serde(default)]
    pub kexec_loaded: Option<bool>,
}

/// When a wait for the next boot may end, with the old boot still
/// answering, before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameBootEnds {
    /// Only at the deadline (a reboot: the old system answers until it is
    /// down).
    AtDeadline,
    /// As soon as the old boot answers with no kernel loaded for kexec
    /// (`/sys/kernel/kexec_loaded` is 0). Only after a `run` that returned:
    /// nixos-images' `kexec-run.sh` loads the installer (`kexec --load`)
    /// before it returns and only then starts `sleep 6; kexec -e` in the
    /// background, which with nothing loaded boots nothing — the old OS
    /// stays (seed 001: a tarball whose `kexec` reports success and does
    /// nothing), and waiting out the deadline would only delay saying so.
    NothingLoadedForKexec,
}

impl SameBootEnds {
    /// Whether `look`, an answer of the old boot, ends the wait now.
    #[must_use]
    pub fn ends_with(self, look: &Look) -> bool {
        self == SameBootEnds::NothingLoadedForKexec && look.kexec_loaded == Some(false)
    }
}

/// What a wait for the next boot found at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// The target answered with another boot id.
    NewBoot(Look),
    /// At the deadline the target still answered with the old boot id.
    SameBoot(Look),
    /// At the deadline the target did not answer (the last error).
    Unreachable(String),
}

/// Something that uses a block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DiskUse {
    /// It is mounted there.
    Mounted {
        /// The mount point.
        mount_point: String,
    },
    /// It is swapped on.
    Swap,
    /// A device-mapper or md device holds it (`holders/` in sysfs).
    Holder {
        /// The holder's kernel name (`dm-0`, `md127`).
        holder: String,
        /// Its name, when it has one (`vg-root`, `md/root`).
        name: Option<String>,
    },
}

/// A block device of a target disk, and what uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUser {
    /// The device (`/dev/vda1`).
    pub device: String,
    /// What uses it.
    #[serde(flatten)]
    pub user: DiskUse,
}

impl DiskUser {
    /// One line naming the device and its user.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.user {
            DiskUse::Mounted { mount_point } => format!("{} is mounted at {mount_point}", self.device),
            DiskUse::Swap => format!("{} is in use as swap", self.device),
            DiskUse::Holder { holder, name } => match name {
                Some(n) => format!("{} is held by {holder} ({n})", self.device),
                None => format!("{} is held by {holder}", self.device),
            },
        }
    }
}

/// What the installed system's health check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `systemctl is-system-running --wait`: `running`, `degraded`, …
    pub state: String,
    /// Failed units, when there are any.
    pub failed_units: Vec<String>,
}

impl Health {
    /// Whether the system came up without failed units.
    #[must_use]
    pub fn healthy(&self) -> bool {
        self.state == "running" && self.failed_units.is_empty()
    }
}

/// What the kexec tarball was, once unpacked on the target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedKexec {
    /// The installer kernel's release, from its image header (`None`:
    /// the header does not say).
    pub kernel_release: Option<String>,
}

/// The operations the install protocol needs on the target. Every call
/// takes the time it may use; none may take longer.
pub trait Target {
    /// `ssh://root@192.0.2.10`, for messages.
    fn describe(&self) -> String;
    /// Time since the install began (the fake's clock moves only when a
    /// step says so).
    fn now(&self) -> Duration;
    /// One look at what runs.
    ///
    /// # Errors
    /// [`TargetError`].
    fn look(&mut self, timeout: Duration) -> Result<Look, TargetError>;
    /// The facts of the running OS (`fleetgate-facts`).
    ///
    /// # Errors
    /// [`TargetError`].
    fn facts(&mut self, timeout: Duration) -> Result<Facts, TargetError>;
    /// Keeps the pre-flight facts of the old OS on the installer (its tmpfs),
    /// for a resumed install to judge the hardware by.
    ///
    /// # Errors
    /// [`TargetError`].
    fn keep_facts(&mut self, facts: &Facts, timeout: Duration) -> Result<(), TargetError>;
    /// The facts kept by [`Target::keep_facts`], if any.
    ///
    /// # Errors
    /// [`TargetError`].
    fn kept_facts(&mut self, timeout: Duration) -> Result<Option<Facts>, TargetError>;
    /// Puts the kexec tarball on the target, unpacked, its `run` set to add
    /// `marker` to the installer's kernel command line. Changes no disk but
    /// the directory it unpacks into.
    ///
    /// # Errors
    /// [`TargetError`].
    fn stage_kexec(&mut self, marker: &str, timeout: Duration) -> Result<StagedKexec, TargetError>;
    /// Runs the staged `run` (which loads the installer and kexecs into it
    /// in the background a few seconds later).
    ///
    /// # Errors
    /// [`TargetError`] (`Lost` is expected when the kexec is quick).
    fn start_kexec(&mut self, timeout: Duration) -> Result<(), TargetError>;
    /// Waits, at most `timeout`, for the target to answer with a boot id
    /// other than `old_boot_id`; `same_boot_ends` says whether an answer of
    /// the old boot may end the wait sooner.
    fn wait_for_boot(&mut self, old_boot_id: &str, same_boot_ends: SameBootEnds, timeout: Duration) -> Waited;
    /// Everything that uses the block devices of `disks` (`/dev/vda`), or
    /// their partitions.
    ///
    /// # Errors
    /// [`TargetError`].
    fn disk_users(&mut self, disks: &[String], timeout: Duration) -> Result<Vec<DiskUser>, TargetError>;
    /// Copies store paths (with their closures) to the target's store: the
    /// disko script to the installer's, the system to `/mnt`'s.
    ///
    /// # Errors
    /// [`TargetError`].
    fn copy_paths(&mut self, paths: &[String], into_mnt: bool, timeout: Duration) -> Result<(), TargetError>;
    /// Runs the disko script (destroys, partitions, formats, mounts at `/mnt`).
    ///
    /// # Errors
    /// [`TargetError`].
    fn run_disko(&mut self, script: &str, timeout: Duration) -> Result<(), TargetError>;
    /// `nixos-install --system SYSTEM` into `/mnt` (profile and boot loader).
    ///
    /// # Errors
    /// [`TargetError`].
    fn install_system(&mut self, system: &str, timeout: Duration) -> Result<(), TargetError>;
    /// The system the installed boot loader boots by default, read from its
    /// files under `/mnt` (`None`: no entry is the default).
    ///
    /// # Errors
    /// [`TargetError`].
    fn installed_boot_default(&mut self, timeout: Duration) -> Result<Option<String>, TargetError>;
    /// Writes the agent's files into the installed system's root (`/mnt`),
    /// owned by root, each with its mode ([`crate::enrol`]).
    ///
    /// # Errors
    /// [`TargetError`].
    fn enrol(&mut self, files: &[EnrolFile], timeout: Duration) -> Result<(), TargetError>;
    /// What those files are under `/mnt`, read back.
    ///
    /// # Errors
    /// [`TargetError`].
    fn read_back_enrolled(&mut self, files: &[EnrolFile], timeout: Duration) -> Result<Vec<ReadBack>, TargetError>;
    /// Unmounts `/mnt` and reboots.
    ///
    /// # Errors
    /// [`TargetError`] (`Lost` is expected).
    fn reboot(&mut self, timeout: Duration) -> Result<(), TargetError>;
    /// The booted system's health.
    ///
    /// # Errors
    /// [`TargetError`].
    fn health(&mut self, timeout: Duration) -> Result<Health, TargetError>;
    /// The last lines of the target's console, when fleetgate can see it.
    fn console_tail(&mut self) -> Vec<String>;
}
