//! What a system's `kernel` file is. The boot loader hands it to the
//! firmware or jumps into it, so it must be a kernel image of the system's
//! architecture; for x86 the image also says which kernel release it is,
//! the name its modules directory (`lib/modules/<release>`) must have.
//!
//! The formats, from the kernel's own documentation and headers:
//!
//! * x86 bzImage — `Documentation/arch/x86/boot.rst`: `0xAA55` at 0x1FE,
//!   `HdrS` at 0x202, the protocol version (u16, little endian) at 0x206 and
//!   `kernel_version` (u16) at 0x20E: when non-zero (protocol 2.00 and
//!   later), the NUL-terminated version string starts at
//!   `kernel_version + 0x200`. Its first word is the release (`uname -r`):
//!   `6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP …`.
//! * arm64 Image — `Documentation/arch/arm64/booting.rst`: magic `ARM\x64`
//!   at 0x38.
//! * RISC-V Image — `Documentation/arch/riscv/boot-image-header.rst`: magic2
//!   `RSC\x05` at 0x38.
//! * EFI zboot (a compressed image that is a PE file) —
//!   `drivers/firmware/efi/libstub/zboot-header.S`: `MZ` at 0, `zimg` at 4.
//! * 32-bit ARM zImage — `arch/arm/boot/compressed/head.S`: `0x016F2818`
//!   (little endian) at 0x24.

use std::io::Read;
use std::path::Path;

use fleetgate_files::ReadError;

/// How much of the file is looked at: the x86 version string may start as
/// late as `0xFFFF + 0x200`.
const HEADER_BYTES: u64 = 0x1_0200 + 256;
/// The longest version string read.
const MAX_VERSION_LEN: usize = 256;

/// A kernel image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// x86 `bzImage` (boot protocol header `HdrS`).
    X86BzImage,
    /// arm64 `Image`.
    Arm64Image,
    /// RISC-V `Image`.
    RiscvImage,
    /// EFI zboot (`vmlinuz.efi`, arm64 and RISC-V).
    EfiZboot,
    /// 32-bit ARM `zImage`.
    ArmZImage,
}

impl KernelFormat {
    /// The formats a system (`x86_64-linux`, …) boots; `None` for a system
    /// this module knows no format of.
    #[must_use]
    pub fn for_system(system: &str) -> Option<&'static [KernelFormat]> {
        match system.strip_suffix("-linux")? {
            "x86_64" | "i686" => Some(&[KernelFormat::X86BzImage]),
            "aarch64" => Some(&[KernelFormat::Arm64Image, KernelFormat::EfiZboot]),
            "riscv64" => Some(&[KernelFormat::RiscvImage, KernelFormat::EfiZboot]),
            "armv7l" | "armv6l" | "armv5tel" => Some(&[KernelFormat::ArmZImage]),
            _ => None,
        }
    }

    /// `x86 bzImage`, …
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            KernelFormat::X86BzImage => "x86 bzImage",
            KernelFormat::Arm64Image => "arm64 Image",
            KernelFormat::RiscvImage => "RISC-V Image",
            KernelFormat::EfiZboot => "EFI zboot image",
            KernelFormat::ArmZImage => "ARM zImage",
        }
    }
}

/// What [`inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelImage {
    /// The format.
    pub format: KernelFormat,
    /// The kernel release (`uname -r`), when the format states it.
    pub release: Option<String>,
}

/// Reads the header of the kernel file at `path`: `Ok(None)` when it is a
/// regular file but no kernel image format is recognised.
///
/// # Errors
/// As [`fleetgate_files::open_regular`] (missing, not a regular file).
pub fn inspect(path: &Path) -> Result<Option<KernelImage>, ReadError> {
    let file = fleetgate_files::open_regular(path)?;
    let mut head = Vec::new();
    file.take(HEADER_BYTES)
        .read_to_end(&mut head)
        .map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
    Ok(recognise(&head))
}

fn at<const N: usize>(head: &[u8], offset: usize) -> Option<[u8; N]> {
    head.get(offset..offset + N)?.try_into().ok()
}

/// Recognises a kernel image from its first bytes.
#[must_use]
pub fn recognise(head: &[u8]) -> Option<KernelImage> {
    let image = |format| Some(KernelImage { format, release: None });
    if at::<2>(head, 0x1FE) == Some([0x55, 0xAA]) && at::<4>(head, 0x202) == Some(*b"HdrS") {
        return Some(KernelImage { format: KernelFormat::X86BzImage, release: x86_release(head) });
    }
    if at::<4>(head, 0x38) == Some(*b"ARM\x64") {
        return image(KernelFormat::Arm64Image);
    }
    if at::<4>(head, 0x38) == Some(*b"RSC\x05") {
        return image(KernelFormat::RiscvImage);
    }
    if at::<2>(head, 0) == Some(*b"MZ") && at::<4>(head, 4) == Some(*b"zimg") {
        return image(KernelFormat::EfiZboot);
    }
    if at::<4>(head, 0x24) == Some(0x016F_2818_u32.to_le_bytes()) {
        return image(KernelFormat::ArmZImage);
    }
    None
}

/// The release in an x86 bzImage's version string (boot protocol 2.00+).
fn x86_release(head: &[u8]) -> Option<String> {
    let protocol = u16::from_le_bytes(at::<2>(head, 0x206)?);
    let pointer = u16::from_le_bytes(at::<2>(head, 0x20E)?);
    if protocol < 0x200 || pointer == 0 {
        return None;
    }
    let start = usize::from(pointer) + 0x200;
    let rest = head.get(start..)?;
    let text = &rest[..rest.len().min(MAX_VERSION_LEN)];
    let end = text.iter().position(|&b| b == 0)?;
    let release = std::str::from_utf8(&text[..end]).ok()?.split_whitespace().next()?;
    (!release.is_empty()).then(|| release.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage header as `arch/x86/boot/header.S` lays it out.
    fn bzimage(version: &str, protocol: u16) -> Vec<u8> {
        let mut head = vec![0u8; 0x4000];
        head[..2].copy_from_slice(b"MZ");
        head[0x1FE..0x200].copy_from_slice(&[0x55, 0xAA]);
        head[0x202..0x206].copy_from_slice(b"HdrS");
        head[0x206..0x208].copy_from_slice(&protocol.to_le_bytes());
        head[0x20E..0x210].copy_from_slice(&0x3000u16.to_le_bytes());
        head[0x3200..0x3200 + version.len()].copy_from_slice(version.as_bytes());
        head
    }

    #[test]
    fn x86_images_state_their_release() {
        let head = bzimage("6.6.1 (nixbld@localhost) #1-NixOS SMP", 0x20F);
        assert_eq!(
            recognise(&head),
            Some(KernelImage { format: KernelFormat::X86BzImage, release: Some("6.6.1".into()) })
        );
        // Before protocol 2.00 the pointer means nothing; an unterminated
        // string is no release either.
        assert_eq!(recognise(&bzimage("6.6.1 x", 0x1FF)).and_then(|k| k.release), None);
        let mut open = bzimage("", 0x20F);
        open.truncate(0x3200);
        open.extend(std::iter::repeat_n(b'a', 300));
        assert_eq!(recognise(&open).and_then(|k| k.release), None);
        assert_eq!(recognise(&bzimage("", 0x20F)).and_then(|k| k.release), None);
    }

    #[test]
    fn other_formats_by_their_magic_and_garbage_by_none() {
        let mut head = vec![0u8; 0x100];
        head[0x38..0x3C].copy_from_slice(b"ARM\x64");
        assert_eq!(recognise(&head).map(|k| k.format), Some(KernelFormat::Arm64Image));
        head[0x38..0x3C].copy_from_slice(b"RSC\x05");
        assert_eq!(recognise(&head).map(|k| k.format), Some(KernelFormat::RiscvImage));
        let mut zboot = vec![0u8; 0x100];
        zboot[..8].copy_from_slice(b"MZ\0\0zimg");
        assert_eq!(recognise(&zboot).map(|k| k.format), Some(KernelFormat::EfiZboot));
        let mut zimage = vec![0u8; 0x100];
        zimage[0x24..0x28].copy_from_slice(&[0x18, 0x28, 0x6F, 0x01]);
        assert_eq!(recognise(&zimage).map(|k| k.format), Some(KernelFormat::ArmZImage));
        assert_eq!(recognise(b"#!/bin/sh\necho not a kernel\n"), None);
        assert_eq!(recognise(&[]), None);
        assert_eq!(recognise(&vec![0u8; 1 << 16]), None);
    }

    #[test]
    fn systems_name_their_formats() {
        assert_eq!(KernelFormat::for_system("x86_64-linux"), Some(&[KernelFormat::X86BzImage][..]));
        assert!(KernelFormat::for_system("aarch64-linux").is_some_and(|f| f.contains(&KernelFormat::Arm64Image)));
        assert_eq!(KernelFormat::for_system("mips64el-linux"), None);
        assert_eq!(KernelFormat::for_system("x86_64-darwin"), None);
    }
}
