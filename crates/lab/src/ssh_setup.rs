//! SSH identities of a lab: one client key (root's only authorized key on every
//! host), one host key per host, and the lab's own `ssh_config` and
//! `known_hosts`. Nothing here reads or writes the user's `~/.ssh`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::layout::LabDir;
use crate::process::{self, ProcessError};
use crate::state::LabState;

const KEYGEN_TIMEOUT: Duration = Duration::from_secs(30);

/// `PATH` of every SSH session on a lab host. `/run/lab/bin` holds the lab's
/// `systemctl`, `reboot`, `bootctl` and `grub-reboot`, since lab hosts do not
/// run systemd; the rest is what a NixOS root shell has, then Debian's.
pub const HOST_PATH: &str = "/run/lab/bin:/run/wrappers/bin:/run/current-system/sw/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum SshSetupError {
    #[error(transparent)]
    Keygen(#[from] ProcessError),
    #[error("cannot write {path}")]
    Write { path: String, source: std::io::Error },
}

fn write(path: &Path, text: &str) -> Result<(), SshSetupError> {
    fs::write(path, text).map_err(|source| SshSetupError::Write { path: path.display().to_string(), source })
}

fn keygen(path: &Path, comment: &str) -> Result<(), SshSetupError> {
    if path.exists() {
        return Ok(());
    }
    process::run(
        Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"]).arg(path),
        KEYGEN_TIMEOUT,
    )?;
    Ok(())
}

/// The lab's client key; returns its public half.
pub fn client_key(dir: &LabDir) -> Result<String, SshSetupError> {
    let ssh = dir.ssh_dir();
    fs::create_dir_all(&ssh).map_err(|source| SshSetupError::Write { path: ssh.display().to_string(), source })?;
    keygen(&dir.ssh_key(), "fleetgate-lab")?;
    read_public(&dir.ssh_key())
}

/// A host's ed25519 host key pair under `keys_dir`; returns its public half.
pub fn host_key(keys_dir: &Path, host: &str) -> Result<String, SshSetupError> {
    fs::create_dir_all(keys_dir)
        .map_err(|source| SshSetupError::Write { path: keys_dir.display().to_string(), source })?;
    let key = keys_dir.join("ssh_host_ed25519_key");
    keygen(&key, &format!("root@{host}"))?;
    read_public(&key)
}

fn read_public(key: &Path) -> Result<String, SshSetupError> {
    let path = key.with_extension("pub");
    fs::read_to_string(&path)
        .map(|text| text.trim().to_owned())
        .map_err(|source| SshSetupError::Write { path: path.display().to_string(), source })
}

/// `sshd_config` of a lab host.
pub fn sshd_config() -> String {
    format!(
        "# Written by fleetgate-lab.\n\
         Port 22\n\
         ListenAddress 0.0.0.0\n\
         HostKey /etc/ssh/ssh_host_ed25519_key\n\
         PermitRootLogin prohibit-password\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         PidFile /run/sshd.pid\n\
         SetEnv PATH={HOST_PATH}\n\
         MaxStartups 200:30:400\n\
         MaxSessions 100\n\
         LogLevel INFO\n\
         Subsystem sftp internal-sftp\n"
    )
}

/// Writes the lab's `ssh_config` and `known_hosts` for every host.
pub fn write_client_config(
    dir: &LabDir,
    state: &LabState,
    host_keys: &[(String, String)],
) -> Result<(), SshSetupError> {
    let mut config = String::from("# Written by fleetgate-lab: use as `ssh -F <this file> <host>`.\n");
    for host in &state.hosts {
        match host.ssh_port {
            // A VM: QEMU forwards a loopback port to its sshd; its key is
            // known by the host's name.
            Some(port) => config.push_str(&format!(
                "Host {}\n  HostName {}\n  Port {port}\n  HostKeyAlias {}\n",
                host.name(),
                host.address,
                host.name()
            )),
            None => config.push_str(&format!("Host {} {}\n  HostName {}\n", host.name(), host.address, host.address)),
        }
    }
    let patterns: Vec<String> = state
        .hosts
        .iter()
        .flat_map(|h| {
            if h.ssh_port.is_some() { vec![h.name().to_owned()] } else { vec![h.name().to_owned(), h.address.clone()] }
        })
        .collect();
    config.push_str(&format!(
        "Host {}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  \
         StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 5\n  ServerAliveInterval 2\n  ServerAliveCountMax 5\n  LogLevel ERROR\n",
        patterns.join(" "),
        dir.ssh_key().display(),
        dir.known_hosts().display()
    ));
    write(&dir.ssh_config(), &config)?;
    let mut known = String::new();
    for (name, public) in host_keys {
        let key: Vec<&str> = public.split_whitespace().take(2).collect();
        match state.host(name) {
            Ok(host) if host.ssh_port.is_none() => {
                known.push_str(&format!("{name},{} {}\n", host.address, key.join(" ")))
            }
            _ => known.push_str(&format!("{name} {}\n", key.join(" "))),
        }
    }
    write(&dir.known_hosts(), &known)
}
