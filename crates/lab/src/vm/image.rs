//! The guest's base: a Debian 12 root filesystem tree made by `mmdebstrap`
//! from Debian's packages (no loop device, no mount of an image), with real
//! systemd, udev, OpenSSH, Debian's `nix-bin`, and the boot tools
//! (`systemd-boot`'s `bootctl` and `systemd-bless-boot`, GRUB's
//! `grub-reboot`/`grub-editenv`), made NixOS-like where that changes what
//! fleetgate sees ([`GUEST_FILES`]).
//!
//! The Debian part is built once per machine and kept in the lab cache
//! (`$FLEETGATE_LAB_CACHE`, default `/var/cache/fleetgate-lab`) under the hash
//! of its recipe (release, packages, excludes): changing the recipe builds a
//! new one. Hosts copy it, add [`GUEST_FILES`] (cheap, so not cached) and
//! their own identity, store and boot loader ([`super::assemble`]).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use rustix::fs::{FlockOperation, flock};
use sha2::{Digest, Sha256};

use crate::process;

/// The default machine-wide cache of the lab.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/fleetgate-lab";
/// `mmdebstrap` downloads ~100 MB from the Debian mirror and installs it.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

/// Debian release and packages of the guest.
pub const SUITE: &str = "bookworm";
const PACKAGES: &[&str] = &[
    // PID 1 and the device manager
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "procps",
    "e2fsprogs",
    // what fleetgate talks to
    "openssh-server",
    "nix-bin",
    // the fixture's switch-to-configuration and boot loader installer (Perl, JSON::PP)
    "perl",
    // boot tools: bootctl, systemd-bless-boot, the systemd-boot EFI binary
    "systemd-boot",
    "systemd-boot-efi",
    // grub-reboot, grub-set-default, grub-editenv
    "grub2-common",
];
/// Paths dpkg leaves out: documentation nobody reads on a test VM.
pub const DPKG_EXCLUDES: &[&str] =
    &["/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*"];

/// The guest's own files, the same on every host (see each one's comment).
pub const GUEST_FILES: &[(&str, &str)] = &[
    (
        // NixOS's system manager gives units no coreutils: a transient unit
        // (`systemd-run`) finds no `ln`, `mv` or `sleep`, only what the
        // generation's `sw/bin` holds. (systemd's built-in default PATH would
        // find Debian's /usr/bin here.)
        "etc/systemd/system.conf.d/50-nixos-path.conf",
        "# Written by fleetgate-lab: units get no coreutils, as on NixOS.\n[Manager]\nDefaultEnvironment=PATH=/run/current-system/sw/bin\n",
    ),
    (
        // QEMU's user network: fixed address, its gateway; no DHCP wait.
        "etc/systemd/network/10-lab.network",
        "[Match]\nType=ether\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\n",
    ),
    (
        "etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
        "@link /lib/systemd/system/systemd-networkd.service",
    ),
    (
        // The lab's only instrument in the guest: once sshd runs, tell the
        // supervisor on the serial port (boot id, booted system, and the
        // systemd-boot entry the firmware booted, if any).
        "etc/systemd/system/fleetgate-lab-ready.service",
        "[Unit]\nDescription=fleetgate lab: tell the host supervisor this boot is up\n\
         After=ssh.service multi-user.target\n\n\
         [Service]\nType=oneshot\nExecStart=/bin/sh /etc/fleetgate-lab/ready.sh\n\n\
         [Install]\nWantedBy=multi-user.target\n",
    ),
    (
        "etc/systemd/system/multi-user.target.wants/fleetgate-lab-ready.service",
        "@link /etc/systemd/system/fleetgate-lab-ready.service",
    ),
    (
        // Absolute paths: the unit's PATH has no coreutils.
        "etc/fleetgate-lab/ready.sh",
        "entry=\nvar=/sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f\n\
         if [ -r \"$var\" ]; then entry=$(/usr/bin/cat \"$var\" | /usr/bin/tail -c +5 | /usr/bin/tr -d '\\000'); fi\n\
         echo \"\n@@fleetgate-lab ready $(/usr/bin/cat /proc/sys/kernel/random/boot_id) $(/usr/bin/readlink /run/booted-system) $entry\" > /dev/ttyS0\n",
    ),
    (
        // NixOS has no /lib/modules: the kernel's modules are the booted
        // generation's (`kernel-modules`), found through /run/booted-system.
        "usr/lib/modules",
        "@link /run/booted-system/kernel-modules/lib/modules",
    ),
    (
        // An SSH session's PATH as a NixOS root login has it, then Debian's
        // (the guest's tools live there; sw/bin links to them).
        "etc/ssh/sshd_config.d/fleetgate-lab.conf",
        "# Written by fleetgate-lab.\nSetEnv PATH=/run/wrappers/bin:/run/current-system/sw/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nPasswordAuthentication no\n",
    ),
    (
        // switch-to-configuration refuses to run on anything but NixOS.
        "etc/NIXOS",
        "",
    ),
];

/// A built guest tree.
pub struct GuestImage {
    tree: PathBuf,
}

impl GuestImage {
    /// The root filesystem tree hosts copy.
    pub fn tree(&self) -> &Path {
        &self.tree
    }
}

/// The lab's machine-wide cache directory.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("FLEETGATE_LAB_CACHE").map_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR), PathBuf::from)
}

/// The hash of everything that decides the cached tree's content.
pub fn recipe_hash() -> String {
    let mut hash = Sha256::new();
    hash.update(SUITE);
    for item in PACKAGES.iter().chain(DPKG_EXCLUDES) {
        hash.update([0]);
        hash.update(item);
    }
    hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The cached guest image, built first if this recipe has none yet.
/// Concurrent callers wait for one build.
pub fn ensure(progress: &mut dyn FnMut(&str)) -> anyhow::Result<GuestImage> {
    let dir = cache_dir().join(format!("vm-guest-{}", recipe_hash()));
    let tree = dir.join("tree");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = File::create(dir.join("lock"))?;
    flock(&lock, FlockOperation::LockExclusive).context("locking the guest image cache")?;
    if !tree.join("etc/debian_version").exists() {
        progress(&format!("building the VM guest image (Debian {SUITE}, once per machine) in {}", dir.display()));
        build(&dir, &tree)?;
    }
    Ok(GuestImage { tree })
}

fn build(dir: &Path, tree: &Path) -> anyhow::Result<()> {
    let partial = dir.join("tree.partial");
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    if tree.exists() {
        fs::remove_dir_all(tree)?;
    }
    debian_tree(PACKAGES, &partial).context("building the VM guest")?;
    fs::rename(&partial, tree)?;
    Ok(())
}

/// A Debian [`SUITE`] tree of `packages` at `target` by `mmdebstrap`
/// (minbase, [`DPKG_EXCLUDES`] left out), without SSH host keys or a machine
/// id: each machine made from it gets its own (or the old OS's).
pub fn debian_tree(packages: &[&str], target: &Path) -> anyhow::Result<()> {
    let mut mmdebstrap = Command::new("mmdebstrap");
    mmdebstrap.args(["--variant=minbase", "--mode=root", "--format=directory", "--quiet"]);
    mmdebstrap.arg(format!("--include={}", packages.join(",")));
    for exclude in DPKG_EXCLUDES {
        mmdebstrap.arg(format!("--dpkgopt=path-exclude={exclude}"));
    }
    mmdebstrap.arg(SUITE).arg(target);
    process::run(&mut mmdebstrap, BUILD_TIMEOUT).context("mmdebstrap")?;
    for entry in fs::read_dir(target.join("etc/ssh"))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(entry.path())?;
        }
    }
    fs::write(target.join("etc/machine-id"), "")?;
    Ok(())
}

/// Writes one of [`GUEST_FILES`] under `root`; `@link TARGET` makes a symlink.
pub fn write_guest_file(root: &Path, path: &str, text: &str) -> anyhow::Result<()> {
    let target = root.join(path);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    if target.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        fs::remove_dir_all(&target)?;
    } else if target.symlink_metadata().is_ok() {
        fs::remove_file(&target)?;
    }
    match text.strip_prefix("@link ") {
        Some(link) => std::os::unix::fs::symlink(link, &target)?,
        None => fs::write(&target, text)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipe_hash_is_stable_and_short() {
        assert_eq!(recipe_hash(), recipe_hash());
        assert_eq!(recipe_hash().len(), 16);
    }

    #[test]
    fn guest_files_are_written_and_links_replace_directories() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("usr/lib/modules/6.1")).unwrap();
        for (path, text) in GUEST_FILES {
            write_guest_file(tmp.path(), path, text).unwrap();
        }
        let modules = tmp.path().join("usr/lib/modules");
        assert_eq!(fs::read_link(modules).unwrap(), Path::new("/run/booted-system/kernel-modules/lib/modules"));
        let conf = fs::read_to_string(tmp.path().join("etc/systemd/system.conf.d/50-nixos-path.conf")).unwrap();
        assert!(conf.contains("DefaultEnvironment=PATH=/run/current-system/sw/bin\n"), "{conf}");
    }
}
