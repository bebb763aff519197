//! A lab host's hardware as Linux shows it to userland: a sysfs-shaped tree
//! (device chain with `modalias`, `driver`, `subsystem` links, `/sys/block`,
//! `/sys/class/block`, `/sys/dev/block`, `/sys/bus/*/drivers/*/module`) and the
//! `/dev` nodes plus `/dev/disk/by-*` links udev would make.
//!
//! Shapes are copied from real machines: the virtio chain from this machine's
//! own `/sys` (`/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda`), NVMe
//! with native multipath as Debian and NixOS kernels build it
//! (`CONFIG_NVME_MULTIPATH=y`: the namespace hangs off
//! `/sys/devices/virtual/nvme-subsystem/nvme-subsys0`, which links to its
//! controllers), and SATA behind AHCI as QEMU's q35 ICH9 controller shows it.
//!
//! The partitions that hold filesystems carry the major:minor of the loop
//! devices backing them, so `/proc/self/mountinfo` → `/sys/dev/block/M:m` →
//! device chain works inside the host exactly as on real hardware.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::spec::{Bootloader, DiskBus};
use crate::state::HostState;

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionRole {
    /// EFI system partition, mounted at `/boot` (systemd-boot hosts).
    Esp,
    /// GRUB's BIOS boot partition: no filesystem.
    BiosBoot,
    Root,
}

#[derive(Debug, Clone)]
pub struct Partition {
    pub name: String,
    pub number: u32,
    pub role: PartitionRole,
    pub dev: (u32, u32),
    /// Loop device backing this partition's filesystem, if it has one.
    pub backing_loop: Option<String>,
    pub part_label: String,
    pub part_uuid: String,
    pub fs_uuid: Option<String>,
    pub fs_label: Option<String>,
}

/// The host's disk as userland sees it.
#[derive(Debug, Clone)]
pub struct Hardware {
    pub bus: DiskBus,
    /// Kernel name of the whole disk: `vda`, `nvme0n1`, `sda`.
    pub disk: String,
    pub disk_dev: (u32, u32),
    pub partitions: Vec<Partition>,
    /// `/dev/disk/by-id` name of the whole disk.
    pub by_id: String,
    /// `/dev/disk/by-path` name of the whole disk.
    pub by_path: String,
    /// The sysfs path of the whole disk, relative to `/sys`.
    pub disk_sysfs: String,
    /// Kernel modules whose drivers are bound on the root chain (as
    /// `/sys/module` would list them).
    pub loaded_modules: Vec<&'static str>,
}

/// Errors reading a loop device's number are reported by the caller; this
/// takes the numbers already resolved.
pub struct LoopNumbers {
    pub root: (u32, u32),
    pub esp: Option<(u32, u32)>,
}

impl Hardware {
    pub fn of(host: &HostState, loops: &LoopNumbers) -> Hardware {
        let ids = &host.disks;
        let (disk, disk_dev, part_prefix) = match host.spec.disk {
            DiskBus::Virtio => ("vda", (254, 0), "vda"),
            DiskBus::Nvme => ("nvme0n1", (259, 0), "nvme0n1p"),
            DiskBus::Sata => ("sda", (8, 0), "sda"),
        };
        let first = match host.spec.bootloader {
            Bootloader::SystemdBoot | Bootloader::GrubEfi => Partition {
                name: format!("{part_prefix}1"),
                number: 1,
                role: PartitionRole::Esp,
                dev: loops.esp.unwrap_or((disk_dev.0, disk_dev.1 + 1)),
                backing_loop: host.esp_loop.clone(),
                part_label: ids.esp_part_label.clone(),
                part_uuid: ids.esp_part_uuid.clone(),
                fs_uuid: Some(ids.esp_fs_uuid.clone()),
                fs_label: Some("boot".to_owned()),
            },
            Bootloader::Grub => Partition {
                name: format!("{part_prefix}1"),
                number: 1,
                role: PartitionRole::BiosBoot,
                dev: (disk_dev.0, disk_dev.1 + 1),
                backing_loop: None,
                part_label: "disk-main-boot".to_owned(),
                part_uuid: ids.esp_part_uuid.clone(),
                fs_uuid: None,
                fs_label: None,
            },
        };
        let root = Partition {
            name: format!("{part_prefix}2"),
            number: 2,
            role: PartitionRole::Root,
            dev: loops.root,
            backing_loop: host.root_loop.clone(),
            part_label: ids.root_part_label.clone(),
            part_uuid: ids.root_part_uuid.clone(),
            fs_uuid: Some(ids.root_fs_uuid.clone()),
            fs_label: Some(host.spec.root_label.clone()),
        };
        let (by_id, by_path, disk_sysfs, loaded_modules) = match host.spec.disk {
            DiskBus::Virtio => (
                format!("virtio-{}", ids.serial),
                "pci-0000:00:02.0".to_owned(),
                "devices/pci0000:00/0000:00:02.0/virtio1/block/vda".to_owned(),
                vec!["virtio_pci", "virtio_blk", "ext4"],
            ),
            DiskBus::Nvme => (
                format!("nvme-Samsung_SSD_970_EVO_1TB_{}", ids.serial),
                "pci-0000:01:00.0-nvme-1".to_owned(),
                "devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1".to_owned(),
                vec!["nvme", "ext4"],
            ),
            DiskBus::Sata => (
                format!("ata-QEMU_HARDDISK_{}", ids.serial),
                "pci-0000:00:1f.2-ata-1".to_owned(),
                "devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda".to_owned(),
                vec!["ahci", "sd_mod", "ext4"],
            ),
        };
        Hardware {
            bus: host.spec.disk,
            disk: disk.to_owned(),
            disk_dev,
            partitions: vec![first, root],
            by_id,
            by_path,
            disk_sysfs,
            loaded_modules,
        }
    }

    /// `MODALIAS` of every device on the root disk's chain that has a driver
    /// bound, from the disk up: what udev in stage 1 hands to `modprobe`.
    /// The same identities [`Hardware::write_sysfs`] writes, so the lab's
    /// stage-1 model and the sysfs tree cannot disagree.
    pub fn chain_modaliases(&self) -> Vec<String> {
        match self.bus {
            DiskBus::Virtio => vec![VIRTIO_BLK_MODALIAS.to_owned(), VIRTIO_BLK_PCI.modalias()],
            DiskBus::Nvme => vec![NVME_CONTROLLER.modalias()],
            DiskBus::Sata => vec![SCSI_DISK_MODALIAS.to_owned(), AHCI_CONTROLLER.modalias()],
        }
    }

    pub fn root_partition(&self) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.role == PartitionRole::Root)
    }

    pub fn esp_partition(&self) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.role == PartitionRole::Esp)
    }

    /// Writes the sysfs-shaped tree under `sys`. `firmware/efi/efivars` (the
    /// NVRAM) is created if missing and never touched otherwise, so EFI
    /// variables survive reboots; everything else is rebuilt.
    pub fn write_sysfs(&self, sys: &Path, efi: bool) -> io::Result<()> {
        for dir in ["devices", "block", "class", "dev", "bus", "module"] {
            let path = sys.join(dir);
            if path.exists() {
                fs::remove_dir_all(&path)?;
            }
        }
        let tree = Tree { root: sys };
        match self.bus {
            DiskBus::Virtio => self.write_virtio(&tree)?,
            DiskBus::Nvme => self.write_nvme(&tree)?,
            DiskBus::Sata => self.write_sata(&tree)?,
        }
        self.write_block_device(&tree)?;
        for module in &self.loaded_modules {
            tree.file(&format!("module/{module}/initstate"), "live\n")?;
        }
        tree.dir("class/block")?;
        tree.dir("dev/char")?;
        if efi {
            tree.dir("firmware/efi/efivars")?;
            tree.file("firmware/efi/fw_platform_size", "64\n")?;
        } else if sys.join("firmware/efi").exists() {
            fs::remove_dir_all(sys.join("firmware/efi"))?;
        }
        Ok(())
    }

    /// A PCI function at `slot` (`bridge/function` for one behind a bridge),
    /// bound to `driver`, which comes from `module` or is built in (`None`).
    fn write_pci_function(
        &self,
        tree: &Tree,
        slot: &str,
        ids: PciIds,
        driver: &str,
        module: Option<&str>,
    ) -> io::Result<String> {
        let dev = format!("devices/pci0000:00/{slot}");
        let slot = slot.rsplit('/').next().unwrap_or(slot);
        let modalias = ids.modalias();
        tree.file(&format!("{dev}/vendor"), &format!("0x{:04x}\n", ids.vendor))?;
        tree.file(&format!("{dev}/device"), &format!("0x{:04x}\n", ids.device))?;
        tree.file(&format!("{dev}/subsystem_vendor"), &format!("0x{:04x}\n", ids.subvendor))?;
        tree.file(&format!("{dev}/subsystem_device"), &format!("0x{:04x}\n", ids.subdevice))?;
        tree.file(&format!("{dev}/class"), &format!("0x{:06x}\n", ids.class))?;
        tree.file(&format!("{dev}/modalias"), &format!("{modalias}\n"))?;
        tree.file(
            &format!("{dev}/uevent"),
            &format!(
                "DRIVER={driver}\nPCI_CLASS={:X}\nPCI_ID={:04X}:{:04X}\nPCI_SUBSYS_ID={:04X}:{:04X}\nPCI_SLOT_NAME={slot}\nMODALIAS={modalias}\n",
                ids.class, ids.vendor, ids.device, ids.subvendor, ids.subdevice
            ),
        )?;
        tree.link(&format!("{dev}/subsystem"), "bus/pci")?;
        match module {
            Some(module) => tree.bind_driver(&dev, "pci", driver, module)?,
            None => tree.bind_builtin_driver(&dev, "pci", driver)?,
        }
        tree.file("devices/pci0000:00/uevent", "")?;
        Ok(dev)
    }

    fn write_virtio(&self, tree: &Tree) -> io::Result<()> {
        let pci = self.write_pci_function(tree, "0000:00:02.0", VIRTIO_BLK_PCI, "virtio-pci", Some("virtio_pci"))?;
        let virtio = format!("{pci}/virtio1");
        tree.file(&format!("{virtio}/device"), "0x0002\n")?;
        tree.file(&format!("{virtio}/vendor"), "0x1af4\n")?;
        tree.file(&format!("{virtio}/status"), "0x0000000f\n")?;
        tree.file(&format!("{virtio}/modalias"), &format!("{VIRTIO_BLK_MODALIAS}\n"))?;
        tree.file(&format!("{virtio}/uevent"), &format!("DRIVER=virtio_blk\nMODALIAS={VIRTIO_BLK_MODALIAS}\n"))?;
        tree.link(&format!("{virtio}/subsystem"), "bus/virtio")?;
        tree.bind_driver(&virtio, "virtio", "virtio_blk", "virtio_blk")
    }

    fn write_nvme(&self, tree: &Tree) -> io::Result<()> {
        // An NVMe SSD sits behind a PCIe root port, whose driver (`pcieport`)
        // is always built into the kernel: no `module` link, no alias.
        self.write_pci_function(tree, "0000:00:1c.0", PCIE_ROOT_PORT, "pcieport", None)?;
        let pci = self.write_pci_function(tree, "0000:00:1c.0/0000:01:00.0", NVME_CONTROLLER, "nvme", Some("nvme"))?;
        let ctrl = format!("{pci}/nvme/nvme0");
        tree.file(&format!("{ctrl}/model"), "Samsung SSD 970 EVO Plus 1TB           \n")?;
        tree.file(&format!("{ctrl}/serial"), &format!("{}\n", self.by_id))?;
        tree.file(&format!("{ctrl}/transport"), "pcie\n")?;
        tree.file(&format!("{ctrl}/dev"), "243:0\n")?;
        tree.file(&format!("{ctrl}/uevent"), "MAJOR=243\nMINOR=0\nDEVNAME=nvme0\nNVME_TRTYPE=pcie\n")?;
        tree.link(&format!("{ctrl}/subsystem"), "class/nvme")?;
        tree.link(&format!("{ctrl}/device"), &pci)?;
        tree.link("class/nvme/nvme0", &ctrl)?;
        // Native multipath: the controller's path device is hidden ...
        let path_dev = format!("{ctrl}/nvme0c0n1");
        tree.file(&format!("{path_dev}/hidden"), "1\n")?;
        tree.link(&format!("{path_dev}/device"), &ctrl)?;
        tree.link(&format!("{path_dev}/subsystem"), "class/block")?;
        // ... and the visible namespace hangs off the subsystem, which links to
        // its controllers.
        let subsys = "devices/virtual/nvme-subsystem/nvme-subsys0";
        tree.file(
            &format!("{subsys}/subsysnqn"),
            "nqn.2014.08.org.nvmexpress:144d144dS4EWNX0R123456 Samsung SSD 970 EVO Plus 1TB\n",
        )?;
        tree.file(&format!("{subsys}/uevent"), "")?;
        tree.link(&format!("{subsys}/subsystem"), "class/nvme-subsystem")?;
        tree.link(&format!("{subsys}/nvme0"), &ctrl)?;
        tree.link("class/nvme-subsystem/nvme-subsys0", subsys)?;
        Ok(())
    }

    fn write_sata(&self, tree: &Tree) -> io::Result<()> {
        let pci = self.write_pci_function(tree, "0000:00:1f.2", AHCI_CONTROLLER, "ahci", Some("ahci"))?;
        let ata = format!("{pci}/ata1");
        tree.file(&format!("{ata}/uevent"), "")?;
        let host = format!("{ata}/host0");
        tree.file(&format!("{host}/uevent"), "DEVTYPE=scsi_host\n")?;
        tree.link(&format!("{host}/subsystem"), "bus/scsi")?;
        let target = format!("{host}/target0:0:0");
        tree.file(&format!("{target}/uevent"), "DEVTYPE=scsi_target\n")?;
        tree.link(&format!("{target}/subsystem"), "bus/scsi")?;
        let lun = format!("{target}/0:0:0:0");
        tree.file(&format!("{lun}/type"), "0\n")?;
        tree.file(&format!("{lun}/vendor"), "ATA     \n")?;
        tree.file(&format!("{lun}/model"), "QEMU HARDDISK   \n")?;
        tree.file(&format!("{lun}/modalias"), &format!("{SCSI_DISK_MODALIAS}\n"))?;
        tree.file(
            &format!("{lun}/uevent"),
            &format!("DEVTYPE=scsi_device\nDRIVER=sd\nMODALIAS={SCSI_DISK_MODALIAS}\n"),
        )?;
        tree.link(&format!("{lun}/subsystem"), "bus/scsi")?;
        tree.bind_driver(&lun, "scsi", "sd", "sd_mod")
    }

    fn write_block_device(&self, tree: &Tree) -> io::Result<()> {
        let disk = &self.disk_sysfs;
        let (major, minor) = self.disk_dev;
        tree.file(&format!("{disk}/dev"), &format!("{major}:{minor}\n"))?;
        tree.file(&format!("{disk}/size"), "2097152\n")?;
        tree.file(&format!("{disk}/removable"), "0\n")?;
        tree.file(&format!("{disk}/ro"), "0\n")?;
        tree.file(
            &format!("{disk}/uevent"),
            &format!("MAJOR={major}\nMINOR={minor}\nDEVNAME={}\nDEVTYPE=disk\n", self.disk),
        )?;
        tree.link(&format!("{disk}/subsystem"), "class/block")?;
        let parent = Path::new(disk).parent().and_then(Path::parent).map(|p| p.to_string_lossy().into_owned());
        let device = match self.bus {
            // `block/` sits between the device and the disk for virtio and SCSI.
            DiskBus::Virtio | DiskBus::Sata => parent.unwrap_or_default(),
            DiskBus::Nvme => "devices/virtual/nvme-subsystem/nvme-subsys0".to_owned(),
        };
        tree.link(&format!("{disk}/device"), &device)?;
        if self.bus == DiskBus::Virtio || self.bus == DiskBus::Nvme {
            tree.file(
                &format!("{disk}/serial"),
                &format!("{}\n", self.by_id.rsplit('_').next().unwrap_or(&self.by_id)),
            )?;
        }
        tree.link(&format!("block/{}", self.disk), disk)?;
        tree.link(&format!("class/block/{}", self.disk), disk)?;
        tree.link(&format!("dev/block/{major}:{minor}"), disk)?;
        for part in &self.partitions {
            let path = format!("{disk}/{}", part.name);
            let (major, minor) = part.dev;
            tree.file(&format!("{path}/partition"), &format!("{}\n", part.number))?;
            tree.file(&format!("{path}/dev"), &format!("{major}:{minor}\n"))?;
            tree.file(
                &format!("{path}/uevent"),
                &format!(
                    "MAJOR={major}\nMINOR={minor}\nDEVNAME={}\nDEVTYPE=partition\nPARTN={}\nPARTNAME={}\n",
                    part.name, part.number, part.part_label
                ),
            )?;
            tree.link(&format!("{path}/subsystem"), "class/block")?;
            tree.link(&format!("class/block/{}", part.name), &path)?;
            tree.link(&format!("dev/block/{major}:{minor}"), &path)?;
        }
        Ok(())
    }

    /// Device nodes the host's `/dev` gets for this disk: `(name, Some(dev))`
    /// for a real block node (a loop device of the lab), `(name, None)` for a
    /// placeholder file. Whole-disk numbers are fictitious and would alias real
    /// devices of this machine, so they never become nodes.
    pub fn dev_nodes(&self) -> Vec<(String, Option<(u32, u32)>)> {
        let mut nodes = vec![(self.disk.clone(), None)];
        for part in &self.partitions {
            nodes.push((part.name.clone(), part.backing_loop.as_ref().map(|_| part.dev)));
        }
        nodes
    }

    /// `/dev/disk/by-*` links as udev's `60-persistent-storage.rules` makes
    /// them: `(path under /dev/disk, kernel name it points at)`.
    pub fn disk_links(&self) -> Vec<(String, String)> {
        let mut links = vec![
            (format!("by-id/{}", self.by_id), self.disk.clone()),
            (format!("by-path/{}", self.by_path), self.disk.clone()),
        ];
        for part in &self.partitions {
            let n = part.number;
            links.push((format!("by-id/{}-part{n}", self.by_id), part.name.clone()));
            links.push((format!("by-path/{}-part{n}", self.by_path), part.name.clone()));
            links.push((format!("by-partlabel/{}", part.part_label), part.name.clone()));
            links.push((format!("by-partuuid/{}", part.part_uuid), part.name.clone()));
            if let Some(uuid) = &part.fs_uuid {
                links.push((format!("by-uuid/{uuid}"), part.name.clone()));
            }
            if let Some(label) = &part.fs_label {
                links.push((format!("by-label/{label}"), part.name.clone()));
            }
        }
        links
    }
}

#[derive(Clone, Copy)]
struct PciIds {
    vendor: u16,
    device: u16,
    subvendor: u16,
    subdevice: u16,
    class: u32,
}

impl PciIds {
    /// The kernel's PCI `MODALIAS` (`drivers/pci/pci-sysfs.c`).
    fn modalias(self) -> String {
        format!(
            "pci:v0000{:04X}d0000{:04X}sv0000{:04X}sd0000{:04X}bc{:02X}sc{:02X}i{:02X}",
            self.vendor,
            self.device,
            self.subvendor,
            self.subdevice,
            self.class >> 16,
            (self.class >> 8) & 0xff,
            self.class & 0xff
        )
    }
}

/// virtio-blk behind virtio-pci, as on this machine (class 018000).
const VIRTIO_BLK_PCI: PciIds =
    PciIds { vendor: 0x1af4, device: 0x1042, subvendor: 0x1af4, subdevice: 0x1100, class: 0x018000 };
const VIRTIO_BLK_MODALIAS: &str = "virtio:d00000002v00001AF4";
/// QEMU's PCIe root port; its driver, `pcieport`, is always built in.
const PCIE_ROOT_PORT: PciIds =
    PciIds { vendor: 0x1b36, device: 0x000c, subvendor: 0x1af4, subdevice: 0x1100, class: 0x060400 };
/// Samsung 970 EVO Plus, as `lspci -nn` shows it: 144d:a808, class 010802.
const NVME_CONTROLLER: PciIds =
    PciIds { vendor: 0x144d, device: 0xa808, subvendor: 0x144d, subdevice: 0xa801, class: 0x010802 };
/// QEMU q35's ICH9 AHCI controller: 8086:2922, class 010601.
const AHCI_CONTROLLER: PciIds =
    PciIds { vendor: 0x8086, device: 0x2922, subvendor: 0x1af4, subdevice: 0x1100, class: 0x010601 };
/// A SCSI disk (type 0), as sd_mod's alias matches it.
const SCSI_DISK_MODALIAS: &str = "scsi:t-0x00";

/// Writes files and relative symlinks under a sysfs root, creating parents.
struct Tree<'a> {
    root: &'a Path,
}

impl Tree<'_> {
    fn dir(&self, path: &str) -> io::Result<()> {
        fs::create_dir_all(self.root.join(path))
    }

    fn file(&self, path: &str, content: &str) -> io::Result<()> {
        let full = self.root.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(full, content)
    }

    /// A symlink at `path` to `target` (both relative to the sysfs root),
    /// written relative as sysfs does (`../../../bus/pci`).
    fn link(&self, path: &str, target: &str) -> io::Result<()> {
        let full = self.root.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent)?;
        }
        if full.symlink_metadata().is_ok() {
            fs::remove_file(&full)?;
        }
        std::os::unix::fs::symlink(relative_link(path, target), full)
    }

    /// `driver` link of a device, the driver's back link and its `module` link.
    fn bind_driver(&self, device: &str, bus: &str, driver: &str, module: &str) -> io::Result<()> {
        let driver_dir = format!("bus/{bus}/drivers/{driver}");
        self.link(&format!("{device}/driver"), &driver_dir)?;
        let name = Path::new(device).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.link(&format!("{driver_dir}/{name}"), device)?;
        self.link(&format!("{driver_dir}/module"), &format!("module/{module}"))?;
        self.file(&format!("module/{module}/initstate"), "live\n")
    }

    /// `driver` link of a device whose driver is built into the kernel: the
    /// driver directory has no `module` link.
    fn bind_builtin_driver(&self, device: &str, bus: &str, driver: &str) -> io::Result<()> {
        let driver_dir = format!("bus/{bus}/drivers/{driver}");
        self.link(&format!("{device}/driver"), &driver_dir)?;
        let name = Path::new(device).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.link(&format!("{driver_dir}/{name}"), device)
    }
}

/// The relative path from the directory holding `link` to `target`, both given
/// relative to the same root.
fn relative_link(link: &str, target: &str) -> PathBuf {
    let depth = Path::new(link)
        .parent()
        .map(|p| p.components().filter(|c| matches!(c, Component::Normal(_))).count())
        .unwrap_or(0);
    let mut path = PathBuf::new();
    for _ in 0..depth {
        path.push("..");
    }
    path.push(target);
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::HostSpec;
    use crate::state::DiskIdentity;

    fn host(disk: DiskBus, bootloader: Bootloader) -> HostState {
        HostState {
            spec: HostSpec::new("h", disk, bootloader).unwrap(),
            address: "10.203.1.11".into(),
            netns: "fgl1-h".into(),
            ssh_port: None,
            veth: "fgl1v0".into(),
            disks: DiskIdentity::derive(1, "h"),
            root_loop: Some("/dev/loop3".into()),
            esp_loop: Some("/dev/loop4".into()),
        }
    }

    fn read(sys: &Path, path: &str) -> String {
        fs::read_to_string(sys.join(path)).unwrap().trim().to_owned()
    }

    #[test]
    fn relative_links_climb_to_the_root() {
        assert_eq!(
            relative_link("devices/pci0000:00/0000:00:02.0/driver", "bus/pci"),
            PathBuf::from("../../../bus/pci")
        );
        assert_eq!(relative_link("block/vda", "devices/x"), PathBuf::from("../devices/x"));
    }

    #[test]
    fn virtio_chain_matches_the_real_machine_shape() {
        let tmp = tempfile::tempdir().unwrap();
        let hw = Hardware::of(
            &host(DiskBus::Virtio, Bootloader::SystemdBoot),
            &LoopNumbers { root: (7, 3), esp: Some((7, 4)) },
        );
        hw.write_sysfs(tmp.path(), true).unwrap();
        let sys = tmp.path();
        let root = fs::canonicalize(sys.join("dev/block/7:3")).unwrap();
        assert!(root.ends_with("devices/pci0000:00/0000:00:02.0/virtio1/block/vda/vda2"), "{root:?}");
        assert_eq!(read(sys, "block/vda/device/modalias"), "virtio:d00000002v00001AF4");
        let driver = fs::read_link(sys.join("devices/pci0000:00/0000:00:02.0/virtio1/driver")).unwrap();
        assert_eq!(driver, PathBuf::from("../../../../bus/virtio/drivers/virtio_blk"));
        let module = fs::canonicalize(sys.join("devices/pci0000:00/0000:00:02.0/driver/module")).unwrap();
        assert!(module.ends_with("module/virtio_pci"), "{module:?}");
        assert_eq!(
            read(sys, "devices/pci0000:00/0000:00:02.0/modalias"),
            "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc80i00"
        );
        assert!(sys.join("firmware/efi/efivars").is_dir());
    }

    #[test]
    fn nvme_namespace_hangs_off_the_multipath_subsystem() {
        let tmp = tempfile::tempdir().unwrap();
        let hw = Hardware::of(&host(DiskBus::Nvme, Bootloader::Grub), &LoopNumbers { root: (7, 3), esp: None });
        hw.write_sysfs(tmp.path(), false).unwrap();
        let sys = tmp.path();
        let disk = fs::canonicalize(sys.join("block/nvme0n1")).unwrap();
        assert!(disk.ends_with("devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1"), "{disk:?}");
        let ctrl_pci = fs::canonicalize(sys.join("devices/virtual/nvme-subsystem/nvme-subsys0/nvme0/device")).unwrap();
        assert_eq!(read(&ctrl_pci, "modalias"), "pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02");
        assert!(fs::canonicalize(ctrl_pci.join("driver")).unwrap().ends_with("bus/pci/drivers/nvme"));
        // Behind a root port bound to the built-in pcieport driver.
        let port = ctrl_pci.parent().unwrap();
        assert!(port.ends_with("devices/pci0000:00/0000:00:1c.0"), "{port:?}");
        assert_eq!(read(port, "class"), "0x060400");
        assert!(fs::canonicalize(port.join("driver")).unwrap().ends_with("bus/pci/drivers/pcieport"));
        assert!(!port.join("driver/module").exists(), "pcieport is built in");
        assert!(!sys.join("firmware/efi").exists());
        assert_eq!(read(sys, "dev/block/7:3/partition"), "2");
    }

    #[test]
    fn sata_disk_sits_behind_scsi_and_ahci() {
        let tmp = tempfile::tempdir().unwrap();
        let hw = Hardware::of(
            &host(DiskBus::Sata, Bootloader::SystemdBoot),
            &LoopNumbers { root: (7, 3), esp: Some((7, 4)) },
        );
        hw.write_sysfs(tmp.path(), true).unwrap();
        let sys = tmp.path();
        assert_eq!(read(sys, "block/sda/device/modalias"), "scsi:t-0x00");
        let lun_driver = fs::canonicalize(sys.join("block/sda/device/driver/module")).unwrap();
        assert!(lun_driver.ends_with("module/sd_mod"));
        let ahci = fs::canonicalize(sys.join("block/sda/device/../../../../driver")).unwrap();
        assert!(ahci.ends_with("bus/pci/drivers/ahci"), "{ahci:?}");
    }

    #[test]
    fn disk_links_name_label_uuid_and_partlabel() {
        let h = host(DiskBus::Virtio, Bootloader::Grub);
        let hw = Hardware::of(&h, &LoopNumbers { root: (7, 3), esp: None });
        let links = hw.disk_links();
        assert!(links.contains(&("by-label/NIXOS_ROOT".to_owned(), "vda2".to_owned())));
        assert!(links.contains(&(format!("by-uuid/{}", h.disks.root_fs_uuid), "vda2".to_owned())));
        assert!(links.contains(&("by-partlabel/disk-main-root".to_owned(), "vda2".to_owned())));
        // A GRUB host's first partition is a BIOS boot partition: no fs, no node.
        assert_eq!(
            hw.dev_nodes(),
            vec![("vda".to_owned(), None), ("vda1".to_owned(), None), ("vda2".to_owned(), Some((7, 3)))]
        );
    }
}
