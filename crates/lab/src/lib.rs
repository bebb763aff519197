//! # fleetgate-lab
//!
//! A fleet of NixOS-shaped hosts on one Linux machine, for fleetgate's tests
//! and demo. Never shipped to users, and deliberately sharing no code with
//! fleetgate: when the lab decides whether a generation boots, it uses
//! standard tools (`zstd`, `cpio`, kmod's `modprobe`, `file`) and its own
//! code, so tests of fleetgate's checker prove something.
//!
//! Each host is:
//! - a **network namespace** on the lab's bridge, reachable at `10.203.<lab>.<n>`
//!   ([`network`]);
//! - **disks**: a real ext4 root filesystem image holding the host's own `/nix`
//!   (a real Nix store and database) and, for UEFI hosts, an ESP image, on
//!   loop devices ([`disk`]);
//! - **hardware**: a sysfs-shaped tree and `/dev/disk/by-*` links for a
//!   virtio-blk, NVMe or AHCI/SATA root disk ([`hardware`]);
//! - **firmware**: UEFI + systemd-boot (one-shot, default, boot counting) or
//!   BIOS + GRUB (grubenv `next_entry`) choosing what to boot ([`firmware`]),
//!   and a model of stage 1 that hangs, as NixOS does, when the initrd lacks
//!   the root disk's drivers ([`stage1`]);
//! - a **PID 1** that assembles the root, runs the generation's stage 2, its
//!   services and a real OpenSSH `sshd` ([`init`]), supervised per host
//!   ([`vmm`]) and driven over a socket ([`control`]);
//! - a small **userland** standing in for systemd's and the boot loaders'
//!   tools ([`userland`]).
//!
//! A host can also be a **virtual machine** ([`vm`]): QEMU with real firmware
//! (OVMF or SeaBIOS), a real boot loader (systemd-boot on a FAT ESP, or GRUB),
//! the generation's real kernel and initrd, Debian's real systemd as PID 1
//! and real sshd; the same control protocol drives it ([`supervisor`]).
//!
//! Systems come from a fixture flake whose toplevels are laid out exactly as
//! nixpkgs lays out NixOS systems ([`fixture`]). [`lab::Lab`] ties it together.

pub mod control;
pub mod disk;
pub mod firmware;
pub mod fixture;
pub mod hardware;
pub mod init;
pub mod install;
pub mod lab;
pub mod layout;
pub mod network;
pub mod process;
pub mod rootfs;
pub mod spec;
pub mod ssh_setup;
pub mod stage1;
pub mod state;
pub mod status_table;
pub mod supervisor;
pub mod testing;
pub mod userland;
pub mod vm;
pub mod vmm;

pub use control::{HostStatus, Power};
pub use lab::Lab;
pub use layout::LabDir;
pub use spec::{Bootloader, DiskBus, HostSpec, LabSpec, Machine};
