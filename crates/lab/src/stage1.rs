//! Would this kernel + initrd reach stage 2 on this hardware? The lab's own
//! answer, deliberately independent of fleetgate: it unpacks the initrd with
//! the standard `zstd`/`gzip`/`xz` and `cpio` tools, then asks kmod's own
//! `modprobe --show-depends` — against the initrd's module tree and its own
//! `depmod` output — for every `MODALIAS` on the root disk's device chain, as
//! udev in a real stage 1 would. The root device named by the initrd's
//! `/etc/fstab` (`/sysroot`, as a NixOS systemd initrd has it) or `root=` must
//! then exist among the host's `/dev/disk` links.
//!
//! A missing driver or device means systemd in the initrd waits forever:
//! "A start job is running for /dev/disk/by-label/NIXOS_ROOT (… / no limit)".

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::firmware::BootChoice;
use crate::hardware::Hardware;
use crate::process::{self, ProcessError};

const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// The outcome of starting the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stage 1 found and mounted the root filesystem; stage 2 can start.
    ReachesStage2 { kernel_version: String, loaded: Vec<String> },
    /// Stage 1 never sees the root device and waits without limit.
    WaitsForRoot { device: String, cause: String },
    /// Stage 1 fails and drops to emergency mode (or the kernel panics).
    Fails { reason: String },
}

impl Verdict {
    /// What the console shows, NixOS/systemd style.
    pub fn console_lines(&self) -> Vec<String> {
        match self {
            Verdict::ReachesStage2 { kernel_version, loaded } => vec![
                format!("[    0.000000] Linux version {kernel_version}"),
                format!("[    1.100000] systemd[1]: Loaded kernel modules: {}", loaded.join(" ")),
                "[  OK  ] Reached target Initrd Root Device.".into(),
                "[  OK  ] Mounted /sysroot.".into(),
                "[  OK  ] Reached target Switch Root.".into(),
            ],
            Verdict::WaitsForRoot { device, cause } => {
                let mut lines = vec![format!("[    1.200000] stage 1: {cause}")];
                for (i, time) in ["30s", "1min", "1min 30s"].iter().enumerate() {
                    let stars = ["*     ", " *    ", "  *   "][i];
                    lines.push(format!("[{stars}] A start job is running for {device} ({time} / no limit)"));
                }
                lines
            }
            Verdict::Fails { reason } => vec![
                format!("[FAILED] {reason}"),
                "You are in emergency mode. After logging in, type \"journalctl -xb\" to view system logs.".into(),
            ],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Stage1Error {
    #[error(transparent)]
    Tool(#[from] ProcessError),
    #[error("{what}")]
    Io { what: String, source: io::Error },
}

fn io_err(what: &str) -> impl Fn(io::Error) -> Stage1Error + '_ {
    move |source| Stage1Error::Io { what: what.to_owned(), source }
}

/// Starts `choice` on `hardware` in the lab's imagination, using `work` as
/// scratch space.
pub fn boot(choice: &BootChoice, hardware: &Hardware, work: &Path) -> Result<Verdict, Stage1Error> {
    if !choice.kernel.is_file() {
        return Ok(Verdict::Fails { reason: format!("Error loading {}: Not Found", choice.kernel.display()) });
    }
    let kernel_version = match kernel_version(&choice.kernel)? {
        Some(version) => version,
        None => {
            return Ok(Verdict::Fails { reason: format!("{} is not a Linux kernel image", choice.kernel.display()) });
        }
    };
    let root = work.join("initrd");
    if root.exists() {
        fs::remove_dir_all(&root).map_err(io_err("cleaning the initrd scratch directory"))?;
    }
    fs::create_dir_all(&root).map_err(io_err("creating the initrd scratch directory"))?;
    for initrd in &choice.initrds {
        if !initrd.is_file() {
            return Ok(Verdict::Fails { reason: format!("Error loading {}: Not Found", initrd.display()) });
        }
        if let Err(reason) = unpack(initrd, &root)? {
            return Ok(Verdict::Fails {
                reason: format!("Kernel panic - not syncing: Initramfs unpacking failed: {reason}"),
            });
        }
    }
    let device = match root_device(&root, &choice.options)? {
        Some(device) => device,
        None => {
            return Ok(Verdict::Fails {
                reason: "no root filesystem named by root= or the initrd's /etc/fstab".into(),
            });
        }
    };
    let Some(modules) = resolve_in(&root, &Path::new("lib/modules").join(&kernel_version)) else {
        let cause = format!("the initrd has no lib/modules/{kernel_version}: no driver can load");
        return Ok(Verdict::WaitsForRoot { device: device.path, cause });
    };
    let modroot = work.join("modroot");
    if modroot.exists() {
        fs::remove_dir_all(&modroot).map_err(io_err("cleaning the module root"))?;
    }
    fs::create_dir_all(modroot.join("lib/modules")).map_err(io_err("creating the module root"))?;
    std::os::unix::fs::symlink(&modules, modroot.join("lib/modules").join(&kernel_version))
        .map_err(io_err("linking the module root"))?;
    let mut loaded = Vec::new();
    let mut missing = Vec::new();
    for modalias in hardware.chain_modaliases() {
        match modprobe(&modroot, &kernel_version, &modalias)? {
            Some(mods) => loaded.extend(mods),
            None => missing.push(modalias),
        }
    }
    if !missing.is_empty() {
        return Ok(Verdict::WaitsForRoot {
            device: device.path,
            cause: format!("no driver in the initrd for {}", missing.join(", ")),
        });
    }
    let known = hardware
        .disk_links()
        .into_iter()
        .any(|(link, _)| Path::new("/dev/disk").join(&link) == Path::new(&device.path));
    if !known {
        return Ok(Verdict::WaitsForRoot {
            device: device.path.clone(),
            cause: format!("this machine has no device {}", device.path),
        });
    }
    match modprobe(&modroot, &kernel_version, &format!("fs-{}", device.fs_type))? {
        Some(mods) => loaded.extend(mods),
        None => {
            return Ok(Verdict::Fails {
                reason: format!("Failed to mount /sysroot: unknown filesystem type '{}'", device.fs_type),
            });
        }
    }
    loaded.dedup();
    Ok(Verdict::ReachesStage2 { kernel_version, loaded })
}

/// The kernel release a bzImage carries, read by `file(1)`.
fn kernel_version(kernel: &Path) -> Result<Option<String>, Stage1Error> {
    let out = process::run(Command::new("file").arg("-bL").arg(kernel), TOOL_TIMEOUT)?;
    Ok(out
        .stdout
        .split(", ")
        .find_map(|part| part.strip_prefix("version "))
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_owned))
}

/// Unpacks one initrd file with the standard tools; `Err` text on a corrupt image.
fn unpack(initrd: &Path, root: &Path) -> Result<Result<(), String>, Stage1Error> {
    let mut magic = [0u8; 6];
    let head = fs::read(initrd).map_err(io_err("reading the initrd"))?;
    let n = head.len().min(6);
    magic[..n].copy_from_slice(&head[..n]);
    let decompressor: Option<&[&str]> = match magic {
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(&["zstd", "-dcq"]),
        [0x1f, 0x8b, ..] => Some(&["gzip", "-dc"]),
        [0xfd, b'7', b'z', b'X', b'Z', 0] => Some(&["xz", "-dc"]),
        [b'0', b'7', b'0', b'7', b'0', b'1' | b'2'] => None,
        _ => return Ok(Err("unknown compression".into())),
    };
    let script = match decompressor {
        // On stdin: zstd and gzip silently skip input files that are symlinks.
        Some(cmd) => format!("{} < \"$1\" | cpio -idm --quiet --no-absolute-filenames -D \"$2\"", cmd.join(" ")),
        None => "cpio -idm --quiet --no-absolute-filenames -D \"$2\" < \"$1\"".to_owned(),
    };
    let mut command = Command::new("bash");
    command.args(["-o", "pipefail", "-ec", &script, "unpack"]).arg(initrd).arg(root).stdin(Stdio::null());
    match process::run(&mut command, TOOL_TIMEOUT) {
        Ok(_) => Ok(Ok(())),
        Err(ProcessError::Failed { stderr, .. }) => Ok(Err(stderr)),
        Err(err) => Err(err.into()),
    }
}

/// The root device stage 1 waits for: `root=` on the command line wins, else
/// the `/sysroot` line of the initrd's `/etc/fstab`.
pub struct RootDevice {
    pub path: String,
    pub fs_type: String,
}

fn root_device(initrd_root: &Path, options: &str) -> Result<Option<RootDevice>, Stage1Error> {
    let fstab = resolve_in(initrd_root, Path::new("etc/fstab"));
    let text = match fstab {
        Some(path) => fs::read_to_string(path).map_err(io_err("reading the initrd's /etc/fstab"))?,
        None => String::new(),
    };
    let sysroot = text
        .lines()
        .map(str::split_whitespace)
        .filter_map(|mut f| Some((f.next()?, f.next()?, f.next()?)))
        .find(|(_, mount, _)| *mount == "/sysroot");
    // `root=fstab` (systemd's initrd default on NixOS) defers to the fstab.
    let cmdline_root = options.split_whitespace().find_map(|p| p.strip_prefix("root=")).filter(|r| *r != "fstab");
    let fs_type = options
        .split_whitespace()
        .find_map(|p| p.strip_prefix("rootfstype="))
        .or(sysroot.map(|(_, _, t)| t))
        .unwrap_or("auto")
        .to_owned();
    let spec = match (cmdline_root, sysroot) {
        (Some(root), _) => root,
        (None, Some((spec, _, _))) => spec,
        (None, None) => return Ok(None),
    };
    Ok(Some(RootDevice { path: device_path(spec), fs_type }))
}

/// `LABEL=x` → `/dev/disk/by-label/x`, and so on, as systemd's fstab
/// generator does (`fstab_node_to_udev_node`).
pub fn device_path(spec: &str) -> String {
    for (prefix, dir) in
        [("LABEL=", "by-label"), ("UUID=", "by-uuid"), ("PARTLABEL=", "by-partlabel"), ("PARTUUID=", "by-partuuid")]
    {
        if let Some(value) = spec.strip_prefix(prefix) {
            return format!("/dev/disk/{dir}/{value}");
        }
    }
    spec.to_owned()
}

/// Follows `path` inside an unpacked tree, resolving symlinks (absolute ones
/// relative to `root`) without ever leaving it.
pub fn resolve_in(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut current = PathBuf::new();
    let mut pending: Vec<PathBuf> = path.components().rev().map(|c| PathBuf::from(c.as_os_str())).collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.components().next()? {
            Component::RootDir => current = PathBuf::new(),
            Component::CurDir => {}
            Component::ParentDir => {
                current.pop();
            }
            Component::Normal(name) => {
                let candidate = current.join(name);
                let full = root.join(&candidate);
                let meta = fs::symlink_metadata(&full).ok()?;
                if meta.file_type().is_symlink() {
                    hops += 1;
                    if hops > 40 {
                        return None;
                    }
                    let target = fs::read_link(&full).ok()?;
                    if target.is_absolute() {
                        current = PathBuf::new();
                    }
                    for c in target.components().rev() {
                        if c != Component::RootDir {
                            pending.push(PathBuf::from(c.as_os_str()));
                        }
                    }
                } else {
                    current = candidate;
                }
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(root.join(current))
}

/// `modprobe --show-depends` against the initrd's module tree: the modules
/// that would be loaded, or `None` if the alias resolves to nothing present.
fn modprobe(modroot: &Path, kernel_version: &str, alias: &str) -> Result<Option<Vec<String>>, Stage1Error> {
    let mut command = Command::new("modprobe");
    command.arg("--config=/dev/null").arg("--dirname").arg(modroot).args([
        "--set-version",
        kernel_version,
        "--show-depends",
        alias,
    ]);
    let (status, stdout, _) = process::run_status(&mut command, TOOL_TIMEOUT)?;
    if !status.success() {
        return Ok(None);
    }
    let mut modules = Vec::new();
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("insmod"), Some(path)) => {
                // modprobe trusts modules.dep; the file must really be there.
                if !Path::new(path).is_file() {
                    return Ok(None);
                }
                let name = Path::new(path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                modules.push(name.split(".ko").next().unwrap_or_default().replace('-', "_"));
            }
            (Some("builtin"), Some(name)) => modules.push(name.to_owned()),
            _ => {}
        }
    }
    Ok(if modules.is_empty() { None } else { Some(modules) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_specs_become_udev_paths() {
        assert_eq!(device_path("LABEL=NIXOS_ROOT"), "/dev/disk/by-label/NIXOS_ROOT");
        assert_eq!(device_path("PARTLABEL=root"), "/dev/disk/by-partlabel/root");
        assert_eq!(device_path("/dev/vda2"), "/dev/vda2");
    }

    #[test]
    fn resolution_stays_inside_the_unpacked_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("nix/store/abc-modules/lib/modules/6.1")).unwrap();
        std::os::unix::fs::symlink("/nix/store/abc-modules/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("nix/store/abc-modules/lib/up")).unwrap();
        assert_eq!(
            resolve_in(root, Path::new("lib/modules/6.1")).unwrap(),
            root.join("nix/store/abc-modules/lib/modules/6.1")
        );
        // `..` past the top stays at the top, as in a chroot.
        assert_eq!(resolve_in(root, Path::new("lib/up/etc")), None);
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolve_in(root, Path::new("loop/x")), None);
    }
}
