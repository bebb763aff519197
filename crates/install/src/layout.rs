//! The disk layout a disko configuration creates, as far as the install
//! proofs need it: the disks it takes over, each partition's GPT label, its
//! file-system label and mount point.
//!
//! disko names a GPT partition `disk-<disk>-<partition>` unless it sets
//! `label` (disko `lib/types/gpt.nix`, option `label`), and its generated
//! `fileSystems` use `/dev/disk/by-partlabel/<label>`. A file-system label
//! comes from the format's own flag in `extraArgs` (`-L` for ext4/xfs/btrfs,
//! `-n` for vfat). The CLI evaluates `config.disko.devices.disk` through
//! [`EVAL_APPLY`], which keeps only these attributes (the full attrset holds
//! functions JSON cannot carry).

use std::collections::BTreeMap;

use fleetgate_system::RootSpec;
use serde::{Deserialize, Serialize};

/// The `--apply` function for `nix eval --json
/// FLAKE#nixosConfigurations.HOST.config.disko.devices.disk`.
pub const EVAL_APPLY: &str = "disks: builtins.mapAttrs (_: d: { device = d.device; partitions = builtins.mapAttrs (_: p: { label = p.label or null; type = p.content.type or null; format = p.content.format or null; mountpoint = p.content.mountpoint or null; extraArgs = p.content.extraArgs or []; }) (d.content.partitions or {}); }) disks";

/// One partition as [`EVAL_APPLY`] gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Partition {
    /// The GPT partition label.
    pub label: Option<String>,
    /// The content type (`filesystem`, `swap`, `luks`, …).
    #[serde(rename = "type")]
    pub content_type: Option<String>,
    /// The file-system format (`ext4`, `vfat`).
    pub format: Option<String>,
    /// Where it is mounted.
    pub mountpoint: Option<String>,
    /// Extra arguments of the format command.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

impl Partition {
    /// The file-system label its format arguments set.
    #[must_use]
    pub fn fs_label(&self) -> Option<&str> {
        let flag = match self.format.as_deref() {
            Some("vfat" | "fat32" | "fat16") => "-n",
            Some(_) => "-L",
            None => return None,
        };
        self.extra_args.windows(2).find(|w| w[0] == flag).map(|w| w[1].as_str())
    }
}

/// One disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Its device (`/dev/vda`).
    pub device: String,
    /// Its partitions, by disko name.
    #[serde(default)]
    pub partitions: BTreeMap<String, Partition>,
}

/// What the layout is: disks by disko name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    disks: BTreeMap<String, Disk>,
}

/// A layout that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Not the JSON [`EVAL_APPLY`] gives.
    #[error("the disko layout is not what `nix eval --apply` should give: {0}")]
    Json(#[from] serde_json::Error),
    /// No disk at all.
    #[error("the disko layout names no disk (config.disko.devices.disk is empty)")]
    NoDisk,
    /// A disk device that is not a path.
    #[error("disk {name:?}: device {device:?} is not an absolute path")]
    BadDevice {
        /// The disko name.
        name: String,
        /// The device.
        device: String,
    },
}

/// Whether the layout creates what a spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Yes: by this partition (`main/root`).
    By(String),
    /// No partition has that label.
    No,
    /// The spec is of a kind the layout does not fix (a UUID disko does not
    /// set, a kernel device name): cannot be judged before disko ran.
    CannotTell(String),
}

impl Layout {
    /// Parses [`EVAL_APPLY`]'s JSON.
    ///
    /// # Errors
    /// [`LayoutError`].
    pub fn parse(json: &str) -> Result<Layout, LayoutError> {
        let disks: BTreeMap<String, Disk> = serde_json::from_str(json)?;
        if disks.is_empty() {
            return Err(LayoutError::NoDisk);
        }
        for (name, d) in &disks {
            if !d.device.starts_with('/') {
                return Err(LayoutError::BadDevice { name: name.clone(), device: d.device.clone() });
            }
        }
        let mut layout = Layout { disks };
        for (disk, d) in &mut layout.disks {
            for (part, p) in &mut d.partitions {
                if p.label.is_none() {
                    p.label = Some(format!("disk-{disk}-{part}"));
                }
            }
        }
        Ok(layout)
    }

    /// The disks' devices (`/dev/vda`).
    #[must_use]
    pub fn disk_devices(&self) -> Vec<String> {
        self.disks.values().map(|d| d.device.clone()).collect()
    }

    /// The device of the disk whose partition is mounted at `/`.
    #[must_use]
    pub fn root_disk(&self) -> Option<&str> {
        self.disks
            .values()
            .find(|d| d.partitions.values().any(|p| p.mountpoint.as_deref() == Some("/")))
            .map(|d| d.device.as_str())
    }

    /// Whether the layout creates the device `spec` names.
    #[must_use]
    pub fn creates(&self, spec: &RootSpec) -> Created {
        let found = |pred: &dyn Fn(&Partition) -> bool| {
            self.disks.iter().find_map(|(dn, d)| {
                d.partitions.iter().find(|(_, p)| pred(p)).map(|(pn, _)| Created::By(format!("{dn}/{pn}")))
            })
        };
        match spec {
            RootSpec::PartLabel(l) => found(&|p| p.label.as_deref() == Some(l)).unwrap_or(Created::No),
            RootSpec::Label(l) => found(&|p| p.fs_label() == Some(l)).unwrap_or(Created::No),
            other => Created::CannotTell(format!(
                "{other} is not fixed by a disko layout (only partition labels and file-system labels are): \
                 name the device by-partlabel (disko's default) or by-label"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{"main":{"device":"/dev/vda","partitions":{
        "ESP":{"label":null,"type":"filesystem","format":"vfat","mountpoint":"/boot","extraArgs":["-n","ESP"]},
        "root":{"label":"nixos-root","type":"filesystem","format":"ext4","mountpoint":"/","extraArgs":["-L","nixos"]}}}}"#;

    #[test]
    fn labels_are_disko_defaults_or_set() {
        let l = Layout::parse(JSON).expect("valid");
        assert_eq!(l.disk_devices(), ["/dev/vda"]);
        assert_eq!(l.root_disk(), Some("/dev/vda"));
        assert_eq!(l.creates(&RootSpec::parse("/dev/disk/by-partlabel/disk-main-ESP")), Created::By("main/ESP".into()));
        assert_eq!(l.creates(&RootSpec::parse("PARTLABEL=nixos-root")), Created::By("main/root".into()));
        assert_eq!(l.creates(&RootSpec::parse("/dev/disk/by-label/nixos")), Created::By("main/root".into()));
        assert_eq!(l.creates(&RootSpec::parse("LABEL=ESP")), Created::By("main/ESP".into()));
        assert_eq!(l.creates(&RootSpec::parse("/dev/disk/by-partlabel/disk-main-root")), Created::No);
        assert!(matches!(l.creates(&RootSpec::parse("UUID=1234")), Created::CannotTell(_)));
        assert!(matches!(l.creates(&RootSpec::parse("/dev/vda2")), Created::CannotTell(_)));
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert!(matches!(Layout::parse("{}"), Err(LayoutError::NoDisk)));
        assert!(matches!(Layout::parse(r#"{"a":{"device":"vda"}}"#), Err(LayoutError::BadDevice { .. })));
        assert!(matches!(Layout::parse("[1]"), Err(LayoutError::Json(_))));
    }
}
