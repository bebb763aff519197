//! `etc/fstab` and root device specifications.

use std::fmt;
use std::path::PathBuf;

/// One line of an fstab(5) file, with octal escapes (`\040` for a space,
/// as NixOS writes them) decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    /// First field: the device (`/dev/disk/by-label/NIXOS_ROOT`, `UUID=…`).
    pub spec: String,
    /// Second field: where it is mounted.
    pub mount_point: String,
    /// Third field: file system type (`auto` when the line has no third
    /// field, as libmount assumes).
    pub fs_type: String,
    /// Fourth field split on commas (`defaults` when absent).
    pub options: Vec<String>,
    /// Fifth field (0 when absent).
    pub dump: u32,
    /// Sixth field: fsck order (0 when absent).
    pub pass: u32,
}

impl FstabEntry {
    /// The device as a [`RootSpec`].
    #[must_use]
    pub fn device(&self) -> RootSpec {
        RootSpec::parse(&self.spec)
    }
}

/// A line that is not an fstab entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct FstabError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Parses fstab(5) text: blank lines and lines starting with `#` are
/// skipped; fields are separated by blanks; `\NNN` octal escapes are
/// decoded in every field.
///
/// # Errors
/// A line with fewer than two fields, or with a dump/pass field that is not
/// a number.
pub fn parse_fstab(text: &str) -> Result<Vec<FstabEntry>, FstabError> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<String> = trimmed.split_whitespace().map(unescape_octal).collect();
        let err = |reason: &str| FstabError { line: n + 1, reason: reason.to_owned() };
        let (Some(spec), Some(mount_point)) = (fields.first(), fields.get(1)) else {
            return Err(err("an fstab entry needs at least a device and a mount point"));
        };
        let number = |i: usize| -> Result<u32, FstabError> {
            match fields.get(i) {
                None => Ok(0),
                Some(v) => v.parse().map_err(|_| err(&format!("field {} is not a number: {v:?}", i + 1))),
            }
        };
        entries.push(FstabEntry {
            spec: spec.clone(),
            mount_point: mount_point.clone(),
            fs_type: fields.get(2).cloned().unwrap_or_else(|| "auto".to_owned()),
            options: fields
                .get(3)
                .map_or("defaults", String::as_str)
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect(),
            dump: number(4)?,
            pass: number(5)?,
        });
    }
    Ok(entries)
}

/// Decodes libmount's `\NNN` (three octal digits) escapes.
fn unescape_octal(field: &str) -> String {
    unescape(field, |rest| {
        let digits = rest.get(..3)?;
        if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
            return None;
        }
        let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
        Some((u8::try_from(value).ok()?, 3))
    })
}

/// Decodes udev's `\xNN` escapes in `/dev/disk/by-*` link names (udev
/// writes a label `my root` as `my\x20root`).
fn unescape_udev(name: &str) -> String {
    unescape(name, |rest| {
        let hex = rest.strip_prefix(b"x")?.get(..2)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let byte = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        Some((byte, 3))
    })
}

/// Replaces each backslash escape that `decode` understands: given the bytes
/// after a `\`, it returns the byte meant and how many bytes it used. Other
/// backslashes stay as they are; invalid UTF-8 is replaced.
fn unescape(text: &str, decode: impl Fn(&[u8]) -> Option<(u8, usize)>) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some((byte, used)) = decode(&bytes[i + 1..])
        {
            out.push(byte);
            i += 1 + used;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes a name the way udev names `/dev/disk/by-*` links: bytes other
/// than ASCII alphanumerics and `#+-.:=@_` become `\xNN` (udev's
/// `encode_devnode_name`; multi-byte UTF-8 is kept there, and here too).
fn escape_udev(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) || !c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        }
    }
    out
}

/// Builds a [`RootSpec`] variant from a name.
type MakeSpec = fn(String) -> RootSpec;

/// How a root file system is named: by label, partition label, UUID,
/// partition UUID, device id, or device path.
///
/// `LABEL=x` and `/dev/disk/by-label/x` are the same thing and both parse
/// to `Label("x")` (udev's `\xNN` escapes decoded); likewise for the other
/// `by-*` directories.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RootSpec {
    /// File-system label (`LABEL=`, `/dev/disk/by-label/`).
    Label(String),
    /// GPT partition label (`PARTLABEL=`, `/dev/disk/by-partlabel/`).
    PartLabel(String),
    /// File-system UUID (`UUID=`, `/dev/disk/by-uuid/`).
    Uuid(String),
    /// Partition UUID (`PARTUUID=`, `/dev/disk/by-partuuid/`).
    PartUuid(String),
    /// Device id (`ID=`, `/dev/disk/by-id/`).
    Id(String),
    /// Any other absolute path (`/dev/vda1`, `/dev/mapper/root`).
    Path(PathBuf),
    /// Something that is not a block device: `tmpfs`, a ZFS dataset
    /// (`rpool/root`), an NFS export, systemd's `gpt-auto`.
    Other(String),
}

impl RootSpec {
    /// Parses an fstab device field or the value of a `root=` kernel
    /// parameter.
    #[must_use]
    pub fn parse(spec: &str) -> RootSpec {
        let tags: [(&str, MakeSpec); 5] = [
            ("LABEL=", RootSpec::Label),
            ("PARTLABEL=", RootSpec::PartLabel),
            ("UUID=", RootSpec::Uuid),
            ("PARTUUID=", RootSpec::PartUuid),
            ("ID=", RootSpec::Id),
        ];
        for (tag, make) in tags {
            if let Some(value) = spec.strip_prefix(tag) {
                return make(unquote(value).to_owned());
            }
        }
        let links: [(&str, MakeSpec); 5] = [
            ("/dev/disk/by-label/", RootSpec::Label),
            ("/dev/disk/by-partlabel/", RootSpec::PartLabel),
            ("/dev/disk/by-uuid/", RootSpec::Uuid),
            ("/dev/disk/by-partuuid/", RootSpec::PartUuid),
            ("/dev/disk/by-id/", RootSpec::Id),
        ];
        for (dir, make) in links {
            if let Some(name) = spec.strip_prefix(dir) {
                if !name.is_empty() && !name.contains('/') {
                    return make(unescape_udev(name));
                }
            }
        }
        if spec.starts_with('/') { RootSpec::Path(PathBuf::from(spec)) } else { RootSpec::Other(spec.to_owned()) }
    }

    /// The `/dev/disk/by-*` link (or device path) udev creates for this
    /// spec, e.g. `/dev/disk/by-label/NIXOS_ROOT`; `None` for
    /// [`RootSpec::Other`].
    #[must_use]
    pub fn device_path(&self) -> Option<PathBuf> {
        let link = |dir: &str, name: &str| Some(PathBuf::from(format!("/dev/disk/{dir}/{}", escape_udev(name))));
        match self {
            RootSpec::Label(v) => link("by-label", v),
            RootSpec::PartLabel(v) => link("by-partlabel", v),
            RootSpec::Uuid(v) => link("by-uuid", v),
            RootSpec::PartUuid(v) => link("by-partuuid", v),
            RootSpec::Id(v) => link("by-id", v),
            RootSpec::Path(p) => Some(p.clone()),
            RootSpec::Other(_) => None,
        }
    }
}

impl fmt::Display for RootSpec {
    /// The tag form (`LABEL=NIXOS_ROOT`), or the path / raw text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootSpec::Label(v) => write!(f, "LABEL={v}"),
            RootSpec::PartLabel(v) => write!(f, "PARTLABEL={v}"),
            RootSpec::Uuid(v) => write!(f, "UUID={v}"),
            RootSpec::PartUuid(v) => write!(f, "PARTUUID={v}"),
            RootSpec::Id(v) => write!(f, "ID={v}"),
            RootSpec::Path(p) => write!(f, "{}", p.display()),
            RootSpec::Other(s) => f.write_str(s),
        }
    }
}

fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    value
}

/// What a system mounts as `/`: the fstab entry, and the `root=` kernel
/// parameter if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootFilesystem {
    /// The last `/` line of `etc/fstab` (a later line mounts over an
    /// earlier one), if any.
    pub fstab: Option<FstabEntry>,
    /// The last `root=` kernel parameter, unless it is `root=fstab` (the
    /// NixOS systemd-initrd default, meaning "the `/` line of the initrd's
    /// fstab") — then `None`.
    pub kernel_root: Option<RootSpec>,
    /// The last `rootfstype=` kernel parameter.
    pub kernel_rootfstype: Option<String>,
}

impl RootFilesystem {
    /// The root device: from fstab, else from `root=`.
    #[must_use]
    pub fn device(&self) -> Option<RootSpec> {
        self.fstab.as_ref().map(FstabEntry::device).or_else(|| self.kernel_root.clone())
    }

    /// The root file system type: from fstab, else from `rootfstype=`.
    #[must_use]
    pub fn fs_type(&self) -> Option<&str> {
        self.fstab.as_ref().map(|e| e.fs_type.as_str()).or(self.kernel_rootfstype.as_deref())
    }

    /// Builds the root description from parsed fstab entries and kernel
    /// parameters.
    #[must_use]
    pub fn from_parts(fstab: &[FstabEntry], kernel_params: &[String]) -> RootFilesystem {
        let last_param =
            |name: &str| kernel_params.iter().rev().find_map(|p| p.strip_prefix(name)).map(|v| unquote(v).to_owned());
        RootFilesystem {
            fstab: fstab.iter().rev().find(|e| e.mount_point == "/").cloned(),
            kernel_root: last_param("root=").filter(|v| v != "fstab").map(|v| RootSpec::parse(&v)),
            kernel_rootfstype: last_param("rootfstype="),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_nixos_generated_fstab() {
        let text = "# This is a generated file.  Do not edit!\n\
                    #\n\
                    # To make changes, edit the fileSystems and swapDevices NixOS options\n\
                    \n\
                    # Filesystems.\n\
                    /dev/disk/by-label/NIXOS_ROOT / ext4 x-initrd.mount 0 1\n\
                    /dev/disk/by-label/My\\040Boot /boot vfat umask=0077,x-systemd.automount 0 2\n\
                    \n\
                    # Swap devices.\n\
                    /dev/disk/by-partuuid/0a1b2c3d-02 none swap defaults\n";
        let entries = parse_fstab(text).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[0],
            FstabEntry {
                spec: "/dev/disk/by-label/NIXOS_ROOT".into(),
                mount_point: "/".into(),
                fs_type: "ext4".into(),
                options: vec!["x-initrd.mount".into()],
                dump: 0,
                pass: 1,
            }
        );
        assert_eq!(entries[1].spec, "/dev/disk/by-label/My Boot");
        assert_eq!(entries[1].device(), RootSpec::Label("My Boot".into()));
        assert_eq!(entries[1].options, ["umask=0077", "x-systemd.automount"]);
        assert_eq!((entries[2].fs_type.as_str(), entries[2].dump, entries[2].pass), ("swap", 0, 0));
    }

    #[test]
    fn escapes_are_decoded_only_when_complete_and_valid() {
        assert_eq!(unescape_octal(r"a\040b\011c"), "a b\tc");
        // Over 255, too short, not octal, trailing: left as written.
        assert_eq!(unescape_octal(r"\777\04\089\"), r"\777\04\089\");
        assert_eq!(unescape_udev(r"my\x20root\x2f"), "my root/");
        assert_eq!(unescape_udev(r"\x+f\x2\xzz\040\"), r"\x+f\x2\xzz\040\");
        assert_eq!(unescape_udev(&escape_udev("a b/c")), "a b/c");
    }

    #[test]
    fn short_and_broken_lines() {
        let entries = parse_fstab("tmpfs /tmp\n").unwrap();
        assert_eq!((entries[0].fs_type.as_str(), entries[0].options.clone()), ("auto", vec!["defaults".to_owned()]));
        assert_eq!(
            parse_fstab("ok / ext4 defaults 0 1\nlonely\n"),
            Err(FstabError { line: 2, reason: "an fstab entry needs at least a device and a mount point".into() })
        );
        assert_eq!(parse_fstab("a / ext4 defaults zero 1\n").unwrap_err().line, 1);
    }

    #[test]
    fn root_specs_are_normalised() {
        let cases = [
            ("LABEL=NIXOS_ROOT", RootSpec::Label("NIXOS_ROOT".into())),
            ("/dev/disk/by-label/NIXOS_ROOT", RootSpec::Label("NIXOS_ROOT".into())),
            ("/dev/disk/by-label/my\\x20root", RootSpec::Label("my root".into())),
            ("LABEL=\"my root\"", RootSpec::Label("my root".into())),
            ("PARTLABEL=disk-main-root", RootSpec::PartLabel("disk-main-root".into())),
            ("/dev/disk/by-partlabel/disk-main-root", RootSpec::PartLabel("disk-main-root".into())),
            (
                "UUID=6f3c1a2b-0000-4000-8000-000000000001",
                RootSpec::Uuid("6f3c1a2b-0000-4000-8000-000000000001".into()),
            ),
            ("/dev/disk/by-uuid/ABCD-1234", RootSpec::Uuid("ABCD-1234".into())),
            ("PARTUUID=0a1b2c3d-02", RootSpec::PartUuid("0a1b2c3d-02".into())),
            ("/dev/disk/by-partuuid/0a1b2c3d-02", RootSpec::PartUuid("0a1b2c3d-02".into())),
            ("/dev/disk/by-id/virtio-root", RootSpec::Id("virtio-root".into())),
            ("/dev/vda1", RootSpec::Path("/dev/vda1".into())),
            ("/dev/mapper/cryptroot", RootSpec::Path("/dev/mapper/cryptroot".into())),
            ("/dev/disk/by-label/", RootSpec::Path("/dev/disk/by-label/".into())),
            ("rpool/root", RootSpec::Other("rpool/root".into())),
            ("tmpfs", RootSpec::Other("tmpfs".into())),
        ];
        for (text, want) in cases {
            assert_eq!(RootSpec::parse(text), want, "{text}");
        }
        assert_eq!(RootSpec::Label("my root".into()).to_string(), "LABEL=my root");
        assert_eq!(
            RootSpec::Label("my root".into()).device_path(),
            Some(PathBuf::from("/dev/disk/by-label/my\\x20root"))
        );
        assert_eq!(
            RootSpec::Uuid("ABCD-1234".into()).device_path(),
            Some(PathBuf::from("/dev/disk/by-uuid/ABCD-1234"))
        );
        assert_eq!(RootSpec::Other("tmpfs".into()).device_path(), None);
    }

    #[test]
    fn root_from_fstab_and_kernel_params() {
        let fstab =
            parse_fstab("/dev/vda1 / ext4 defaults 0 1\n/dev/disk/by-label/NIXOS_ROOT / xfs defaults 0 1\n").unwrap();
        let params: Vec<String> = ["root=fstab", "loglevel=4"].iter().map(|s| (*s).to_owned()).collect();
        let root = RootFilesystem::from_parts(&fstab, &params);
        assert_eq!(root.device(), Some(RootSpec::Label("NIXOS_ROOT".into())));
        assert_eq!(root.fs_type(), Some("xfs"));
        assert_eq!(root.kernel_root, None, "root=fstab names no device");

        let params: Vec<String> =
            ["root=/dev/sda2", "root=PARTUUID=1234-02", "rootfstype=btrfs"].iter().map(|s| (*s).to_owned()).collect();
        let root = RootFilesystem::from_parts(&[], &params);
        assert_eq!(root.kernel_root, Some(RootSpec::PartUuid("1234-02".into())));
        assert_eq!(root.device(), Some(RootSpec::PartUuid("1234-02".into())));
        assert_eq!(root.fs_type(), Some("btrfs"));
        assert_eq!(RootFilesystem::from_parts(&[], &[]).device(), None);
    }
}
