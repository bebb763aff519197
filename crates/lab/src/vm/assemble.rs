//! Making a VM host's disk, as `nixos-install` would on a fresh machine, but
//! into an image file and without a loop device or a mount of it:
//!
//! 1. copy the cached guest tree ([`super::image`]), add the guest's
//!    NixOS-like files ([`super::image::GUEST_FILES`]) and the host's
//!    identity (hostname, machine id, SSH host key, root's authorized key,
//!    `/etc/fstab`, `nix.conf`);
//! 2. `nix copy` the first generation's closure into its own store;
//! 3. in a chroot (private mount namespace, `/dev`, `/proc`, `/sys` bound in,
//!    as `nixos-enter` does): set the system profile, run the generation's
//!    `switch-to-configuration boot` with `NIXOS_INSTALL_BOOTLOADER=1` —
//!    the fixture's boot loader installer writes the ESP's entries or
//!    `grub.cfg`;
//! 4. pack it: a GPT made by `sfdisk` (partition names as disko gives them),
//!    the ESP as a FAT filesystem (`mkfs.vfat`, filled with `mtools`), the
//!    root as ext4 labelled `NIXOS_ROOT` filled by `mkfs.ext4 -d`; for BIOS
//!    hosts, GRUB's `core.img` (`grub-mkimage`) in the BIOS boot partition
//!    and `boot.img` in the MBR ([`super::grub_bios`]); for GRUB on UEFI,
//!    GRUB's EFI image as the ESP's `EFI/BOOT/BOOTX64.EFI`, and no GRUB
//!    tools in the system (`device = "nodev"`).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use super::grub_bios;
use super::image::GuestImage;
use super::qemu;
use crate::install;
use crate::layout::HostDir;
use crate::process;
use crate::spec::Bootloader;
use crate::state::HostState;

const COPY_TIMEOUT: Duration = Duration::from_secs(600);
const TOOL_TIMEOUT: Duration = Duration::from_secs(300);
const MIB: u64 = 1024 * 1024;
/// The ESP of UEFI hosts (disko's usual `size = "256M"`).
const ESP_MIB: u64 = 256;
/// GRUB's BIOS boot partition (disko's `size = "1M"; type = "EF02"`).
const BIOS_BOOT_MIB: u64 = 1;
/// GRUB modules for BIOS, from Debian's `grub-pc-bin`.
const GRUB_I386_PC: &str = "/usr/lib/grub/i386-pc";
/// What `core.img` needs to find and read `/boot/grub` on the root filesystem.
const GRUB_CORE_MODULES: &[&str] = &["biosdisk", "part_gpt", "ext2"];
/// GRUB modules for UEFI, from Debian's `grub-efi-amd64-bin`.
const GRUB_X86_64_EFI: &str = "/usr/lib/grub/x86_64-efi";
/// What GRUB's EFI image needs to find and read `/grub` on the ESP.
const GRUB_EFI_MODULES: &[&str] = &["part_gpt", "fat"];
/// The GRUB tools a system with `boot.loader.grub.device = "nodev"` does not
/// have (NixOS puts no GRUB package in it), removed from such a guest.
const GRUB_TOOLS: &[&str] = &[
    "usr/sbin/grub-reboot",
    "usr/sbin/grub-set-default",
    "usr/sbin/grub-install",
    "usr/sbin/grub-mkconfig",
    "usr/sbin/grub-probe",
    "usr/bin/grub-editenv",
];

/// Everything a VM's disk gets that is the host's own.
pub struct HostIdentity<'a> {
    pub host: &'a HostState,
    pub dir: &'a HostDir,
    /// The lab's public client key, root's only authorized key.
    pub client_key: &'a str,
    /// Where the host's SSH host key pair is.
    pub host_keys: &'a Path,
}

/// Builds `id.dir`'s `disk.raw` with `system` installed as generation 1.
pub fn assemble(id: &HostIdentity<'_>, image: &GuestImage, system: &str) -> anyhow::Result<()> {
    let root = id.dir.vm_root_dir();
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    let result = fill_root(id, image, system, &root).and_then(|()| pack(id, &root));
    let _ = fs::remove_dir_all(&root);
    result
}

fn fill_root(id: &HostIdentity<'_>, image: &GuestImage, system: &str, root: &Path) -> anyhow::Result<()> {
    process::run(Command::new("cp").args(["-a", "--reflink=auto"]).arg(image.tree()).arg(root), COPY_TIMEOUT)
        .context("copying the guest tree")?;
    for (path, text) in super::image::GUEST_FILES {
        super::image::write_guest_file(root, path, text)?;
    }
    let host = id.host;
    let etc = root.join("etc");
    fs::write(etc.join("fstab"), fstab(host))?;
    install::write_identity(&etc, root, id.host_keys, host.name(), id.client_key)?;
    install::copy_closure(root, system)?;
    // UEFI: the installer writes to /boot on a filesystem of its own, as on
    // the machine (GRUB then copies kernels there); its content is the ESP's.
    let esp = esp_dir(id);
    let _ = fs::remove_dir_all(&esp);
    if qemu::uses_uefi(host) {
        fs::create_dir_all(&esp)?;
    }
    let mut install = Command::new("unshare");
    install
        .args(["--mount", "--propagation", "private", "--", "sh", "-euc", INSTALL_SCRIPT, "install"])
        .arg(root)
        .arg(system)
        .arg(if qemu::uses_uefi(host) { esp.as_os_str() } else { "".as_ref() });
    process::run(&mut install, TOOL_TIMEOUT)
        .context("installing the first generation (switch-to-configuration boot)")?;
    match host.spec.bootloader {
        Bootloader::Grub => copy_grub_modules(GRUB_I386_PC, &root.join("boot/grub/i386-pc"))?,
        Bootloader::GrubEfi => {
            // grub-install --target=x86_64-efi --removable, done by hand: the
            // modules, and GRUB as the ESP's default loader.
            copy_grub_modules(GRUB_X86_64_EFI, &esp.join("grub/x86_64-efi"))?;
            fs::create_dir_all(esp.join("EFI/BOOT"))?;
            let mut mkimage = Command::new("grub-mkimage");
            mkimage
                .args(["-O", "x86_64-efi", "-o"])
                .arg(esp.join("EFI/BOOT/BOOTX64.EFI"))
                .args(["-p", "(hd0,gpt1)/grub"])
                .args(GRUB_EFI_MODULES);
            process::run(&mut mkimage, TOOL_TIMEOUT).context("making GRUB's EFI image (grub-mkimage)")?;
            for tool in GRUB_TOOLS {
                let _ = fs::remove_file(root.join(tool));
            }
        }
        Bootloader::SystemdBoot => {}
    }
    Ok(())
}

/// Where a UEFI host's ESP content is staged.
fn esp_dir(id: &HostIdentity<'_>) -> std::path::PathBuf {
    id.dir.root().join("esp")
}

/// Run in a private mount namespace: what `nixos-install` does in
/// `nixos-enter`. With a third argument, /boot is a filesystem of its own
/// (a tmpfs) whose content is kept there: the ESP.
const INSTALL_SCRIPT: &str = r#"root=$1 system=$2 esp=$3
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
if [ -n "$esp" ]; then mount -t tmpfs esp "$root/boot"; fi
chroot "$root" /usr/bin/nix-env -p /nix/var/nix/profiles/system --set "$system"
NIXOS_INSTALL_BOOTLOADER=1 chroot "$root" /usr/bin/env PATH=/usr/bin:/usr/sbin:/bin:/sbin \
  "$system/bin/switch-to-configuration" boot
if [ -n "$esp" ]; then cp -a "$root/boot/." "$esp/"; fi
"#;

/// The guest's `/etc/fstab`: the root by label, the ESP by partition name.
fn fstab(host: &HostState) -> String {
    let mut text =
        format!("# Written by fleetgate-lab.\n/dev/disk/by-label/{} / ext4 defaults 0 1\n", host.spec.root_label);
    if qemu::uses_uefi(host) {
        text.push_str(&format!("/dev/disk/by-partlabel/{} /boot vfat umask=0077 0 2\n", host.disks.esp_part_label));
    }
    text
}

/// `grub-install`'s copy of the platform's modules (`/boot/grub/<platform>`).
fn copy_grub_modules(from: &str, target: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(target)?;
    for entry in
        fs::read_dir(from).with_context(|| format!("reading {from} (scripts/setup installs GRUB's modules)"))?
    {
        let entry = entry?;
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if name_text.ends_with(".mod") || name_text.ends_with(".lst") {
            fs::copy(entry.path(), target.join(&name))?;
        }
    }
    Ok(())
}

/// The partition layout of a host's disk, in MiB.
struct Layout {
    /// ESP (UEFI) or BIOS boot partition (BIOS).
    first_mib: u64,
    root_start_mib: u64,
    root_mib: u64,
}

impl Layout {
    fn of(host: &HostState) -> Layout {
        let first_mib = if qemu::uses_uefi(host) { ESP_MIB } else { BIOS_BOOT_MIB };
        Layout { first_mib, root_start_mib: 1 + first_mib, root_mib: host.spec.root_size_mib }
    }

    fn disk_mib(&self) -> u64 {
        // One more MiB at the end for the backup GPT.
        self.root_start_mib + self.root_mib + 1
    }
}

fn pack(id: &HostIdentity<'_>, root: &Path) -> anyhow::Result<()> {
    let host = id.host;
    let layout = Layout::of(host);
    let disk = id.dir.disk_image();
    let _ = fs::remove_file(&disk);
    fs::File::create(&disk)?.set_len(layout.disk_mib() * MIB)?;
    let first = if qemu::uses_uefi(host) {
        format!(
            "start=1MiB, size={}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid={}, name={}\n",
            layout.first_mib, host.disks.esp_part_uuid, host.disks.esp_part_label
        )
    } else {
        format!(
            "start=1MiB, size={}MiB, type=21686148-6449-6E6F-744E-656564454649, name=disk-main-boot\n",
            layout.first_mib
        )
    };
    let table = format!(
        "label: gpt\n{first}start={}MiB, size={}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid={}, name={}\n",
        layout.root_start_mib, layout.root_mib, host.disks.root_part_uuid, host.disks.root_part_label
    );
    process::run_with_input(
        Command::new("sfdisk").args(["--quiet", "--no-reread", "--no-tell-kernel"]).arg(&disk),
        &table,
        TOOL_TIMEOUT,
    )
    .context("partitioning the VM disk")?;
    if qemu::uses_uefi(host) {
        // /boot on the root stays an empty mount point.
        write_esp(id, &esp_dir(id), &disk)?;
        fs::remove_dir_all(esp_dir(id))?;
    }
    let offset = (layout.root_start_mib * MIB).to_string();
    process::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", &host.spec.root_label, "-U", &host.disks.root_fs_uuid])
            .args(["-E", &format!("offset={offset}"), "-d"])
            .arg(root)
            .arg(&disk)
            .arg(format!("{}M", layout.root_mib)),
        TOOL_TIMEOUT,
    )
    .context("making the root filesystem (mkfs.ext4 -d)")?;
    if !qemu::uses_uefi(host) {
        let core = id.dir.root().join("core.img");
        let mut mkimage = Command::new("grub-mkimage");
        mkimage.args(["-O", "i386-pc", "-o"]).arg(&core).args(["-p", "(hd0,gpt2)/boot/grub"]).args(GRUB_CORE_MODULES);
        process::run(&mut mkimage, TOOL_TIMEOUT).context("making GRUB's core.img (grub-mkimage)")?;
        let boot_img = fs::read(Path::new(GRUB_I386_PC).join("boot.img"))?;
        let core_img = fs::read(&core)?;
        let _ = fs::remove_file(&core);
        grub_bios::install(&disk, &boot_img, &core_img, MIB / 512, layout.first_mib * MIB / 512)?;
    } else {
        fs::copy(qemu::OVMF_VARS, id.dir.efi_vars()).with_context(|| format!("copying {} (ovmf)", qemu::OVMF_VARS))?;
    }
    Ok(())
}

/// The ESP of a host: [`write_fat_esp`] with the host's volume serial.
fn write_esp(id: &HostIdentity<'_>, content: &Path, disk: &Path) -> anyhow::Result<()> {
    let serial: String = id.host.disks.esp_fs_uuid.chars().filter(char::is_ascii_hexdigit).take(8).collect();
    write_fat_esp(content, &id.dir.root().join("esp.img"), disk, ESP_MIB, &["-s", "1", "-n", "BOOT", "-i", &serial])
}

/// An ESP of `mib` MiB: a FAT32 image (`mkfs.vfat -F 32` + `extra`) at
/// `scratch`, filled from `content` with `mcopy`, then written into `disk`
/// at 1 MiB.
pub fn write_fat_esp(content: &Path, scratch: &Path, disk: &Path, mib: u64, extra: &[&str]) -> anyhow::Result<()> {
    let esp = scratch;
    let _ = fs::remove_file(esp);
    fs::File::create(esp)?.set_len(mib * MIB)?;
    process::run(Command::new("mkfs.vfat").args(["-F", "32"]).args(extra).arg(esp), TOOL_TIMEOUT)
        .context("making the ESP (mkfs.vfat)")?;
    let mut mcopy = Command::new("mcopy");
    mcopy.args(["-s", "-p", "-i"]).arg(esp);
    for entry in fs::read_dir(content)? {
        mcopy.arg(entry?.path());
    }
    mcopy.arg("::/");
    process::run(&mut mcopy, TOOL_TIMEOUT).context("filling the ESP (mcopy)")?;
    process::run(
        Command::new("dd").arg(format!("if={}", esp.display())).arg(format!("of={}", disk.display())).args([
            "bs=1M",
            "seek=1",
            "conv=notrunc,sparse",
            "status=none",
        ]),
        TOOL_TIMEOUT,
    )
    .context("writing the ESP into the disk")?;
    let _ = fs::remove_file(esp);
    Ok(())
}
