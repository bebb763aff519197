//! A machine that runs plain Debian first: what `fleetgate install` (and
//! nixos-anywhere) takes over. Not a lab host and nothing NixOS-shaped: the
//! cached Debian 12 tree ([`super::image`]) as it comes from `mmdebstrap`,
//! with Debian's own kernel (`/boot/vmlinuz-<ver>` and `/lib/modules/<ver>`
//! of this machine, package `linux-image-amd64`) and Debian's own
//! initramfs (`/boot/initrd.img-<ver>`, made by initramfs-tools with
//! `MODULES=most`), booted by systemd-boot on OVMF the way Debian's
//! `systemd-boot` package installs kernels (`kernel-install`'s layout on the
//! ESP: `/<machine-id>/<ver>/linux`, `initrd`, and
//! `loader/entries/<machine-id>-<ver>.conf`). Debian's systemd runs sshd,
//! which takes root's key (Debian's default `PermitRootLogin
//! prohibit-password`); systemd-networkd gives QEMU's user network a fixed
//! address.
//!
//! One disk, as nixos-anywhere installs: the kexec'd installer runs from RAM
//! and partitions the disk Debian booted from (`/dev/vda`). GPT without
//! partition names, as Debian's installer leaves it: the ESP (FAT, label
//! `ESP`, mounted at `/boot/efi`) and the root (ext4, label `debian-root`),
//! assembled without loop devices as [`super::assemble`] does.
//!
//! [`DebianFirstVm`] is one QEMU process (no `-no-reboot`: a reboot stays in
//! it, as on a machine), the serial console in a file, sshd forwarded to a
//! loopback port; dropping it kills QEMU.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use super::image::{self, GuestImage};
use super::qemu;
use crate::process;

const TOOL_TIMEOUT: Duration = Duration::from_secs(600);
const MIB: u64 = 1024 * 1024;
/// The ESP (FAT32 needs at least 33 MiB; Debian's installer makes 512 MiB).
const ESP_MIB: u64 = 128;
/// Debian's root: the tree (~270 MiB) and the kernel's modules (~400 MiB).
const ROOT_MIB: u64 = 1536;
/// The root filesystem's label.
pub const ROOT_LABEL: &str = "debian-root";
/// Guest memory: the kexec installer's initrd unpacks into RAM.
pub const MEMORY_MIB: u32 = 2048;
/// The disk's serial (`/dev/disk/by-id/virtio-<serial>`).
pub const DISK_SERIAL: &str = "fleetgate-install-0";

/// A user who is not root, with root's key authorised and passwordless
/// `sudo` (`/etc/sudoers.d/`), as a cloud image's default user.
pub const SUDO_USER: &str = "admin";
/// Debian's `sudo` package, downloaded once (`apt-get download`) into the
/// lab cache's `vm-debs/`.
const SUDO_PACKAGE: &str = "sudo";

/// The QEMU user network's fixed guest address (10.0.2.15) and route.
const NETWORK: &str = "[Match]\nType=ether\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\n";

/// Debian's kernel on this machine: version, image, initramfs.
pub struct DebianKernel {
    pub version: String,
    pub image: PathBuf,
    pub initrd: PathBuf,
}

impl DebianKernel {
    /// The machine's newest kernel with modules and an initramfs.
    pub fn of_this_machine() -> anyhow::Result<DebianKernel> {
        let (version, image) = crate::fixture::host_kernel()?;
        let initrd = PathBuf::from(format!("/boot/initrd.img-{version}"));
        anyhow::ensure!(
            initrd.is_file(),
            "{} is missing (Debian's linux-image-amd64 makes it with initramfs-tools)",
            initrd.display()
        );
        Ok(DebianKernel { version, image, initrd })
    }
}

/// What makes the machine this test's: root's key and the SSH host key.
pub struct Identity<'a> {
    pub host_name: &'a str,
    /// The client's public key, root's only authorized key.
    pub client_key: &'a str,
    /// A directory with `ssh_host_ed25519_key` and `.pub`.
    pub host_keys: &'a Path,
}

/// Writes `dir/disk.raw` and `dir/efi-vars.fd`: a disk that boots Debian.
pub fn assemble(dir: &Path, id: &Identity<'_>, image: &GuestImage, kernel: &DebianKernel) -> anyhow::Result<()> {
    let root = dir.join("debian-root");
    let esp = dir.join("debian-esp");
    for d in [&root, &esp] {
        if d.exists() {
            fs::remove_dir_all(d)?;
        }
    }
    let result = fill(&root, &esp, id, image, kernel).and_then(|uuid| pack(dir, &root, &esp, &uuid));
    let _ = fs::remove_dir_all(&root);
    let _ = fs::remove_dir_all(&esp);
    result
}

fn fill(
    root: &Path,
    esp: &Path,
    id: &Identity<'_>,
    image: &GuestImage,
    kernel: &DebianKernel,
) -> anyhow::Result<String> {
    process::run(Command::new("cp").args(["-a", "--reflink=auto"]).arg(image.tree()).arg(root), TOOL_TIMEOUT)
        .context("copying the Debian tree")?;
    // Plain Debian: none of the lab's NixOS-like files (a cache built by an
    // older lab may hold them).
    for (path, _) in image::GUEST_FILES {
        let p = root.join(path);
        match p.symlink_metadata() {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&p)?,
            Ok(_) => fs::remove_file(&p)?,
            Err(_) => {}
        }
    }
    let _ = fs::remove_dir(root.join("etc/fleetgate-lab"));
    let modules = root.join("usr/lib/modules");
    fs::create_dir_all(&modules).context("usr/lib/modules")?;
    process::run(
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(Path::new("/lib/modules").join(&kernel.version))
            .arg(&modules),
        TOOL_TIMEOUT,
    )
    .context("copying Debian's kernel modules")?;
    // cpio is in every Debian install (priority important) but mmdebstrap's
    // minbase, and nixos-images' `run` needs it: this machine's (libc only).
    fs::copy("/usr/bin/cpio", root.join("usr/bin/cpio")).context("copying cpio (scripts/setup installs it)")?;
    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")?.trim().to_owned();
    let machine_id = fs::read_to_string("/proc/sys/kernel/random/uuid")?.trim().replace('-', "");
    let etc = root.join("etc");
    fs::write(
        etc.join("fstab"),
        format!("UUID={uuid} / ext4 errors=remount-ro 0 1\nLABEL=ESP /boot/efi vfat umask=0077,nofail 0 1\n"),
    )?;
    fs::create_dir_all(root.join("boot/efi")).context("boot/efi")?;
    fs::write(etc.join("hostname"), format!("{}\n", id.host_name))?;
    // As Debian's installer writes it: without it `sudo` looks its own host
    // name up in DNS, which QEMU's restricted network never answers (each
    // sudo call waited for the resolver: pre-flight as admin took 65 s, as root 2 s).
    fs::write(etc.join("hosts"), format!("127.0.0.1\tlocalhost\n127.0.1.1\t{}\n", id.host_name))?;
    fs::write(etc.join("machine-id"), format!("{machine_id}\n"))?;
    for name in ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"] {
        fs::copy(id.host_keys.join(name), etc.join("ssh").join(name)).with_context(|| format!("installing {name}"))?;
    }
    fs::set_permissions(etc.join("ssh/ssh_host_ed25519_key"), fs::Permissions::from_mode(0o600))?;
    let ssh_dir = root.join("root/.ssh");
    fs::create_dir_all(&ssh_dir).context("root/.ssh")?;
    fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700))?;
    fs::write(ssh_dir.join("authorized_keys"), format!("{}\n", id.client_key))?;
    fs::set_permissions(ssh_dir.join("authorized_keys"), fs::Permissions::from_mode(0o600))?;
    add_sudo_user(root, id.client_key)?;
    image::write_guest_file(root, "etc/systemd/network/10-lab.network", NETWORK)?;
    image::write_guest_file(
        root,
        "etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
        "@link /lib/systemd/system/systemd-networkd.service",
    )?;
    // kernel-install's layout (Debian's systemd-boot package).
    let entry_dir = esp.join(&machine_id).join(&kernel.version);
    fs::create_dir_all(&entry_dir).context("the ESP's entry directory")?;
    fs::copy(&kernel.image, entry_dir.join("linux"))?;
    fs::copy(&kernel.initrd, entry_dir.join("initrd"))?;
    fs::create_dir_all(esp.join("EFI/BOOT"))?;
    fs::create_dir_all(esp.join("loader/entries"))?;
    fs::copy(root.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi"), esp.join("EFI/BOOT/BOOTX64.EFI"))
        .context("systemd-boot's EFI binary (package systemd-boot-efi)")?;
    let entry = format!("{machine_id}-{}", kernel.version);
    fs::write(esp.join("loader/loader.conf"), format!("default {entry}.conf\ntimeout 0\n"))?;
    fs::write(
        esp.join(format!("loader/entries/{entry}.conf")),
        format!(
            "title      Debian GNU/Linux 12 (bookworm)\nversion    {v}\nmachine-id {machine_id}\n\
             linux      /{machine_id}/{v}/linux\ninitrd     /{machine_id}/{v}/initrd\n\
             options    root=UUID={uuid} ro console=ttyS0 panic=30\n",
            v = kernel.version
        ),
    )?;
    Ok(uuid)
}

/// [`SUDO_USER`] with the client's key and passwordless sudo; `sudo`
/// unpacked from Debian's package as dpkg unpacks it (`dpkg-deb -x`; its
/// maintainer scripts only manage the `sudo` group), setuid root.
fn add_sudo_user(root: &Path, client_key: &str) -> anyhow::Result<()> {
    let debs = image::cache_dir().join("vm-debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let find = || -> Option<PathBuf> {
        fs::read_dir(&debs).ok()?.filter_map(Result::ok).map(|e| e.path()).find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{SUDO_PACKAGE}_")) && n.ends_with(".deb"))
        })
    };
    let deb = match find() {
        Some(deb) => deb,
        None => {
            process::run(Command::new("apt-get").args(["download", SUDO_PACKAGE]).current_dir(&debs), TOOL_TIMEOUT)
                .context("downloading Debian's sudo package (apt-get download sudo)")?;
            find().context("apt-get download left no sudo_*.deb")?
        }
    };
    // Unpacked aside first: the package still ships `./lib/systemd/…`, and
    // extracted over the merged-/usr tree it would replace the `/lib`
    // symlink with a directory (dpkg itself follows it).
    let unpacked = root.with_extension("sudo-deb");
    let _ = fs::remove_dir_all(&unpacked);
    process::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked), TOOL_TIMEOUT)
        .context("unpacking sudo (dpkg-deb -x)")?;
    for top in ["bin", "sbin", "lib"] {
        if unpacked.join(top).is_dir() {
            let usr = root.join("usr").join(top);
            process::run(
                Command::new("cp").args(["-a", "--reflink=auto"]).arg(unpacked.join(top).join(".")).arg(&usr),
                TOOL_TIMEOUT,
            )
            .with_context(|| format!("copying sudo's /{top} into /usr/{top}"))?;
            fs::remove_dir_all(unpacked.join(top))?;
        }
    }
    for entry in fs::read_dir(&unpacked)? {
        let entry = entry?.path();
        process::run(Command::new("cp").args(["-a", "--reflink=auto"]).arg(&entry).arg(root), TOOL_TIMEOUT)
            .with_context(|| format!("copying sudo's {}", entry.display()))?;
    }
    fs::remove_dir_all(&unpacked)?;
    let sudo = root.join("usr/bin/sudo");
    std::os::unix::fs::chown(&sudo, Some(0), Some(0))?;
    fs::set_permissions(&sudo, fs::Permissions::from_mode(0o4755))?;
    let user = SUDO_USER;
    let append = |file: &str, line: String| -> anyhow::Result<()> {
        let path = root.join(file);
        let mut text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        text.push_str(&line);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    append("etc/passwd", format!("{user}:x:1000:1000:{user}:/home/{user}:/bin/sh\n"))?;
    append("etc/group", format!("{user}:x:1000:\n"))?;
    append("etc/shadow", format!("{user}:*:20000:0:99999:7:::\n"))?;
    let ssh_dir = root.join("home").join(user).join(".ssh");
    fs::create_dir_all(&ssh_dir)?;
    fs::write(ssh_dir.join("authorized_keys"), format!("{client_key}\n"))?;
    fs::set_permissions(ssh_dir.join("authorized_keys"), fs::Permissions::from_mode(0o600))?;
    for dir in [root.join("home").join(user), ssh_dir.clone(), ssh_dir.join("authorized_keys")] {
        std::os::unix::fs::chown(&dir, Some(1000), Some(1000))?;
    }
    fs::set_permissions(root.join("home").join(user), fs::Permissions::from_mode(0o700))?;
    fs::set_permissions(&ssh_dir, fs::Permissions::from_mode(0o700))?;
    let sudoers = root.join("etc/sudoers.d").join(user);
    fs::create_dir_all(root.join("etc/sudoers.d"))?;
    fs::write(&sudoers, format!("{user} ALL=(ALL:ALL) NOPASSWD: ALL\n"))?;
    fs::set_permissions(&sudoers, fs::Permissions::from_mode(0o440))?;
    Ok(())
}

fn pack(dir: &Path, root: &Path, esp: &Path, uuid: &str) -> anyhow::Result<()> {
    let disk = dir.join("disk.raw");
    let _ = fs::remove_file(&disk);
    let root_start = 1 + ESP_MIB;
    fs::File::create(&disk)?.set_len((root_start + ROOT_MIB + 1) * MIB)?;
    let table = format!(
        "label: gpt\nstart=1MiB, size={ESP_MIB}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
         start={root_start}MiB, size={ROOT_MIB}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"
    );
    process::run_with_input(
        Command::new("sfdisk").args(["--quiet", "--no-reread", "--no-tell-kernel"]).arg(&disk),
        &table,
        TOOL_TIMEOUT,
    )
    .context("partitioning the Debian disk")?;
    super::assemble::write_fat_esp(esp, &dir.join("esp.img"), &disk, ESP_MIB, &["-n", "ESP"])?;
    process::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", ROOT_LABEL, "-U", uuid])
            .args(["-E", &format!("offset={}", root_start * MIB), "-d"])
            .arg(root)
            .arg(&disk)
            .arg(format!("{ROOT_MIB}M")),
        TOOL_TIMEOUT,
    )
    .context("making Debian's root filesystem (mkfs.ext4 -d)")?;
    fs::copy(qemu::OVMF_VARS, dir.join("efi-vars.fd")).with_context(|| format!("copying {}", qemu::OVMF_VARS))?;
    Ok(())
}

/// A running Debian-first machine. Dropping it kills QEMU.
pub struct DebianFirstVm {
    child: Child,
    ssh_port: u16,
    console: PathBuf,
}

impl DebianFirstVm {
    /// Starts QEMU on `dir`'s disk ([`assemble`]d), sshd on `ssh_port`.
    pub fn start(dir: &Path, ssh_port: u16, accel: qemu::Accel) -> anyhow::Result<DebianFirstVm> {
        let console = dir.join("console.log");
        let mut qemu = qemu::qemu_command();
        qemu.args(["-accel", accel.as_str(), "-machine", "q35", "-smp", "1", "-m", &MEMORY_MIB.to_string()])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .arg("-chardev")
            .arg(format!("file,id=serial0,path={}", console.display()))
            .args(["-serial", "chardev:serial0"])
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={}", qemu::OVMF_CODE))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,unit=1,file={}", dir.join("efi-vars.fd").display()))
            .arg("-drive")
            .arg(format!("file={},if=none,id=disk0,format=raw,cache=unsafe", dir.join("disk.raw").display()))
            .args(["-device", &format!("virtio-blk-pci,drive=disk0,serial={DISK_SERIAL}")])
            .args(["-netdev", &format!("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22")])
            .args(["-device", "virtio-net-pci,netdev=net0,romfile="])
            .args(["-device", "virtio-rng-pci"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = qemu.spawn().context("starting qemu-system-x86_64")?;
        Ok(DebianFirstVm { child, ssh_port, console })
    }

    /// Cuts the power (QEMU killed) and starts the machine again on the same
    /// disk, port and firmware variables: a power cycle. The console log
    /// starts anew.
    pub fn power_cycle(&mut self, dir: &Path, accel: qemu::Accel) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = DebianFirstVm::start(dir, self.ssh_port, accel)?;
        Ok(())
    }

    pub fn ssh_port(&self) -> u16 {
        self.ssh_port
    }

    /// The serial console's log.
    pub fn console(&self) -> &Path {
        &self.console
    }

    /// Whether QEMU still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for DebianFirstVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound and released: QEMU takes it next).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a loopback port")?;
    Ok(listener.local_addr()?.port())
}
