//! The lab's firmware and boot loaders: given a host's disks, decide which
//! kernel + initrd + command line the machine would start, exactly as UEFI +
//! systemd-boot or BIOS + GRUB would, including the one-shot and boot-counting
//! mechanisms a verified reboot depends on.

pub mod efivar;
pub mod grub;
pub mod systemd_boot;

use std::path::PathBuf;

/// What the boot loader decided to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootChoice {
    /// systemd-boot entry id (`nixos-generation-3.conf`) or GRUB entry id/title.
    pub entry_id: String,
    pub title: String,
    /// Why this entry: `LoaderEntryOneShot`, `next_entry`, `default`…
    pub reason: String,
    /// Path of the kernel image, as seen from the firmware's mounts.
    pub kernel: PathBuf,
    pub initrds: Vec<PathBuf>,
    /// The kernel command line.
    pub options: String,
}

impl BootChoice {
    /// The `init=` parameter: `<toplevel>/init` on NixOS.
    pub fn init(&self) -> Option<&str> {
        self.options.split_whitespace().find_map(|p| p.strip_prefix("init="))
    }

    /// The system toplevel the entry boots (the directory holding `init`).
    pub fn toplevel(&self) -> Option<String> {
        let init = self.init()?;
        Some(init.strip_suffix("/init").unwrap_or(init).to_owned())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("no bootable entry: {0}")]
    NoEntries(String),
    #[error("broken boot entry: {0}")]
    BadEntry(String),
    #[error("{what}")]
    Io { what: String, source: std::io::Error },
}
