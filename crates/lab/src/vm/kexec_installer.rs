//! The lab's kexec installer: a tarball in nixos-images' format
//! ([`super::kexec_tarball`]) whose kernel is Debian's and whose initrd is a
//! small Debian 12 (`mmdebstrap`) that runs from RAM with Debian's systemd
//! as PID 1 — what nixos-images' installer is, with NixOS in its initrd.
//! It has what `fleetgate install` runs there (crates/install `SshTarget`):
//! sshd, Nix (`nix-store --serve` for `nix copy`), `sfdisk`, `mkfs.vfat`,
//! `mkfs.ext4`, `udevadm` for disko scripts, and `nixos-install`
//! ([`NIXOS_INSTALL`]).
//!
//! Across the kexec it takes what `run` appended to the initrd, as
//! nixos-images' installer does (its `kexec-installer/module.nix`): root's
//! `authorized_keys` and the SSH host keys, so the same host key answers
//! (`/init`, [`INIT`]), and the network: `ip --json addr`/`route` become
//! systemd-networkd files matched by MAC address ([`RESTORE_NETWORK`], as
//! its `restore_routes.py`).
//!
//! Built once per machine and cached under the hash of its recipe and the
//! kernel's version (`$FLEETGATE_LAB_CACHE/vm-kexec-installer-<hash>/`).

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use rustix::fs::{FlockOperation, flock};
use sha2::{Digest, Sha256};

use super::debian_first::DebianKernel;
use super::image::{DPKG_EXCLUDES, SUITE};
use super::kexec_tarball::{self, Parts, Tool};
use crate::process;

const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);
/// The installer's packages.
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "procps",
    "openssh-server",
    "nix-bin",
    // disko scripts' tools
    "fdisk",
    "dosfstools",
    "e2fsprogs",
    // the tarball's own kexec and ip, and `run`'s cpio
    "kexec-tools",
    "iproute2",
    "cpio",
    // the lab's NixOS-shaped systems: switch-to-configuration and the boot
    // loader installer are Perl; systemd-boot's EFI binary
    "perl",
    "systemd-boot-efi",
];
/// The tarball's name in the cache (nixos-images' release asset's shape).
pub const TARBALL: &str = "nixos-kexec-installer-debian-x86_64-linux.tar.gz";
/// The installer's kernel parameters (nixos-images': `console=…`).
/// `systemd.gpt_auto=0`: systemd-boot's `LoaderDevicePartUUID` survives the
/// kexec, and systemd's GPT generator would mount the old ESP.
const KERNEL_PARAMS: &str = "console=ttyS0 panic=30 systemd.gpt_auto=0 init_on_alloc=0 mitigations=off";

/// The installer's `/init`: put what `run` carried into place, then hand
/// over to systemd. Runs from the initramfs (rootfs), no switch_root.
pub const INIT: &str = r#"#!/bin/sh
# fleetgate-lab kexec installer, stage 1. systemd's sandboxed services
# (networkd, logind, ...) cannot set up their mount namespaces on the
# initramfs itself: as NixOS's netboot/kexec stage 1 does, the root moves to
# a tmpfs first (switch_root empties the initramfs).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
if [ ! -e /etc/fleetgate-installer-root ]; then
  mkdir -p /sysroot
  mount -t tmpfs -o mode=0755 root /sysroot
  for entry in /* /.[!.]*; do
    case "$entry" in /sysroot|/proc|/sys|/dev|/run|'/.[!.]*') continue ;; esac
    cp -a "$entry" /sysroot/
  done
  mkdir -p /sysroot/proc /sysroot/sys /sysroot/dev /sysroot/run
  touch /sysroot/etc/fleetgate-installer-root
  exec switch_root /sysroot /init "$@"
fi
# What the old OS's `run` appended to the initrd (ssh/, addrs.json,
# routes-v4.json, routes-v6.json, machine-id), now at /: put it where sshd
# and systemd look, then start systemd.
if [ -s /machine-id ]; then cp /machine-id /etc/machine-id; fi
mkdir -p /root/.ssh
chmod 700 /root /root/.ssh
if [ -f /ssh/authorized_keys ]; then
  cp /ssh/authorized_keys /root/.ssh/authorized_keys
  chmod 600 /root/.ssh/authorized_keys
fi
for key in /ssh/ssh_host_*; do
  if [ -e "$key" ]; then cp -a "$key" /etc/ssh/; fi
done
exec /lib/systemd/systemd "$@"
"#;

/// The network of the old OS, as systemd-networkd files (what nixos-images'
/// `restore_routes.py` does for its networkd): each interface with a
/// global address, matched by MAC address, with its addresses and the
/// default routes through it.
pub const RESTORE_NETWORK: &str = r#"#!/usr/bin/perl
use strict;
use warnings;
use JSON::PP;

sub slurp { my ($p) = @_; open(my $fh, "<", $p) or return "[]"; local $/; my $t = <$fh>; close $fh; return $t; }
my $addrs = decode_json(slurp("/addrs.json"));
my @routes = (@{decode_json(slurp("/routes-v4.json"))}, @{decode_json(slurp("/routes-v6.json"))});
mkdir "/run/systemd/network";
for my $if (@$addrs) {
    my $mac = $if->{address} // next;
    next if ($if->{link_type} // "") ne "ether";
    my @global = grep { ($_->{scope} // "") eq "global" } @{$if->{addr_info} // []};
    next unless @global;
    my $text = "[Match]\nMACAddress=$mac\n\n[Network]\n";
    $text .= "Address=$_->{local}/$_->{prefixlen}\n" for @global;
    for my $r (@routes) {
        next unless ($r->{dev} // "") eq $if->{ifname} && ($r->{dst} // "") eq "default" && $r->{gateway};
        $text .= "Gateway=$r->{gateway}\n";
    }
    open(my $out, ">", "/run/systemd/network/00-restored-$if->{ifname}.network") or die $!;
    print $out $text;
    close $out;
}
"#;

/// `nixos-install --system`, as nixpkgs' `nixos-install.sh` does it: the
/// system profile in `/mnt`'s store, `/etc/NIXOS`, then the system's own
/// `switch-to-configuration boot` with `NIXOS_INSTALL_BOOTLOADER=1` in a
/// chroot (`nixos-enter`). One step is the lab's: its NixOS-shaped systems
/// start the machine's Debian userland (systemd, sshd) from their stage 2,
/// so that userland is copied from the installer first, as the lab's VM
/// host assembly copies its guest tree, with the lab guest's files in
/// `/usr/share/fleetgate-lab/guest`.
pub const NIXOS_INSTALL: &str = r#"#!/bin/sh
set -eu
mountPoint=/mnt
system=
while [ $# -gt 0 ]; do
  case "$1" in
    --system) system=$2; shift ;;
    --root) mountPoint=$2; shift ;;
    --no-root-passwd|--no-channel-copy|--no-bootloader) ;;
    *) echo "nixos-install (fleetgate-lab): unknown option $1" >&2; exit 1 ;;
  esac
  shift
done
if [ -z "$system" ]; then echo "nixos-install (fleetgate-lab): only --system SYSTEM is supported" >&2; exit 1; fi
if [ ! -e "$mountPoint$system" ]; then echo "$system is not in $mountPoint's store" >&2; exit 1; fi
# The lab's part: the Debian userland the systems' stage 2 starts.
for d in usr etc var bin sbin lib lib64 root srv opt home; do
  if [ -e "/$d" ]; then cp -a -n "/$d" "$mountPoint/"; fi
done
rm -rf "$mountPoint/usr/lib/modules"
mkdir -p "$mountPoint/proc" "$mountPoint/sys" "$mountPoint/dev" "$mountPoint/run" "$mountPoint/tmp" "$mountPoint/boot"
chmod 1777 "$mountPoint/tmp"
cp -a /usr/share/fleetgate-lab/guest/. "$mountPoint/"
rm -f "$mountPoint/etc/systemd/system/fleetgate-restore-network.service" \
  "$mountPoint/etc/systemd/system/sysinit.target.wants/fleetgate-restore-network.service" \
  "$mountPoint/usr/local/sbin/nixos-install" "$mountPoint/init"
# The system's fstab, read inside the new root (its etc links into its store).
chroot "$mountPoint" /bin/cat "$system/etc/fstab" > "$mountPoint/etc/fstab"
echo "${system##*-nixos-system-}" | sed 's/-[0-9][0-9.]*$//' > "$mountPoint/etc/hostname"
# nixos-install.sh's own steps.
mkdir -m 0755 -p "$mountPoint/nix/var/nix/profiles" "$mountPoint/etc"
nix-env --store "$mountPoint" -p "$mountPoint/nix/var/nix/profiles/system" --set "$system"
touch "$mountPoint/etc/NIXOS"
mount --rbind /dev "$mountPoint/dev"
mount -t proc proc "$mountPoint/proc"
mount -t sysfs sysfs "$mountPoint/sys"
status=0
NIXOS_INSTALL_BOOTLOADER=1 chroot "$mountPoint" /usr/bin/env PATH=/usr/bin:/usr/sbin:/bin:/sbin \
  "$system/bin/switch-to-configuration" boot || status=$?
umount -R "$mountPoint/dev" "$mountPoint/proc" "$mountPoint/sys" || true
exit $status
"#;

/// Module directories the installer leaves out (it runs from RAM): graphics,
/// sound, media, wireless, Bluetooth, InfiniBand, staging and the like.
const UNNEEDED_MODULES: &[&str] = &[
    "drivers/gpu",
    "drivers/media",
    "drivers/net/wireless",
    "drivers/infiniband",
    "drivers/staging",
    "drivers/bluetooth",
    "drivers/iio",
    "drivers/isdn",
    "drivers/comedi",
    "drivers/input/touchscreen",
    "drivers/hid",
    "drivers/usb/gadget",
    "drivers/net/can",
    "drivers/net/ethernet/mellanox",
    "drivers/mtd",
    "sound",
    "net/wireless",
    "net/mac80211",
    "net/bluetooth",
];

/// The installer's own files.
const FILES: &[(&str, &str, u32)] = &[
    ("init", INIT, 0o755),
    ("usr/local/sbin/nixos-install", NIXOS_INSTALL, 0o755),
    ("usr/local/lib/fleetgate-lab/restore-network", RESTORE_NETWORK, 0o755),
    (
        "etc/systemd/system/fleetgate-restore-network.service",
        "[Unit]\nDescription=fleetgate-lab installer: the old OS's network\nDefaultDependencies=no\n\
         Before=systemd-networkd.service\n\n[Service]\nType=oneshot\nExecStart=/usr/local/lib/fleetgate-lab/restore-network\n\n\
         [Install]\nWantedBy=sysinit.target\n",
        0o644,
    ),
    ("etc/hostname", "nixos-installer\n", 0o644),
    // Nix runs unsandboxed here (no user namespaces needed for copies).
    ("etc/nix/nix.conf", "experimental-features = nix-command flakes\nsandbox = false\nbuild-users-group =\n", 0o644),
    ("etc/fstab", "# the installer runs from RAM\n", 0o644),
    // kexec-tools' own boot-time kexec (its debconf default): a reboot is a
    // reboot through the firmware, here and on the installed system.
    ("etc/default/kexec", "LOAD_KEXEC=false\n", 0o644),
];

/// The cached tarball, built first if this recipe has none.
pub fn ensure(kernel: &DebianKernel, progress: &mut dyn FnMut(&str)) -> anyhow::Result<PathBuf> {
    let dir = super::image::cache_dir().join(format!("vm-kexec-installer-{}", recipe_hash(kernel)));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = File::create(dir.join("lock"))?;
    flock(&lock, FlockOperation::LockExclusive).context("locking the kexec installer cache")?;
    let tarball = dir.join(TARBALL);
    if !tarball.exists() {
        progress(&format!("building the kexec installer (Debian {SUITE}, once per machine) in {}", dir.display()));
        let result = build(&dir, kernel);
        let _ = fs::remove_dir_all(dir.join("tree"));
        let _ = fs::remove_file(dir.join("initrd"));
        result?;
    }
    Ok(tarball)
}

fn recipe_hash(kernel: &DebianKernel) -> String {
    let mut hash = Sha256::new();
    hash.update(SUITE);
    for item in PACKAGES.iter().chain(DPKG_EXCLUDES).chain([&kernel.version.as_str(), &KERNEL_PARAMS]) {
        hash.update([0]);
        hash.update(item);
    }
    for (path, text, mode) in FILES {
        hash.update([1]);
        hash.update(path);
        hash.update(text);
        hash.update(mode.to_le_bytes());
    }
    // The tarball's `run` is in it: a changed script is a new tarball.
    hash.update([4]);
    hash.update(super::kexec_tarball::RUN);
    for dir in UNNEEDED_MODULES {
        hash.update([3]);
        hash.update(dir);
    }
    for (path, text) in super::image::GUEST_FILES {
        hash.update([2]);
        hash.update(path);
        hash.update(text);
    }
    hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn build(dir: &Path, kernel: &DebianKernel) -> anyhow::Result<()> {
    let tree = dir.join("tree");
    if tree.exists() {
        fs::remove_dir_all(&tree)?;
    }
    // The old OS's host keys and machine id come across; none of its own.
    super::image::debian_tree(PACKAGES, &tree).context("building the kexec installer")?;
    for (path, text, mode) in FILES {
        let target = tree.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&target, text)?;
        fs::set_permissions(&target, fs::Permissions::from_mode(*mode))?;
    }
    for link in [
        "etc/systemd/system/sysinit.target.wants/fleetgate-restore-network.service",
        "etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
    ] {
        let target = tree.join(link);
        fs::create_dir_all(target.parent().unwrap_or(&tree))?;
        let unit = Path::new(link).file_name().map(PathBuf::from).unwrap_or_default();
        let to = if unit == Path::new("systemd-networkd.service") {
            PathBuf::from("/lib/systemd/system/systemd-networkd.service")
        } else {
            Path::new("/etc/systemd/system").join(unit)
        };
        let _ = fs::remove_file(&target);
        std::os::unix::fs::symlink(to, &target)?;
    }
    // The lab guest's NixOS-like files, for the systems nixos-install puts
    // on the disk (not active in the installer itself).
    let guest = tree.join("usr/share/fleetgate-lab/guest");
    for (path, text) in super::image::GUEST_FILES {
        super::image::write_guest_file(&guest, path, text)?;
    }
    // Debian's kernel modules, for this kernel.
    let modules = tree.join("usr/lib/modules");
    fs::create_dir_all(&modules)?;
    process::run(
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(Path::new("/lib/modules").join(&kernel.version))
            .arg(&modules),
        BUILD_TIMEOUT,
    )
    .context("copying the kernel's modules")?;
    // The installer lives in RAM: not the drivers no server installer needs.
    let kernel_dir = modules.join(&kernel.version).join("kernel");
    for unneeded in UNNEEDED_MODULES {
        let _ = fs::remove_dir_all(kernel_dir.join(unneeded));
    }
    process::run(Command::new("chroot").arg(&tree).args(["depmod", &kernel.version]), BUILD_TIMEOUT)
        .context("depmod for the installer's modules")?;
    let initrd = dir.join("initrd");
    let mut pack = Command::new("sh");
    pack.args(["-c", "cd \"$1\" && find . -xdev | cpio --quiet -o -H newc | gzip -1 > \"$2\"", "sh"])
        .arg(&tree)
        .arg(&initrd);
    process::run(&mut pack, BUILD_TIMEOUT).context("packing the installer's initrd (cpio | gzip)")?;
    let parts = Parts {
        bzimage: &kernel.image,
        initrd: &initrd,
        kexec: Tool::Bundled { root: tree.clone(), binary: "/usr/sbin/kexec".into() },
        ip: Tool::Bundled { root: tree.clone(), binary: "/usr/bin/ip".into() },
        init: "/init",
        kernel_params: KERNEL_PARAMS,
    };
    let partial = dir.join(format!("{TARBALL}.partial"));
    kexec_tarball::write(&partial, dir, &parts)?;
    fs::rename(&partial, dir.join(TARBALL))?;
    Ok(())
}
