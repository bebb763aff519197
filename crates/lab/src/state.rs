//! What `up` made of a [`LabSpec`]: the lab's id, every host's address,
//! namespace, loop devices and disk identities. Saved as `lab.json` so every
//! later command (and `down`) knows exactly what to talk to and what to remove.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::layout::LabDir;
use crate::spec::{Bootloader, HostSpec};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    /// Small number unique among the labs on this machine; names the bridge,
    /// the namespaces and the /24 the lab uses.
    pub id: u8,
    pub bridge: String,
    /// The bridge's address: the address fleetgate connects from.
    pub gateway: String,
    pub hosts: Vec<HostState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostState {
    pub spec: HostSpec,
    /// Where fleetgate reaches the host's sshd: its address on the lab bridge,
    /// or loopback for a VM (port [`HostState::ssh_port`]).
    pub address: String,
    /// The host's network namespace (netns hosts).
    pub netns: String,
    /// The bridge-side end of the host's veth pair (netns hosts).
    pub veth: String,
    /// The loopback port QEMU forwards to the VM's sshd (VM hosts).
    #[serde(default)]
    pub ssh_port: Option<u16>,
    pub disks: DiskIdentity,
    /// `/dev/loopN` backing the root filesystem, while the lab is up.
    pub root_loop: Option<String>,
    /// `/dev/loopN` backing the ESP (systemd-boot hosts), while the lab is up.
    pub esp_loop: Option<String>,
}

/// Stable identities of a host's disk, derived from the lab id and host name so
/// they are the same on every `up`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskIdentity {
    pub serial: String,
    pub root_fs_uuid: String,
    pub root_part_uuid: String,
    pub esp_fs_uuid: String,
    pub esp_part_uuid: String,
    /// GPT partition names (`/dev/disk/by-partlabel`), as disko names them.
    pub root_part_label: String,
    pub esp_part_label: String,
}

impl DiskIdentity {
    pub fn derive(lab_id: u8, host: &str) -> DiskIdentity {
        let uuid = |what: &str| -> String {
            let digest = Sha256::digest(format!("fleetgate-lab/{lab_id}/{host}/{what}"));
            let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
            // Shape it as a version-4-looking UUID so tools that check are happy.
            format!("{}-{}-4{}-8{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
        };
        let serial_digest = Sha256::digest(format!("fleetgate-lab/{lab_id}/{host}/serial"));
        let serial: String = serial_digest.iter().take(6).map(|b| format!("{b:02X}")).collect();
        DiskIdentity {
            serial: format!("FGL{serial}"),
            root_fs_uuid: uuid("root-fs"),
            root_part_uuid: uuid("root-part"),
            esp_fs_uuid: uuid("esp-fs"),
            esp_part_uuid: uuid("esp-part"),
            root_part_label: "disk-main-root".to_owned(),
            esp_part_label: "disk-main-ESP".to_owned(),
        }
    }
}

impl HostState {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn uses_esp(&self) -> bool {
        matches!(self.spec.bootloader, Bootloader::SystemdBoot | Bootloader::GrubEfi)
    }

    pub fn is_vm(&self) -> bool {
        self.spec.is_vm()
    }
}

impl LabState {
    pub fn load(dir: &LabDir) -> Result<LabState, StateError> {
        let path = dir.state_file();
        let text = fs::read_to_string(&path).map_err(|source| StateError::Read {
            path: path.display().to_string(),
            up: dir.command("up"),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| StateError::Parse {
            path: path.display().to_string(),
            lab: dir.root().display().to_string(),
            source,
        })
    }

    pub fn save(&self, dir: &LabDir) -> Result<(), StateError> {
        let path = dir.state_file();
        let text = serde_json::to_string_pretty(self).map_err(|source| StateError::Parse {
            path: path.display().to_string(),
            lab: dir.root().display().to_string(),
            source,
        })?;
        write_atomically(&path, text.as_bytes())
            .map_err(|source| StateError::Write { path: path.display().to_string(), source })
    }

    pub fn host(&self, name: &str) -> Result<&HostState, StateError> {
        self.hosts.iter().find(|h| h.spec.name == name).ok_or_else(|| StateError::NoSuchHost {
            name: name.to_owned(),
            known: self.hosts.iter().map(|h| h.spec.name.clone()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// Writes via a temporary file and a rename, so a crash never leaves half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read lab state {path} (is the lab up? run `{up}`)")]
    Read { path: String, up: String, source: std::io::Error },
    #[error("cannot write lab state {path}")]
    Write { path: String, source: std::io::Error },
    #[error(
        "lab state {path} is damaged: remove the lab by hand (its `fgl*` network namespaces and bridge, \
         `fleetgate-lab __vm`/`__vmm` and `qemu-system` processes under {lab}), then {lab}"
    )]
    Parse { path: String, lab: String, source: serde_json::Error },
    #[error("the lab has no host `{name}` (hosts: {known})")]
    NoSuchHost { name: String, known: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_identity_is_stable_and_distinct_per_host() {
        let a = DiskIdentity::derive(3, "host1");
        assert_eq!(a.root_fs_uuid, DiskIdentity::derive(3, "host1").root_fs_uuid);
        assert_ne!(a.root_fs_uuid, DiskIdentity::derive(3, "host2").root_fs_uuid);
        assert_ne!(a.root_fs_uuid, DiskIdentity::derive(4, "host1").root_fs_uuid);
        assert_eq!(a.root_fs_uuid.len(), 36);
        assert_eq!(&a.root_fs_uuid[14..15], "4");
    }
}
