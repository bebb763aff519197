//! Installing GRUB for BIOS on a disk image, as `grub-install --target=i386-pc`
//! does on a GPT disk: `core.img` (made by Debian's real `grub-mkimage`) goes
//! into the BIOS boot partition, and `boot.img` (Debian's) into the MBR,
//! told where `core.img` starts.
//!
//! `grub-install` itself cannot do this here: it wants a block device (and
//! the lab makes no loop devices), and its `grub-bios-setup` finds the
//! root device by probing the directory it installs from. So the lab does
//! the few writes `grub-bios-setup` does (GRUB 2.06 `util/setup.c`, offsets
//! from `include/grub/i386/pc/boot.h`): copy the MBR's BPB area and partition
//! table into `boot.img`, turn its floppy drive check into NOPs (hard disk),
//! point its kernel sector at the first sector of `core.img`, and point the
//! blocklist at the end of `core.img`'s first sector (`diskboot.img`) at the
//! rest of it. No Reed-Solomon codes are added (`--no-rs-codes`).

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

const SECTOR: usize = 512;
/// `GRUB_BOOT_MACHINE_BPB_START` / `_BPB_END`.
const BPB: std::ops::Range<usize> = 0x3..0x5a;
/// `GRUB_BOOT_MACHINE_KERNEL_SECTOR`: 64-bit LBA of core.img.
const KERNEL_SECTOR: usize = 0x5c;
/// `GRUB_BOOT_MACHINE_DRIVE_CHECK`: a 2-byte jump, NOPed for hard disks.
const DRIVE_CHECK: usize = 0x66;
/// `GRUB_BOOT_MACHINE_WINDOWS_NT_MAGIC` to `GRUB_BOOT_MACHINE_PART_END`: disk
/// signature and partition table, kept from the disk.
const PARTITION_TABLE: std::ops::Range<usize> = 0x1b8..0x1fe;
/// The first blocklist entry of diskboot.img: `{u64 start; u16 len; u16 segment}`
/// in the last 12 bytes of the sector.
const BLOCKLIST: usize = SECTOR - 12;

#[derive(Debug, thiserror::Error)]
pub enum GrubSetupError {
    #[error("boot.img must be one sector, it is {0} bytes")]
    BootImage(usize),
    #[error("core.img ({size} bytes) does not fit the BIOS boot partition ({room} bytes)")]
    TooBig { size: usize, room: u64 },
    #[error("core.img is too short ({0} bytes) to be GRUB's")]
    CoreImage(usize),
    #[error("writing GRUB to {path}")]
    Io { path: String, source: std::io::Error },
}

/// Writes `boot_img` to the MBR of `disk` and `core_img` to the partition
/// starting at LBA `partition_start`, `partition_sectors` long.
pub fn install(
    disk: &Path,
    boot_img: &[u8],
    core_img: &[u8],
    partition_start: u64,
    partition_sectors: u64,
) -> Result<(), GrubSetupError> {
    if boot_img.len() != SECTOR {
        return Err(GrubSetupError::BootImage(boot_img.len()));
    }
    if core_img.len() < SECTOR {
        return Err(GrubSetupError::CoreImage(core_img.len()));
    }
    let room = partition_sectors * SECTOR as u64;
    if core_img.len() as u64 > room {
        return Err(GrubSetupError::TooBig { size: core_img.len(), room });
    }
    let io = |source| GrubSetupError::Io { path: disk.display().to_string(), source };
    let mut file = OpenOptions::new().read(true).write(true).open(disk).map_err(io)?;
    let mut mbr = [0u8; SECTOR];
    file.read_exact(&mut mbr).map_err(io)?;
    let (boot, core) = patch(&mbr, boot_img, core_img, partition_start);
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(&boot).map_err(io)?;
    file.seek(SeekFrom::Start(partition_start * SECTOR as u64)).map_err(io)?;
    file.write_all(&core).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

/// The MBR and core image as `grub-bios-setup` leaves them.
fn patch(mbr: &[u8; SECTOR], boot_img: &[u8], core_img: &[u8], start: u64) -> (Vec<u8>, Vec<u8>) {
    let mut boot = boot_img.to_vec();
    boot[BPB].copy_from_slice(&mbr[BPB]);
    boot[DRIVE_CHECK] = 0x90;
    boot[DRIVE_CHECK + 1] = 0x90;
    boot[PARTITION_TABLE].copy_from_slice(&mbr[PARTITION_TABLE]);
    boot[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&start.to_le_bytes());
    let sectors = core_img.len().div_ceil(SECTOR);
    let mut core = core_img.to_vec();
    core.resize(sectors * SECTOR, 0);
    core[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&(start + 1).to_le_bytes());
    let rest = u16::try_from(sectors - 1).unwrap_or(u16::MAX);
    core[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&rest.to_le_bytes());
    (boot, core)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_img_keeps_the_partition_table_and_points_at_core_img() {
        let mut mbr = [0u8; SECTOR];
        mbr[0x1be] = 0xee; // GPT protective entry
        mbr[0x1fe] = 0x55;
        mbr[0x1ff] = 0xaa;
        mbr[0x10] = 0x42; // BPB area
        let boot_img = vec![0xccu8; SECTOR];
        let mut core_img = vec![0x11u8; 3 * SECTOR + 7];
        // diskboot.img's default blocklist: start 2, len 52, segment 0x820.
        core_img[BLOCKLIST..BLOCKLIST + 12].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 52, 0, 0x20, 0x08]);
        let (boot, core) = patch(&mbr, &boot_img, &core_img, 2048);
        assert_eq!(boot.len(), SECTOR);
        assert_eq!(boot[0x1be], 0xee, "partition table kept");
        assert_eq!(boot[0x10], 0x42, "BPB kept");
        assert_eq!(&boot[0x1fe..], &[0xcc, 0xcc], "boot.img's own last bytes stay (its signature)");
        assert_eq!(&boot[DRIVE_CHECK..DRIVE_CHECK + 2], &[0x90, 0x90]);
        assert_eq!(u64::from_le_bytes(boot[KERNEL_SECTOR..KERNEL_SECTOR + 8].try_into().unwrap()), 2048);
        assert_eq!(core.len(), 4 * SECTOR, "padded to whole sectors");
        assert_eq!(&core[BLOCKLIST..BLOCKLIST + 12], &[0x01, 0x08, 0, 0, 0, 0, 0, 0, 3, 0, 0x20, 0x08]);
        assert_eq!(boot[0x100], 0xcc, "boot code untouched");
    }

    #[test]
    fn a_core_img_larger_than_the_partition_is_refused() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(4 * SECTOR as u64).unwrap();
        let err = install(tmp.path(), &[0; SECTOR], &[0; 3 * SECTOR], 1, 2).unwrap_err();
        assert!(matches!(err, GrubSetupError::TooBig { .. }), "{err}");
        let err = install(tmp.path(), &[0; 100], &[0; SECTOR], 1, 2).unwrap_err();
        assert!(matches!(err, GrubSetupError::BootImage(100)), "{err}");
    }
}
