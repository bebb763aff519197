//! The VM host: a lab host that *is* a machine. Where a netns host models
//! firmware, stage 1 and systemd ([`crate::vmm`]), a VM host runs them:
//!
//! - **QEMU** ([`qemu`]): q35, the root disk on virtio-blk (or NVMe, AHCI),
//!   KVM only if it really works here, else TCG;
//! - **real firmware and boot loaders**: OVMF + systemd-boot on a FAT ESP
//!   (EFI variables in OVMF's own variable store, kept across resets), or
//!   SeaBIOS + GRUB installed in the MBR and BIOS boot partition
//!   ([`grub_bios`]);
//! - the generation's **real kernel and initrd**, whose busybox stage 1 waits
//!   for the root by label and hangs, printing what systemd prints, when it
//!   never appears; its stage 2 hands over to
//! - Debian's **real systemd as PID 1**, **real sshd**, Debian's **nix-bin**
//!   with the host's own store ([`image`], [`assemble`]).
//!
//! A supervisor per VM ([`supervisor`]) answers the lab's control protocol,
//! driving QEMU over QMP ([`qmp`]) and reading the serial console
//! ([`console`]). The guest reaches this machine only through the loopback
//! forwards of [`forward`].

pub mod assemble;
pub mod console;
pub mod debian_first;
pub mod forward;
pub mod grub_bios;
pub mod image;
pub mod kexec_installer;
pub mod kexec_tarball;
pub mod qemu;
pub mod qmp;
pub mod supervisor;
