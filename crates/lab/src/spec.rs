//! What a lab fleet looks like: hosts, the bus their root disk sits on, their
//! bootloader. A spec is what the operator asks for; [`crate::state::LabState`]
//! is what `up` made of it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The bus the root disk hangs off. Decides the sysfs device chain and so the
/// kernel modules stage 1 needs to see the root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskBus {
    /// virtio-blk behind virtio-pci: `/dev/vda`, as on most VPSes.
    Virtio,
    /// An NVMe controller on PCI: `/dev/nvme0n1`.
    Nvme,
    /// A SATA disk behind an AHCI controller: `/dev/sda`.
    Sata,
}

impl DiskBus {
    pub const ALL: [DiskBus; 3] = [DiskBus::Virtio, DiskBus::Nvme, DiskBus::Sata];

    pub fn as_str(self) -> &'static str {
        match self {
            DiskBus::Virtio => "virtio",
            DiskBus::Nvme => "nvme",
            DiskBus::Sata => "sata",
        }
    }
}

impl fmt::Display for DiskBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DiskBus {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        DiskBus::ALL.into_iter().find(|bus| bus.as_str() == s).ok_or_else(|| SpecError::Unknown {
            what: "disk bus",
            value: s.to_owned(),
            expected: "virtio, nvme, sata",
        })
    }
}

/// Which boot loader the host's firmware runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    /// UEFI + systemd-boot, ESP mounted at `/boot`, EFI variables in
    /// `/sys/firmware/efi/efivars`.
    SystemdBoot,
    /// BIOS + GRUB 2, `/boot/grub/grub.cfg` and `grubenv` on the root filesystem.
    Grub,
    /// UEFI + GRUB 2 as NixOS installs it with `efiSupport` and
    /// `device = "nodev"`: GRUB as the ESP's removable-media loader,
    /// `grub.cfg` and the kernels on the ESP mounted at `/boot`, and no GRUB
    /// tools in the system (no `grub-reboot`). VM hosts only.
    GrubEfi,
}

impl Bootloader {
    pub fn as_str(self) -> &'static str {
        match self {
            Bootloader::SystemdBoot => "systemd-boot",
            Bootloader::Grub => "grub",
            Bootloader::GrubEfi => "grub-efi",
        }
    }
}

impl fmt::Display for Bootloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Bootloader {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "systemd-boot" => Ok(Bootloader::SystemdBoot),
            "grub" => Ok(Bootloader::Grub),
            "grub-efi" => Ok(Bootloader::GrubEfi),
            _ => Err(SpecError::Unknown {
                what: "bootloader",
                value: s.to_owned(),
                expected: "systemd-boot, grub, grub-efi (VMs)",
            }),
        }
    }
}

/// What a lab host runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Machine {
    /// A network namespace with the lab's model of firmware, stage 1 and
    /// systemd ([`crate::vmm`]): cheap, boots in a second.
    #[default]
    Netns,
    /// A QEMU virtual machine with real firmware (OVMF or SeaBIOS), a real
    /// boot loader, the generation's real kernel and initrd, and Debian's real
    /// systemd as PID 1 ([`crate::vm`]): slow, but nothing is modelled from
    /// the firmware to sshd.
    Vm,
}

impl Machine {
    pub fn as_str(self) -> &'static str {
        match self {
            Machine::Netns => "netns",
            Machine::Vm => "vm",
        }
    }
}

/// One host the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSpec {
    pub name: String,
    #[serde(default)]
    pub machine: Machine,
    pub disk: DiskBus,
    pub bootloader: Bootloader,
    /// Filesystem label of the root filesystem (`/dev/disk/by-label/<label>`).
    #[serde(default = "default_root_label")]
    pub root_label: String,
    /// Size of the root filesystem image in MiB. Small values make "disk full"
    /// faults real.
    #[serde(default = "default_root_size_mib")]
    pub root_size_mib: u64,
}

fn default_root_label() -> String {
    "NIXOS_ROOT".to_owned()
}

fn default_root_size_mib() -> u64 {
    1024
}

impl HostSpec {
    pub fn new(name: &str, disk: DiskBus, bootloader: Bootloader) -> Result<HostSpec, SpecError> {
        validate_host_name(name)?;
        Ok(HostSpec {
            name: name.to_owned(),
            machine: Machine::Netns,
            disk,
            bootloader,
            root_label: default_root_label(),
            root_size_mib: default_root_size_mib(),
        })
    }

    /// A host on a QEMU virtual machine.
    pub fn vm(name: &str, disk: DiskBus, bootloader: Bootloader) -> Result<HostSpec, SpecError> {
        Ok(HostSpec { machine: Machine::Vm, ..HostSpec::new(name, disk, bootloader)? })
    }

    /// Parses `NAME[=[vm,]BUS[,BOOTLOADER]]`, e.g. `web1=virtio,grub` or
    /// `vps1=vm,virtio,systemd-boot`.
    pub fn parse(text: &str) -> Result<HostSpec, SpecError> {
        let (name, rest) = text.split_once('=').unwrap_or((text, ""));
        let mut parts = rest.split(',').filter(|part| !part.is_empty()).peekable();
        let machine = if parts.next_if_eq(&"vm").is_some() { Machine::Vm } else { Machine::Netns };
        let disk = parts.next().map(str::parse).transpose()?.unwrap_or(DiskBus::Virtio);
        let bootloader = parts.next().map(str::parse).transpose()?.unwrap_or(Bootloader::SystemdBoot);
        if let Some(extra) = parts.next() {
            return Err(SpecError::Unknown {
                what: "host option",
                value: extra.to_owned(),
                expected: "NAME=[vm,]BUS,BOOTLOADER",
            });
        }
        Ok(HostSpec { machine, ..HostSpec::new(name, disk, bootloader)? })
    }

    pub fn is_vm(&self) -> bool {
        self.machine == Machine::Vm
    }
}

/// The whole fleet the lab should bring up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabSpec {
    pub hosts: Vec<HostSpec>,
}

impl LabSpec {
    /// `n` hosts named `host1`…`hostN`, cycling through every disk bus and both
    /// boot loaders so that a small lab already covers each hardware profile.
    pub fn default_fleet(n: usize) -> Result<LabSpec, SpecError> {
        const PROFILES: [(DiskBus, Bootloader); 4] = [
            (DiskBus::Virtio, Bootloader::SystemdBoot),
            (DiskBus::Nvme, Bootloader::Grub),
            (DiskBus::Sata, Bootloader::SystemdBoot),
            (DiskBus::Virtio, Bootloader::Grub),
        ];
        let hosts = (0..n)
            .map(|i| {
                let (disk, bootloader) = PROFILES[i % PROFILES.len()];
                HostSpec::new(&format!("host{}", i + 1), disk, bootloader)
            })
            .collect::<Result<Vec<_>, _>>()?;
        LabSpec::new(hosts)
    }

    pub fn new(hosts: Vec<HostSpec>) -> Result<LabSpec, SpecError> {
        if hosts.is_empty() {
            return Err(SpecError::Empty);
        }
        if hosts.len() > MAX_HOSTS {
            return Err(SpecError::TooMany(hosts.len()));
        }
        for (i, host) in hosts.iter().enumerate() {
            validate_host_name(&host.name)?;
            validate_label(&host.root_label)?;
            if hosts[..i].iter().any(|other| other.name == host.name) {
                return Err(SpecError::Duplicate(host.name.clone()));
            }
            if host.root_size_mib < 64 {
                return Err(SpecError::RootTooSmall(host.name.clone(), host.root_size_mib));
            }
            if host.bootloader == Bootloader::GrubEfi && !host.is_vm() {
                return Err(SpecError::VmOnly(host.name.clone(), "grub-efi"));
            }
        }
        Ok(LabSpec { hosts })
    }
}

/// At most this many hosts per lab: addresses are `.11` to `.250` of a /24.
pub const MAX_HOSTS: usize = 64;

/// Host names become network namespace names, interface-name suffixes, file
/// names and ssh `Host` patterns, so they are kept to a safe alphabet.
pub fn validate_host_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok { Ok(()) } else { Err(SpecError::BadHostName(name.to_owned())) }
}

fn validate_label(label: &str) -> Result<(), SpecError> {
    // ext4 labels are at most 16 bytes; keep them to characters that need no
    // escaping in /dev/disk/by-label.
    let ok = !label.is_empty()
        && label.len() <= 16
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok { Ok(()) } else { Err(SpecError::BadLabel(label.to_owned())) }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("unknown {what} `{value}` (expected one of: {expected})")]
    Unknown { what: &'static str, value: String, expected: &'static str },
    #[error("host name `{0}` is not allowed: use 1-32 characters a-z, 0-9 and `-`, starting with a letter")]
    BadHostName(String),
    #[error("filesystem label `{0}` is not allowed: use 1-16 characters A-Z, a-z, 0-9, `_` or `-`")]
    BadLabel(String),
    #[error("host `{0}` appears twice in the lab spec")]
    Duplicate(String),
    #[error("a lab needs at least one host")]
    Empty,
    #[error("a lab holds at most {MAX_HOSTS} hosts, {0} were asked for")]
    TooMany(usize),
    #[error("host `{0}`: a root filesystem of {1} MiB is too small (at least 64 MiB)")]
    RootTooSmall(String, u64),
    #[error("host `{0}`: {1} needs a VM host (`{0}=vm,BUS,{1}`)")]
    VmOnly(String, &'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_fleet_cycles_through_profiles() {
        let spec = LabSpec::default_fleet(3).unwrap();
        let got: Vec<_> = spec.hosts.iter().map(|h| (h.name.as_str(), h.disk, h.bootloader)).collect();
        assert_eq!(
            got,
            [
                ("host1", DiskBus::Virtio, Bootloader::SystemdBoot),
                ("host2", DiskBus::Nvme, Bootloader::Grub),
                ("host3", DiskBus::Sata, Bootloader::SystemdBoot),
            ]
        );
    }

    #[test]
    fn host_spec_parses_bus_and_bootloader() {
        let host = HostSpec::parse("web1=nvme,grub").unwrap();
        assert_eq!((host.disk, host.bootloader), (DiskBus::Nvme, Bootloader::Grub));
        assert_eq!(HostSpec::parse("web2").unwrap().disk, DiskBus::Virtio);
        assert!(matches!(HostSpec::parse("web3=scsi"), Err(SpecError::Unknown { .. })));
        assert!(matches!(HostSpec::parse("web4=virtio,grub,x"), Err(SpecError::Unknown { .. })));
        assert_eq!(HostSpec::parse("web5=nvme").unwrap().machine, Machine::Netns);
    }

    #[test]
    fn vm_hosts_parse_with_the_same_bus_and_bootloader_syntax() {
        let host = HostSpec::parse("vps1=vm,virtio,grub").unwrap();
        assert_eq!((host.machine, host.disk, host.bootloader), (Machine::Vm, DiskBus::Virtio, Bootloader::Grub));
        let host = HostSpec::parse("vps2=vm").unwrap();
        assert_eq!((host.machine, host.disk, host.bootloader), (Machine::Vm, DiskBus::Virtio, Bootloader::SystemdBoot));
        assert!(matches!(HostSpec::parse("vps3=vm,vm"), Err(SpecError::Unknown { .. })));
        assert!(matches!(HostSpec::parse("vps4=virtio,vm"), Err(SpecError::Unknown { .. })));
        assert_eq!(HostSpec::parse("vps5=vm,virtio,grub-efi").unwrap().bootloader, Bootloader::GrubEfi);
        let netns = HostSpec::parse("web9=virtio,grub-efi").unwrap();
        assert!(matches!(LabSpec::new(vec![netns]), Err(SpecError::VmOnly(..))));
    }

    #[test]
    fn host_names_that_could_inject_are_refused() {
        for bad in ["", "Host", "-x", "a/b", "a b", "a;b", "1host", &"a".repeat(33)] {
            assert!(validate_host_name(bad).is_err(), "{bad:?} accepted");
        }
        validate_host_name("web-1").unwrap();
    }

    #[test]
    fn duplicates_and_empty_specs_are_refused() {
        let a = HostSpec::parse("a").unwrap();
        assert!(matches!(LabSpec::new(vec![a.clone(), a]), Err(SpecError::Duplicate(_))));
        assert!(matches!(LabSpec::new(vec![]), Err(SpecError::Empty)));
    }
}
