//! Assembling a lab host's root, as its stage 1 would: a fresh `/dev` with the
//! host's disk nodes and `/dev/disk/by-*` links, the root filesystem mounted
//! from `/dev/<disk>2` (so `/proc/self/mountinfo` names the host's device, not
//! this machine's), the ESP at `/boot`, the host's hardware tree at `/sys`, and
//! this machine's `/usr` (read-only) and `/etc` (overlay: writes stay on the
//! host's disk) for userland. Then `pivot_root`.
//!
//! Everything runs inside a private mount namespace the caller created.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, FileType, Mode, makedev, mknodat};
use rustix::mount::{
    MountFlags, MountPropagationFlags, UnmountFlags, mount, mount_bind, mount_bind_recursive, mount_change, mount_move,
    unmount,
};

use crate::hardware::Hardware;
use crate::layout::HostDir;

#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct RootfsError {
    what: String,
    source: io::Error,
}

fn err(what: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> RootfsError {
    let what = what.into();
    move |e| RootfsError { what, source: e.into() }
}

fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> RootfsError {
    let what = what.into();
    move |source| RootfsError { what, source }
}

/// Makes every mount in this namespace private, so nothing leaks back.
pub fn make_private() -> Result<(), RootfsError> {
    mount_change("/", MountPropagationFlags::PRIVATE | MountPropagationFlags::REC).map_err(err("making mounts private"))
}

/// The pieces of this machine a host borrows: read-only `/usr`, `/etc` as the
/// lower layer of an overlay.
const USR_LINKS: [(&str, &str); 4] =
    [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")];

/// Directories every host root has; created on a fresh disk.
const ROOT_DIRS: [&str; 14] = [
    "usr",
    "etc",
    "boot",
    "dev",
    "proc",
    "sys",
    "run",
    "tmp",
    "var",
    "root",
    "nix",
    "mnt",
    ".lab/etc-upper",
    ".lab/etc-work",
];

/// Lays out an empty root filesystem as NixOS's installer would leave it, plus
/// the lab's `/etc` overlay directories.
pub fn skeleton(newroot: &Path) -> Result<(), RootfsError> {
    for dir in ROOT_DIRS {
        fs::create_dir_all(newroot.join(dir)).map_err(io(format!("creating /{dir}")))?;
    }
    for (link, target) in USR_LINKS {
        let path = newroot.join(link);
        if path.symlink_metadata().is_err() {
            symlink(target, &path).map_err(io(format!("linking /{link}")))?;
        }
    }
    fs::set_permissions(newroot.join("tmp"), std::os::unix::fs::PermissionsExt::from_mode(0o1777))
        .map_err(io("chmod /tmp"))?;
    Ok(())
}

/// The `/etc` upper layer on the host's disk: host-specific files go here.
pub fn etc_upper(newroot: &Path) -> PathBuf {
    newroot.join(".lab/etc-upper")
}

/// Builds the host's `/dev` in a tmpfs at `staging`, then moves it over `/dev`
/// of this namespace so the disk nodes have their real names.
pub fn populate_dev(staging: &Path, hardware: &Hardware) -> Result<(), RootfsError> {
    fs::create_dir_all(staging).map_err(io("creating the /dev staging directory"))?;
    mount("devtmpfs-lab", staging, "tmpfs", MountFlags::NOSUID, Some(c"mode=755"))
        .map_err(err("mounting tmpfs for /dev"))?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let node = staging.join(name);
        fs::write(&node, b"").map_err(io(format!("creating /dev/{name}")))?;
        mount_bind(Path::new("/dev").join(name), &node).map_err(err(format!("binding /dev/{name}")))?;
    }
    fs::create_dir_all(staging.join("pts")).map_err(io("creating /dev/pts"))?;
    mount(
        "devpts",
        staging.join("pts"),
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(c"newinstance,ptmxmode=0666,mode=620"),
    )
    .map_err(err("mounting devpts"))?;
    symlink("pts/ptmx", staging.join("ptmx")).map_err(io("linking /dev/ptmx"))?;
    fs::create_dir_all(staging.join("shm")).map_err(io("creating /dev/shm"))?;
    mount("shm", staging.join("shm"), "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, Some(c"mode=1777"))
        .map_err(err("mounting /dev/shm"))?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, staging.join(link)).map_err(io(format!("linking /dev/{link}")))?;
    }
    for (name, dev) in hardware.dev_nodes() {
        let path = staging.join(&name);
        match dev {
            Some((major, minor)) => {
                mknodat(CWD, &path, FileType::BlockDevice, Mode::from_raw_mode(0o660), makedev(major, minor))
                    .map_err(err(format!("creating /dev/{name}")))?
            }
            None => fs::write(&path, b"").map_err(io(format!("creating placeholder /dev/{name}")))?,
        }
    }
    for (link, target) in hardware.disk_links() {
        let path = staging.join("disk").join(&link);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io("creating /dev/disk"))?;
        }
        symlink(Path::new("../..").join(target), &path).map_err(io(format!("linking /dev/disk/{link}")))?;
    }
    mount_move(staging, "/dev").map_err(err("moving the host's /dev into place"))
}

/// Mounts the host's filesystems at `newroot`. Expects [`populate_dev`] to
/// have run in this namespace.
pub fn mount_root(newroot: &Path, hardware: &Hardware) -> Result<(), RootfsError> {
    let root = hardware.root_partition().ok_or_else(|| RootfsError {
        what: "host has no root partition".into(),
        source: io::ErrorKind::NotFound.into(),
    })?;
    fs::create_dir_all(newroot).map_err(io("creating the new root mount point"))?;
    mount(Path::new("/dev").join(&root.name), newroot, "ext4", MountFlags::empty(), None)
        .map_err(err(format!("mounting /dev/{} at /", root.name)))?;
    skeleton(newroot)?;
    if let Some(esp) = hardware.esp_partition() {
        mount(
            Path::new("/dev").join(&esp.name),
            newroot.join("boot"),
            "ext4",
            MountFlags::NOSUID | MountFlags::NODEV,
            None,
        )
        .map_err(err(format!("mounting /dev/{} at /boot", esp.name)))?;
    }
    Ok(())
}

/// Everything after the disks: userland from this machine, fresh `/run`,
/// `/tmp`, `/proc`, the host's `/sys` and `/dev`, the boot id.
pub fn mount_userland(newroot: &Path, host: &HostDir, lab_binary: &Path) -> Result<(), RootfsError> {
    mount_bind("/usr", newroot.join("usr")).map_err(err("binding /usr"))?;
    mount_change(newroot.join("usr"), MountPropagationFlags::PRIVATE).map_err(err("making /usr private"))?;
    rustix::mount::mount_remount(newroot.join("usr"), MountFlags::BIND | MountFlags::RDONLY, c"")
        .map_err(err("making /usr read-only"))?;
    let options = format!(
        "lowerdir=/etc,upperdir={},workdir={}",
        etc_upper(newroot).display(),
        newroot.join(".lab/etc-work").display()
    );
    let options = std::ffi::CString::new(options)
        .map_err(|_| RootfsError { what: "overlay options".into(), source: io::ErrorKind::InvalidInput.into() })?;
    mount("overlay", newroot.join("etc"), "overlay", MountFlags::empty(), Some(options.as_c_str()))
        .map_err(err("mounting the /etc overlay"))?;
    mount("tmpfs", newroot.join("run"), "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, Some(c"mode=755"))
        .map_err(err("mounting /run"))?;
    mount("tmpfs", newroot.join("tmp"), "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, Some(c"mode=1777"))
        .map_err(err("mounting /tmp"))?;
    mount("proc", newroot.join("proc"), "proc", MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC, None)
        .map_err(err("mounting /proc"))?;
    mount_bind(host.boot_id_file(), newroot.join("proc/sys/kernel/random/boot_id"))
        .map_err(err("binding the boot id"))?;
    mount_bind(host.sys_dir(), newroot.join("sys")).map_err(err("binding the host's /sys"))?;
    mount_bind_recursive("/dev", newroot.join("dev")).map_err(err("binding the host's /dev"))?;
    // The lab's own userland (systemctl, reboot, bootctl…) is this binary.
    let lab_bin = newroot.join("run/lab/bin");
    fs::create_dir_all(&lab_bin).map_err(io("creating /run/lab/bin"))?;
    let exe = newroot.join("run/lab/fleetgate-lab");
    fs::write(&exe, b"").map_err(io("creating the lab binary mount point"))?;
    mount_bind(lab_binary, &exe).map_err(err("binding the lab binary"))?;
    for tool in crate::userland::TOOLS {
        symlink("/run/lab/fleetgate-lab", lab_bin.join(tool)).map_err(io(format!("linking /run/lab/bin/{tool}")))?;
    }
    Ok(())
}

/// `pivot_root` into `newroot` and detach this machine's root.
pub fn pivot(newroot: &Path) -> Result<(), RootfsError> {
    let old = newroot.join(".lab/oldroot");
    fs::create_dir_all(&old).map_err(io("creating the old-root mount point"))?;
    rustix::process::pivot_root(newroot, &old).map_err(err("pivot_root"))?;
    rustix::process::chdir("/").map_err(err("chdir /"))?;
    unmount("/.lab/oldroot", UnmountFlags::DETACH).map_err(err("detaching the old root"))?;
    Ok(())
}
