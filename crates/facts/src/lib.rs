//! `fleetgate-facts`: what fleetgate knows about a host, gathered in one
//! round trip by a POSIX `sh` script ([`SCRIPT`]) — no agent, nothing
//! installed, nothing written on the host.
//!
//! [`collect`] runs the script through any [`Transport`] (this machine or
//! `ssh`), [`parse`] turns its output into [`Facts`], a serde type whose
//! JSON form is stable (`format` = [`FORMAT`]; fields are only ever added).
//!
//! What is gathered: the root file system's mount (device number, type,
//! source) → its block device in sysfs → every ancestor device with its
//! `modalias`, bound driver, the driver's module (basename of
//! `driver/module`) and subsystem. NVMe native multipath is followed: a
//! namespace hangs off `/sys/devices/virtual/nvme-subsystem/nvme-subsysN`,
//! whose `nvmeN` links lead to the controllers and from there to their PCI
//! functions; stacked devices (`slaves/` of dm and md) are followed too.
//! Then: every block device, every `/dev/disk/by-*` link, `blkid`'s view of
//! labels and UUIDs, the kernel release, `boot_id`, `/run/current-system`
//! and `/run/booted-system` (their component links and small files, so a
//! check can compare against them without the store paths), the system
//! profile's generations, the boot loader (systemd-boot entries,
//! `loader.conf`, the `LoaderEntry*` EFI variables; or GRUB's `grub.cfg`
//! entries and `grubenv`), UEFI or BIOS, free space on `/nix`, memory.
//!
//! Nothing missing is fatal: an absent tool or file leaves the field
//! unknown (`null` / empty) and adds a [`Finding`] saying so.

mod parse;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fleetgate_transport::Transport;
use serde::{Deserialize, Serialize};

/// The transport's error, inside [`FactsError::Transport`].
pub use fleetgate_transport::TransportError;
pub use parse::parse;

/// The facts script (POSIX `sh`, read-only). Its output format is private
/// to this crate: use [`parse`].
pub const SCRIPT: &str = include_str!("facts.sh");

/// The largest facts document [`Facts::load`] reads. A host with hundreds
/// of disks and generations writes a few hundred KiB.
pub const MAX_FACTS_DOCUMENT: fleetgate_files::Limit = fleetgate_files::Limit::new(16 << 20, "a facts document");

/// Version of the [`Facts`] JSON document.
pub const FORMAT: u32 = 1;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; changes nothing.
    Info,
    /// Something to look at; does not stop a deployment.
    Warning,
    /// The host will not boot, or it cannot be shown that it will.
    Error,
}

impl Severity {
    /// `info`, `warning`, `error`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One observation with what to do about it; shared by facts and checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable identifier, e.g. `initrd.missing-modules`.
    pub id: String,
    /// How bad it is.
    pub severity: Severity,
    /// One or two sentences for a human.
    pub message: String,
    /// The data it is based on, one item per line.
    pub evidence: Vec<String>,
    /// What to change, if there is something to change.
    pub fix: Option<String>,
}

impl Finding {
    /// A finding without evidence or fix.
    #[must_use]
    pub fn new(id: &str, severity: Severity, message: impl Into<String>) -> Finding {
        Finding { id: id.to_owned(), severity, message: message.into(), evidence: Vec::new(), fix: None }
    }

    /// Adds evidence lines.
    #[must_use]
    pub fn with_evidence<I, S>(mut self, lines: I) -> Finding
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.evidence.extend(lines.into_iter().map(Into::into));
        self
    }

    /// Sets the fix.
    #[must_use]
    pub fn with_fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = Some(fix.into());
        self
    }
}

/// Everything known about one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// [`FORMAT`].
    pub format: u32,
    /// Where the facts come from (`local`, `ssh://root@web1`).
    pub target: String,
    /// `uname -n`.
    pub hostname: Option<String>,
    /// `uname -r` of the running kernel.
    pub kernel_release: Option<String>,
    /// `/proc/sys/kernel/random/boot_id`: changes at every boot.
    pub boot_id: Option<String>,
    /// The root file system and its block device.
    pub root: Option<RootDevice>,
    /// The root block device and every ancestor in sysfs, from the device
    /// up, then the devices reached through NVMe multipath or `slaves/`.
    pub root_chain: Vec<Device>,
    /// Mounts of `/`, `/nix`, `/nix/store`, `/boot`, `/efi`, `/boot/efi`.
    pub mounts: Vec<Mount>,
    /// Every block device in `/sys/class/block`.
    pub block_devices: Vec<BlockDevice>,
    /// Every `/dev/disk/by-*` link.
    pub disk_links: Vec<DiskLink>,
    /// What `blkid` reports (`None`: blkid unavailable).
    pub block_ids: Option<Vec<BlockId>>,
    /// `/run/current-system`.
    pub current_system: Option<SystemInfo>,
    /// `/run/booted-system`.
    pub booted_system: Option<SystemInfo>,
    /// `/nix/var/nix/profiles/system-N-link`, by number.
    pub generations: Vec<Generation>,
    /// `/nix/var/nix/profiles/system`: the link it names and its target.
    pub profile: Option<Profile>,
    /// Firmware and boot loader.
    pub boot: BootInfo,
    /// Free bytes on the file system holding `/nix`.
    pub nix_free_bytes: Option<u64>,
    /// `MemTotal`, in bytes.
    pub memory_total_bytes: Option<u64>,
    /// `MemAvailable`, in bytes.
    pub memory_available_bytes: Option<u64>,
    /// Tools the script looked for and did not find.
    pub missing_tools: Vec<String>,
    /// What could not be found out, and why.
    pub findings: Vec<Finding>,
}

/// The root file system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootDevice {
    /// `major:minor` from `/proc/self/mountinfo`.
    pub dev: Option<String>,
    /// File-system type (`ext4`).
    pub fs_type: Option<String>,
    /// Mount source (`/dev/vda2`).
    pub source: Option<String>,
    /// Its sysfs directory, if found.
    pub sysfs: Option<String>,
}

/// A device on the root chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Its sysfs directory (`/sys/devices/pci0000:00/0000:00:02.0`).
    pub sysfs: String,
    /// Subsystem (`pci`, `virtio`, `block`, `nvme`, `scsi`).
    pub subsystem: Option<String>,
    /// Bound driver name (`virtio-pci`, `sd`).
    pub driver: Option<String>,
    /// The driver's module (`virtio_pci`, `sd_mod`); `None` when the driver
    /// is built into the running kernel (or nothing is bound).
    pub module: Option<String>,
    /// `modalias`.
    pub modalias: Option<String>,
    /// Device node name (`vda2`), for block devices.
    pub devname: Option<String>,
}

impl Device {
    /// The last component of the sysfs path (`0000:00:02.0`, `virtio1`).
    #[must_use]
    pub fn name(&self) -> &str {
        self.sysfs.rsplit('/').next().unwrap_or(&self.sysfs)
    }
}

/// One mount.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Mount point.
    pub mount_point: String,
    /// `major:minor`.
    pub dev: String,
    /// File-system type.
    pub fs_type: String,
    /// Source.
    pub source: String,
}

/// A block device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    /// Kernel name (`vda2`).
    pub name: String,
    /// `major:minor`.
    pub dev: Option<String>,
    /// Its sysfs directory.
    pub sysfs: Option<String>,
}

/// A `/dev/disk/by-*` link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskLink {
    /// `by-label`, `by-uuid`, `by-partlabel`, `by-partuuid`, `by-id`, `by-path`.
    pub kind: String,
    /// The link's name (udev-escaped, as in the directory).
    pub name: String,
    /// Where it resolves (`/dev/vda2`).
    pub target: String,
}

/// One device as `blkid -o export` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockId {
    /// `DEVNAME`.
    pub devname: String,
    /// The other keys (`LABEL`, `UUID`, `PARTUUID`, `PARTLABEL`, `TYPE`…).
    pub tags: BTreeMap<String, String>,
}

/// A NixOS system as seen on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// The store path.
    pub path: String,
    /// Resolved component links (`kernel`, `initrd`, `kernel-modules`,
    /// `firmware`, `systemd`).
    pub links: BTreeMap<String, String>,
    /// Small files (`kernel-params`, `init-interface-version`,
    /// `nixos-version`, `system`, `switch-inhibitors`, `boot.json`), exactly
    /// (for text files without tabs or carriage returns).
    pub files: BTreeMap<String, String>,
}

/// A system profile generation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// The generation number.
    pub number: u64,
    /// The system it points to.
    pub path: String,
}

/// The system profile link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// What `/nix/var/nix/profiles/system` names (`system-3-link`).
    pub link: String,
    /// The system it resolves to.
    pub path: String,
}

/// UEFI or BIOS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// `/sys/firmware/efi` exists.
    Uefi,
    /// It does not.
    Bios,
}

/// A boot loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loader {
    /// `loader/` on an ESP.
    SystemdBoot,
    /// `grub/grub.cfg` under `/boot`.
    Grub,
}

/// One boot menu entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootEntry {
    /// systemd-boot: the entry file name; GRUB: the menu entry title.
    pub id: String,
    /// The entry's title, if it has one.
    pub title: Option<String>,
}

/// Firmware and boot loader.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootInfo {
    /// UEFI or BIOS.
    pub firmware: Option<Firmware>,
    /// The boot loader found (systemd-boot wins if both are there).
    pub loader: Option<Loader>,
    /// systemd-boot's ESP mount point, or GRUB's `grub.cfg` path.
    pub location: Option<String>,
    /// Menu entries.
    pub entries: Vec<BootEntry>,
    /// `loader.conf` lines (systemd-boot).
    pub loader_conf: Vec<String>,
    /// `LoaderEntryOneShot`, `LoaderEntryDefault`, `LoaderEntrySelected`.
    pub efi_vars: BTreeMap<String, String>,
    /// `grubenv` variables (GRUB).
    pub grubenv: BTreeMap<String, String>,
}

impl Facts {
    /// The facts as pretty JSON (the stable document).
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
    }

    /// Reads a facts JSON document.
    ///
    /// # Errors
    /// [`FactsError::Read`] or [`FactsError::Json`].
    pub fn load(path: &Path) -> Result<Facts, FactsError> {
        let bytes = fleetgate_files::read(path, MAX_FACTS_DOCUMENT)?;
        let facts: Facts = serde_json::from_slice(&bytes)
            .map_err(|source| FactsError::Json { path: path.display().to_string(), source })?;
        if facts.format != FORMAT {
            return Err(FactsError::Format { path: path.display().to_string(), format: facts.format });
        }
        Ok(facts)
    }

    /// Kernel names of the block devices on the root chain (`vda2`, `vda`).
    #[must_use]
    pub fn root_block_names(&self) -> Vec<&str> {
        self.root_chain
            .iter()
            .filter(|d| d.subsystem.as_deref() == Some("block"))
            .filter_map(|d| d.devname.as_deref().or(Some(d.name())))
            .collect()
    }

    /// The kernel name of the block device holding `/` (`vda2`).
    #[must_use]
    pub fn root_block_name(&self) -> Option<&str> {
        self.root_block_names().first().copied()
    }

    /// Where the `/dev/disk/<kind>/<name>` link points, if it exists.
    #[must_use]
    pub fn disk_link(&self, kind: &str, name: &str) -> Option<&DiskLink> {
        self.disk_links.iter().find(|l| l.kind == kind && l.name == name)
    }
}

/// Errors of this crate. Missing data on the host is never one: it becomes
/// a [`Finding`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FactsError {
    /// The host could not be reached or the script could not run.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A target that is neither `local`, an `ssh://` URL, nor an existing
    /// file.
    #[error("`{target}` is not `local`, not an `ssh://` URL, and no such file exists")]
    NoSuchTarget {
        /// The target as given.
        target: String,
    },
    /// A facts file could not be read: it is missing, not a regular file
    /// (a FIFO, a device), or larger than [`MAX_FACTS_DOCUMENT`].
    #[error(transparent)]
    Read(#[from] fleetgate_files::ReadError),
    /// A facts file is not a facts document.
    #[error("{path} is not a fleetgate facts document")]
    Json {
        /// The file.
        path: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A facts document of another format version.
    #[error("{path} has facts format {format}; this fleetgate reads format {FORMAT}")]
    Format {
        /// The file.
        path: String,
        /// Its version.
        format: u32,
    },
}

/// Gets facts for a target as `fleetgate` takes it: `local` (this machine,
/// read live), `ssh://[user@]host[:port]` (with extra `ssh` arguments such
/// as `["-F", "ssh_config"]`), or the path of a facts JSON file.
///
/// # Errors
/// [`FactsError::Transport`] for an unreachable host or a bad `ssh://`
/// target, [`FactsError::NoSuchTarget`] for anything else that is not a
/// file, [`FactsError::Read`]/[`FactsError::Json`]/[`FactsError::Format`]
/// for a file.
pub fn from_target(target: &str, ssh_options: Vec<String>, timeout: Duration) -> Result<Facts, FactsError> {
    if target == "local" {
        return collect(&fleetgate_transport::Local, timeout);
    }
    if target.starts_with("ssh://") {
        let ssh = fleetgate_transport::Ssh::new(fleetgate_transport::SshTarget::parse(target)?, ssh_options);
        return collect(&ssh, timeout);
    }
    let path = Path::new(target);
    if !path.exists() {
        return Err(FactsError::NoSuchTarget { target: target.to_owned() });
    }
    Facts::load(path)
}

/// Runs [`SCRIPT`] on `transport` and parses what it prints.
///
/// # Errors
/// [`FactsError::Transport`] when the host is unreachable, the call times
/// out, or `sh` itself fails. A script that stops early still gives facts,
/// with a finding.
pub fn collect(transport: &dyn Transport, timeout: Duration) -> Result<Facts, FactsError> {
    let out = transport.run_script(SCRIPT, timeout)?;
    Ok(from_output(
        &transport.describe(),
        &String::from_utf8_lossy(&out.stdout),
        out.status,
        &String::from_utf8_lossy(&out.stderr),
    ))
}

/// Parses what [`SCRIPT`] printed on `target` when another script ran it
/// (the deploy runs it inside its opening round trip): `status` is its exit
/// status (`None`: cut short), `stderr` becomes the evidence of a failure.
#[must_use]
pub fn from_output(target: &str, stdout: &str, status: Option<i32>, stderr: &str) -> Facts {
    let mut facts = parse(target, stdout);
    if status != Some(0) {
        facts.findings.push(
            Finding::new(
                "facts.script-failed",
                Severity::Warning,
                format!("the facts script exited with status {status:?}; what it printed before is used"),
            )
            .with_evidence(stderr.lines().take(20).map(str::to_owned)),
        );
    }
    facts
}

/// Renders one finding for a terminal, as `fleetgate facts` and
/// `fleetgate check` show them: severity, id and message, the evidence
/// indented, then the fix.
pub fn render_finding(out: &mut String, f: &Finding) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "{:<8}{}: {}", f.severity.as_str(), f.id, f.message);
    for line in &f.evidence {
        let _ = writeln!(out, "          {line}");
    }
    if let Some(fix) = &f.fix {
        let _ = writeln!(out, "        fix: {fix}");
    }
}

/// The human form of [`Facts`].
#[must_use]
pub fn render(f: &Facts) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let unknown = "unknown";
    let gib = |b: Option<u64>| {
        #[allow(clippy::cast_precision_loss)]
        b.map_or_else(|| unknown.to_owned(), |b| format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)))
    };
    let _ = writeln!(out, "target:      {}", f.target);
    let _ = writeln!(out, "hostname:    {}", f.hostname.as_deref().unwrap_or(unknown));
    let _ = writeln!(out, "kernel:      {}", f.kernel_release.as_deref().unwrap_or(unknown));
    let _ = writeln!(out, "boot id:     {}", f.boot_id.as_deref().unwrap_or(unknown));
    match &f.root {
        Some(r) => {
            let _ = writeln!(
                out,
                "root:        {} ({}, {})",
                r.source.as_deref().unwrap_or(unknown),
                r.fs_type.as_deref().unwrap_or(unknown),
                r.dev.as_deref().unwrap_or(unknown)
            );
        }
        None => {
            let _ = writeln!(out, "root:        {unknown}");
        }
    }
    let _ = writeln!(out, "root chain:");
    for d in &f.root_chain {
        if d.subsystem.is_none() && d.driver.is_none() {
            continue;
        }
        let mut line = format!("  {} [{}]", d.name(), d.subsystem.as_deref().unwrap_or("-"));
        if let Some(driver) = &d.driver {
            let _ = write!(line, " driver {driver}");
            match &d.module {
                Some(m) => {
                    let _ = write!(line, " (module {m})");
                }
                None => line.push_str(" (built in)"),
            }
        }
        if let Some(alias) = &d.modalias {
            let _ = write!(line, " {alias}");
        }
        let _ = writeln!(out, "{line}");
    }
    if let Some(root) = f.root_block_name() {
        let names: Vec<String> = f
            .disk_links
            .iter()
            .filter(|l| l.target.rsplit('/').next() == Some(root))
            .map(|l| format!("{}/{}", l.kind, l.name))
            .collect();
        let _ = writeln!(
            out,
            "root names:  {}",
            if names.is_empty() { "(no /dev/disk links)".to_owned() } else { names.join(", ") }
        );
    }
    for (label, sys) in [("current:", &f.current_system), ("booted:", &f.booted_system)] {
        let _ = writeln!(out, "{label:<13}{}", sys.as_ref().map_or("(none: not NixOS)", |s| s.path.as_str()));
    }
    if !f.generations.is_empty() {
        let _ = writeln!(out, "generations:");
        for g in &f.generations {
            let default = f.profile.as_ref().is_some_and(|p| p.link == format!("system-{}-link", g.number));
            let _ = writeln!(out, "  {}{} {}", g.number, if default { "*" } else { " " }, g.path);
        }
    }
    let firmware = match f.boot.firmware {
        Some(Firmware::Uefi) => "UEFI",
        Some(Firmware::Bios) => "BIOS",
        None => unknown,
    };
    let loader = match f.boot.loader {
        Some(Loader::SystemdBoot) => "systemd-boot",
        Some(Loader::Grub) => "GRUB",
        None => "none found",
    };
    let _ = writeln!(
        out,
        "boot:        {firmware}, {loader}{}",
        f.boot.location.as_ref().map_or(String::new(), |l| format!(" ({l})"))
    );
    for e in &f.boot.entries {
        let _ = writeln!(out, "  entry {}", e.id);
    }
    for (k, v) in &f.boot.efi_vars {
        let _ = writeln!(out, "  efivar {k} = {v}");
    }
    for (k, v) in &f.boot.grubenv {
        let _ = writeln!(out, "  grubenv {k} = {v}");
    }
    let _ = writeln!(out, "nix free:    {}", gib(f.nix_free_bytes));
    let _ =
        writeln!(out, "memory:      {} total, {} available", gib(f.memory_total_bytes), gib(f.memory_available_bytes));
    if !f.findings.is_empty() {
        out.push('\n');
    }
    for finding in &f.findings {
        render_finding(&mut out, finding);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn error_messages_do_not_repeat_their_source() {
        let e = Facts::load(Path::new("/nonexistent/facts.json")).expect_err("no such file");
        assert_eq!(e.to_string(), "cannot read /nonexistent/facts.json");
        assert!(e.source().is_some_and(|s| s.to_string().contains("No such file")), "{e:?}");
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{").expect("write");
        let e = Facts::load(&bad).expect_err("not JSON");
        assert_eq!(e.to_string(), format!("{} is not a fleetgate facts document", bad.display()));
        assert!(e.source().is_some());
        let e = from_target("web1", Vec::new(), Duration::from_secs(1)).expect_err("not a target");
        assert!(matches!(e, FactsError::NoSuchTarget { .. }), "{e:?}");
    }

    #[test]
    fn a_facts_target_that_is_a_fifo_a_device_or_huge_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let huge = dir.path().join("huge.json");
        std::fs::File::create(&huge).and_then(|f| f.set_len(MAX_FACTS_DOCUMENT.bytes + 1)).expect("sparse file");
        let mut cases: Vec<(std::path::PathBuf, &str)> =
            fleetgate_files::testing::hostile_files(dir.path(), "facts").into();
        cases.push((huge, "is larger than 16 MiB, more than a facts document can be"));
        for (path, says) in cases {
            let e = from_target(&path.display().to_string(), Vec::new(), Duration::from_secs(1)).expect_err("refused");
            assert!(matches!(e, FactsError::Read(_)), "{e:?}");
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
