//! Where a lab keeps its files. One directory per lab; nothing outside it but
//! the kernel objects it names (network namespaces, a bridge, loop devices).
//!
//! ```text
//! <lab>/lab.json                 what `up` made: id, addresses, loop devices
//! <lab>/ssh/                     lab key, ssh_config, known_hosts (never the user's)
//! <lab>/fleet/                   the fixture flake (nixosConfigurations, deploy.nodes)
//! <lab>/hosts/<h>/root.img       the host's root filesystem (ext4, its own /nix)
//! <lab>/hosts/<h>/esp.img        the EFI system partition (systemd-boot hosts)
//! <lab>/hosts/<h>/sys/           the host's sysfs-shaped hardware tree (+ efivars = NVRAM)
//! <lab>/hosts/<h>/console.log    what the host's console printed, boot after boot
//! <lab>/hosts/<h>/vmm.sock       control socket of the host's power supervisor
//! <lab>/hosts/<h>/disk.raw       a VM's whole disk (GPT: ESP or BIOS boot, root)
//! <lab>/hosts/<h>/efivars.fd     a UEFI VM's variable store (OVMF's NVRAM)
//! <lab>/hosts/<h>/qmp.sock       QEMU's QMP socket (power control of a VM)
//! ```

use std::path::{Path, PathBuf};

/// The default lab directory used by `fleetgate-lab` and the README demo.
pub const DEFAULT_LAB_DIR: &str = "/var/lib/fleetgate-lab/default";

#[derive(Debug, Clone)]
pub struct LabDir {
    root: PathBuf,
}

impl LabDir {
    pub fn new(root: impl Into<PathBuf>) -> LabDir {
        LabDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `fleetgate-lab` command line for `verb` on this lab, for hints:
    /// always with `--lab`, so it works whatever the user's environment.
    pub fn command(&self, verb: &str) -> String {
        format!("fleetgate-lab --lab {} {verb}", self.root.display())
    }

    pub fn state_file(&self) -> PathBuf {
        self.root.join("lab.json")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lab.lock")
    }

    pub fn ssh_dir(&self) -> PathBuf {
        self.root.join("ssh")
    }

    /// The lab's private key; its public half is root's only authorized key.
    pub fn ssh_key(&self) -> PathBuf {
        self.ssh_dir().join("id_ed25519")
    }

    /// An `ssh_config` naming every host; use it as `ssh -F <this> host1`.
    pub fn ssh_config(&self) -> PathBuf {
        self.ssh_dir().join("config")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.ssh_dir().join("known_hosts")
    }

    pub fn fleet_dir(&self) -> PathBuf {
        self.root.join("fleet")
    }

    pub fn host(&self, name: &str) -> HostDir {
        HostDir { root: self.root.join("hosts").join(name) }
    }
}

#[derive(Debug, Clone)]
pub struct HostDir {
    root: PathBuf,
}

impl HostDir {
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn root_image(&self) -> PathBuf {
        self.root.join("root.img")
    }

    pub fn esp_image(&self) -> PathBuf {
        self.root.join("esp.img")
    }

    /// The sysfs-shaped tree that is bind-mounted at the host's `/sys`.
    pub fn sys_dir(&self) -> PathBuf {
        self.root.join("sys")
    }

    /// SSH host keys, generated once: the host keeps its identity across boots.
    pub fn host_keys_dir(&self) -> PathBuf {
        self.root.join("host-keys")
    }

    pub fn console_log(&self) -> PathBuf {
        self.root.join("console.log")
    }

    pub fn vmm_log(&self) -> PathBuf {
        self.root.join("vmm.log")
    }

    pub fn vmm_socket(&self) -> PathBuf {
        self.root.join("vmm.sock")
    }

    pub fn vmm_pid_file(&self) -> PathBuf {
        self.root.join("vmm.pid")
    }

    /// Scratch space of the firmware: mount points and the unpacked initrd.
    pub fn firmware_dir(&self) -> PathBuf {
        self.root.join("firmware")
    }

    /// Where the host's root is assembled before `pivot_root`.
    pub fn newroot_dir(&self) -> PathBuf {
        self.root.join("newroot")
    }

    /// A VM's whole disk.
    pub fn disk_image(&self) -> PathBuf {
        self.root.join("disk.raw")
    }

    /// A UEFI VM's variable store: OVMF's NVRAM, kept across resets and
    /// power cycles like a real machine's.
    pub fn efi_vars(&self) -> PathBuf {
        self.root.join("efivars.fd")
    }

    pub fn qmp_socket(&self) -> PathBuf {
        self.root.join("qmp.sock")
    }

    pub fn qemu_pid_file(&self) -> PathBuf {
        self.root.join("qemu.pid")
    }

    /// Where a VM's root filesystem is assembled before it is packed into
    /// the disk image (removed once packed).
    pub fn vm_root_dir(&self) -> PathBuf {
        self.root.join("vm-root")
    }

    /// The boot id of the running boot, bind-mounted over
    /// `/proc/sys/kernel/random/boot_id` inside the host.
    pub fn boot_id_file(&self) -> PathBuf {
        self.root.join("boot_id")
    }
}
