//! Preparing a new host's disk the way `nixos-install` does before it installs
//! the boot loader: a root filesystem layout, the host's SSH identity and
//! `nix.conf` in its `/etc`, root's authorized key, and the system's closure
//! copied into the host's own Nix store with real `nix copy`.
//!
//! Runs in a private mount namespace (`unshare --mount`), so nothing it mounts
//! is visible outside or outlives it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use rustix::mount::{MountFlags, UnmountFlags, mount, unmount};

use crate::lab::NIX_CONFIG;
use crate::layout::LabDir;
use crate::state::LabState;
use crate::{process, rootfs, ssh_setup};

const COPY_TIMEOUT: Duration = Duration::from_secs(300);

/// The host's `/etc/nix/nix.conf`: no substituters until someone configures
/// one (the lab has no internet), builds without build users.
pub const HOST_NIX_CONF: &str =
    "# Written by fleetgate-lab.\nbuild-users-group =\nsandbox = false\nsubstituters =\ntrusted-users = root\n";

pub fn prepare(lab: &LabDir, host_name: &str, system: &str, client_key: &str) -> anyhow::Result<()> {
    rootfs::make_private()?;
    let state = LabState::load(lab)?;
    let host = state.host(host_name)?;
    let dir = lab.host(host_name);
    let mnt = dir.root().join("install-root");
    fs::create_dir_all(&mnt)?;
    let root_loop = host.root_loop.as_deref().context("the root disk is not attached")?;
    mount(root_loop, &mnt, "ext4", MountFlags::empty(), None).with_context(|| format!("mounting {root_loop}"))?;
    let result = fill(
        host.uses_esp().then_some(host.esp_loop.as_deref()).flatten(),
        &mnt,
        &dir.host_keys_dir(),
        host_name,
        system,
        client_key,
    );
    rustix::fs::sync();
    let _ = unmount(mnt.join("boot"), UnmountFlags::empty());
    unmount(&mnt, UnmountFlags::empty()).context("unmounting the new root")?;
    result
}

fn fill(
    esp_loop: Option<&str>,
    mnt: &Path,
    host_keys: &Path,
    host_name: &str,
    system: &str,
    client_key: &str,
) -> anyhow::Result<()> {
    rootfs::skeleton(mnt)?;
    if let Some(esp) = esp_loop {
        mount(esp, mnt.join("boot"), "ext4", MountFlags::empty(), None)
            .with_context(|| format!("mounting the ESP {esp}"))?;
    }
    let etc = rootfs::etc_upper(mnt);
    fs::create_dir_all(etc.join("ssh"))?;
    fs::write(etc.join("ssh/sshd_config"), ssh_setup::sshd_config())?;
    fs::write(etc.join("NIXOS"), "")?;
    write_identity(&etc, mnt, host_keys, host_name, client_key)?;
    copy_closure(mnt, system)
}

/// What makes a new root filesystem this host's, as `nixos-install` leaves
/// it: the SSH host key, hostname, a machine id, `nix.conf` in `etc`, and the
/// lab's key as root's only authorized key under `root`.
pub fn write_identity(
    etc: &Path,
    root: &Path,
    host_keys: &Path,
    host_name: &str,
    client_key: &str,
) -> anyhow::Result<()> {
    fs::create_dir_all(etc.join("ssh"))?;
    fs::create_dir_all(etc.join("nix"))?;
    for name in ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"] {
        fs::copy(host_keys.join(name), etc.join("ssh").join(name)).with_context(|| format!("installing {name}"))?;
    }
    fs::set_permissions(etc.join("ssh/ssh_host_ed25519_key"), fs::Permissions::from_mode(0o600))?;
    fs::write(etc.join("hostname"), format!("{host_name}\n"))?;
    let machine_id = fs::read_to_string("/proc/sys/kernel/random/uuid")?.trim().replace('-', "");
    fs::write(etc.join("machine-id"), format!("{machine_id}\n"))?;
    fs::write(etc.join("nix/nix.conf"), HOST_NIX_CONF)?;
    let ssh_dir = root.join("root/.ssh");
    fs::create_dir_all(&ssh_dir)?;
    fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700))?;
    fs::write(ssh_dir.join("authorized_keys"), format!("{client_key}\n"))?;
    fs::set_permissions(ssh_dir.join("authorized_keys"), fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// `nix copy` of `system`'s closure into the store of the root at `root`.
pub fn copy_closure(root: &Path, system: &str) -> anyhow::Result<()> {
    let mut copy = Command::new("nix");
    copy.env("NIX_CONFIG", NIX_CONFIG)
        .args(["copy", "--no-check-sigs", "--to"])
        .arg(format!("local?root={}", root.display()))
        .arg(system);
    process::run_nix(&mut copy, COPY_TIMEOUT).context("copying the system closure into the new root's store")?;
    Ok(())
}
