//! [`SystemToplevel`]: the files of `config.system.build.toplevel`.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use bootspec::BootJson;
use bootspec::generation::Generation;
use bootspec::v1::BootSpecV1;

use fleetgate_files::{Limit, lossy_text};

use crate::error::{Result, SystemError};
use crate::fstab::{FstabEntry, RootFilesystem, parse_fstab};
use crate::kernel_image::KernelImage;

/// The most each small file of a toplevel may hold: generous for what
/// nixpkgs writes, far below what would hurt (`docs/check.md` lists them).
pub mod limits {
    use fleetgate_files::Limit;

    /// `nixos-version` (`25.05.20250601.abcdef0`).
    pub const NIXOS_VERSION: Limit = Limit::new(4 << 10, "a nixos-version file");
    /// `init-interface-version` (`systemd 2`).
    pub const INIT_INTERFACE_VERSION: Limit = Limit::new(4 << 10, "an init-interface-version file");
    /// `system` (`x86_64-linux`).
    pub const SYSTEM: Limit = Limit::new(4 << 10, "a system file");
    /// `kernel-params` (the kernel itself takes at most a few KiB).
    pub const KERNEL_PARAMS: Limit = Limit::new(64 << 10, "a kernel-params file");
    /// `boot.json` (bootspec, with one document per specialisation).
    pub const BOOT_JSON: Limit = Limit::new(4 << 20, "a bootspec document (boot.json)");
    /// `switch-inhibitors` (a JSON object of strings).
    pub const SWITCH_INHIBITORS: Limit = Limit::new(1 << 20, "a switch-inhibitors file");
    /// `etc/fstab`.
    pub const FSTAB: Limit = Limit::new(1 << 20, "an fstab");
}

/// Entries of `kernel-modules/lib/modules` looked at (it holds one).
const MAX_MODULES_ENTRIES: usize = 1024;

/// The state of a toplevel's `switch-inhibitors` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inhibitors {
    /// No such file (systems built before nixpkgs had inhibitors).
    Absent,
    /// A JSON object of strings.
    Valid(BTreeMap<String, String>),
    /// Anything else; the reason.
    Invalid(String),
}

/// Where a component of the system resolves to. Store paths are identities:
/// two systems share a kernel exactly when their `kernel` links resolve to
/// the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Components {
    pub(crate) kernel: Option<PathBuf>,
    pub(crate) initrd: Option<PathBuf>,
    pub(crate) kernel_modules: Option<PathBuf>,
    pub(crate) firmware: Option<PathBuf>,
    pub(crate) systemd: Option<PathBuf>,
}

/// A NixOS system toplevel (`/run/current-system`, `/nix/store/…-nixos-system-…`,
/// or any directory laid out like one), read the way nixpkgs writes it.
///
/// The layout comes from nixpkgs' `nixos/modules/system/activation/top-level.nix`
/// (`init-interface-version` = `systemd <interfaceVersion>`, `nixos-version`,
/// `system`, the `etc`, `sw` and `systemd` links),
/// `nixos/modules/system/boot/kernel.nix` (`kernel`, `kernel-modules`,
/// `initrd`, `firmware` links; `kernel-params` written with `echo -n`),
/// `nixos/modules/system/activation/bootspec.nix` (`boot.json`) and
/// `nixos/modules/system/activation/switchable-system.nix`
/// (`switch-inhibitors`, a JSON object written by `pkgs.writers.writeJSON`).
///
/// Small files are read when opening; everything else on demand.
#[derive(Debug, Clone)]
pub struct SystemToplevel {
    path: PathBuf,
    nixos_version: Option<String>,
    init_interface_version: Option<String>,
    system: Option<String>,
    kernel_params_file: Option<Vec<String>>,
    bootspec: Option<BootJson>,
    inhibitors: Inhibitors,
    components: Components,
}

impl SystemToplevel {
    /// Opens a system toplevel. Symlinks are resolved, so
    /// `/run/current-system` gives the store path it points to.
    ///
    /// The directory must contain at least one of `nixos-version`,
    /// `init-interface-version` or `boot.json`.
    ///
    /// # Errors
    /// [`SystemError::Io`] if the path cannot be resolved or a file cannot be
    /// read, [`SystemError::NotADirectory`], [`SystemError::NotASystem`],
    /// [`SystemError::Bootspec`] for a `boot.json` that is not bootspec v1.
    pub fn open(path: impl AsRef<Path>) -> Result<SystemToplevel> {
        let given = path.as_ref();
        let path = fs::canonicalize(given).map_err(|source| SystemError::Io { path: given.to_path_buf(), source })?;
        if !path.is_dir() {
            return Err(SystemError::NotADirectory(path));
        }

        let nixos_version = read_optional_string(&path.join("nixos-version"), limits::NIXOS_VERSION)?;
        let init_interface_version =
            read_optional_string(&path.join("init-interface-version"), limits::INIT_INTERFACE_VERSION)?;
        let system = read_optional_string(&path.join("system"), limits::SYSTEM)?;
        let kernel_params_file = read_optional_string(&path.join("kernel-params"), limits::KERNEL_PARAMS)?
            .map(|text| text.split_whitespace().map(str::to_owned).collect());

        let boot_json = path.join(bootspec::JSON_FILENAME);
        let bootspec = match read_optional(&boot_json, limits::BOOT_JSON)? {
            None => None,
            Some(bytes) => {
                // The bootspec crate (v2) implements RFC 0125's v1 document,
                // including the extension keys, so it is used as is.
                let doc: BootJson = serde_json::from_slice(&bytes)
                    .map_err(|e| SystemError::Bootspec { path: boot_json.clone(), reason: e.to_string() })?;
                Some(doc)
            }
        };

        if nixos_version.is_none() && init_interface_version.is_none() && bootspec.is_none() {
            return Err(SystemError::NotASystem(path));
        }

        let inhibitors = match read_optional(&path.join("switch-inhibitors"), limits::SWITCH_INHIBITORS)? {
            None => Inhibitors::Absent,
            Some(bytes) => match parse_inhibitors(&bytes) {
                Ok(map) => Inhibitors::Valid(map),
                Err(reason) => Inhibitors::Invalid(reason),
            },
        };

        let v1 = bootspec.as_ref().and_then(bootspec_v1);
        let components = Components {
            kernel: resolve(&path.join("kernel")).or_else(|| v1.map(|b| b.kernel.clone())),
            initrd: resolve(&path.join("initrd")).or_else(|| v1.and_then(|b| b.initrd.clone())),
            kernel_modules: resolve(&path.join("kernel-modules")),
            firmware: resolve(&path.join("firmware")),
            systemd: resolve(&path.join("systemd")),
        };

        Ok(SystemToplevel {
            path,
            nixos_version,
            init_interface_version,
            system,
            kernel_params_file,
            bootspec,
            inhibitors,
            components,
        })
    }

    /// The resolved path of the toplevel.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole `boot.json` document (bootspec v1 plus extensions such as
    /// `org.nixos.specialisation.v1` and `org.nixos.systemd-boot`), if the
    /// system has one.
    #[must_use]
    pub fn bootspec(&self) -> Option<&BootJson> {
        self.bootspec.as_ref()
    }

    /// The `org.nixos.bootspec.v1` part of `boot.json`.
    #[must_use]
    pub fn bootspec_v1(&self) -> Option<&BootSpecV1> {
        self.bootspec.as_ref().and_then(bootspec_v1)
    }

    /// The kernel image: where the `kernel` link resolves to (its target if
    /// the target is not on this machine), else the bootspec's `kernel`.
    #[must_use]
    pub fn kernel_path(&self) -> Option<&Path> {
        self.components.kernel.as_deref()
    }

    /// The initrd, resolved like [`SystemToplevel::kernel_path`].
    #[must_use]
    pub fn initrd_path(&self) -> Option<&Path> {
        self.components.initrd.as_deref()
    }

    /// Where the `kernel-modules` link (`config.system.modulesTree`)
    /// resolves to.
    #[must_use]
    pub fn kernel_modules_path(&self) -> Option<&Path> {
        self.components.kernel_modules.as_deref()
    }

    /// `kernel-modules/lib/modules/<kver>`, the directory modprobe reads.
    ///
    /// # Errors
    /// [`SystemError::Missing`] if `kernel-modules/lib/modules` does not
    /// exist; [`SystemError::KernelModules`] if it does not hold exactly one
    /// version directory.
    pub fn kernel_modules_dir(&self) -> Result<PathBuf> {
        let modules = self.path.join("kernel-modules/lib/modules");
        let entries = match fs::read_dir(&modules) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(SystemError::Missing(modules)),
            Err(source) => {
                return Err(SystemError::Io { path: modules, source });
            }
        };
        let mut versions = Vec::new();
        for (n, entry) in entries.enumerate() {
            // A modules tree holds one version directory; a huge directory
            // is not one, and is not listed to the end.
            if n >= MAX_MODULES_ENTRIES {
                return Err(SystemError::KernelModules {
                    path: modules,
                    reason: format!("more than {MAX_MODULES_ENTRIES} entries"),
                });
            }
            let entry = entry.map_err(|source| SystemError::Io { path: modules.clone(), source })?;
            if entry.path().is_dir() {
                versions.push(entry.path());
            }
        }
        versions.sort();
        match versions.len() {
            1 => versions.pop().ok_or(SystemError::Missing(modules)),
            0 => Err(SystemError::KernelModules { path: modules, reason: "no kernel version directory".to_owned() }),
            _ => Err(SystemError::KernelModules {
                reason: format!(
                    "several kernel versions: {}",
                    versions
                        .iter()
                        .filter_map(|v| v.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                path: modules,
            }),
        }
    }

    /// The kernel version: the name of [`SystemToplevel::kernel_modules_dir`].
    ///
    /// # Errors
    /// As [`SystemToplevel::kernel_modules_dir`].
    pub fn kernel_version(&self) -> Result<String> {
        let dir = self.kernel_modules_dir()?;
        dir.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or(SystemError::Missing(dir))
    }

    /// The kernel command line NixOS boots with, minus the `init=` every
    /// bootloader adds: the `kernel-params` file (space-separated), else the
    /// bootspec's `kernelParams`, else empty.
    #[must_use]
    pub fn kernel_params(&self) -> Vec<String> {
        if let Some(params) = &self.kernel_params_file {
            return params.clone();
        }
        self.bootspec_v1().map(|b| b.kernel_params.clone()).unwrap_or_default()
    }

    /// The parsed `etc/fstab`.
    ///
    /// # Errors
    /// [`SystemError::Missing`] without `etc/fstab`, [`SystemError::Fstab`]
    /// for a malformed line, [`SystemError::Io`].
    pub fn fstab(&self) -> Result<Vec<FstabEntry>> {
        let path = self.path.join("etc/fstab");
        let text = read_optional_string(&path, limits::FSTAB)?.ok_or_else(|| SystemError::Missing(path.clone()))?;
        parse_fstab(&text).map_err(|e| SystemError::Fstab { path, line: e.line, reason: e.reason })
    }

    /// The root file system: the `/` entry of `etc/fstab` and any `root=` /
    /// `rootfstype=` kernel parameter.
    ///
    /// # Errors
    /// As [`SystemToplevel::fstab`].
    pub fn root_filesystem(&self) -> Result<RootFilesystem> {
        Ok(RootFilesystem::from_parts(&self.fstab()?, &self.kernel_params()))
    }

    /// The switch inhibitors (`switch-inhibitors`, key → value); empty if
    /// the system has no such file.
    ///
    /// # Errors
    /// [`SystemError::Inhibitors`] if the file is not a JSON object of
    /// strings. (nixpkgs' own check then silently compares nothing; see
    /// [`crate::compare_for_switch`].)
    pub fn switch_inhibitors(&self) -> Result<BTreeMap<String, String>> {
        match &self.inhibitors {
            Inhibitors::Absent => Ok(BTreeMap::new()),
            Inhibitors::Valid(map) => Ok(map.clone()),
            Inhibitors::Invalid(reason) => {
                Err(SystemError::Inhibitors { path: self.path.join("switch-inhibitors"), reason: reason.clone() })
            }
        }
    }

    pub(crate) fn inhibitors_state(&self) -> &Inhibitors {
        &self.inhibitors
    }

    pub(crate) fn components(&self) -> &Components {
        &self.components
    }

    /// The words of the `kernel-params` file (what GRUB's installer puts on
    /// the kernel command line), or `None` without one. systemd-boot uses the
    /// bootspec's `kernelParams` instead; [`SystemToplevel::kernel_params`]
    /// prefers this file.
    #[must_use]
    pub fn kernel_params_file(&self) -> Option<&[String]> {
        self.kernel_params_file.as_deref()
    }

    /// Where the toplevel's own entry `name` (`kernel`, `initrd`, `init`,
    /// `kernel-modules`) leads: the resolved path when it exists on this
    /// machine, a dangling link's target otherwise, `None` when the toplevel
    /// has no such entry. Unlike [`SystemToplevel::kernel_path`], the
    /// bootspec is never consulted.
    #[must_use]
    pub fn entry(&self, name: &str) -> Option<PathBuf> {
        let path = self.path.join(name);
        resolve(&path).or_else(|| path.symlink_metadata().is_ok().then_some(path))
    }

    /// The header of the kernel image ([`crate::kernel_image::inspect`]);
    /// `Ok(None)` when the file is no kernel image this crate recognises.
    ///
    /// # Errors
    /// [`SystemError::Missing`] without a kernel; [`SystemError::File`] when
    /// it is missing or not a regular file.
    pub fn kernel_image(&self) -> Result<Option<KernelImage>> {
        let path = self.kernel_path().ok_or_else(|| SystemError::Missing(self.path.join("kernel")))?;
        Ok(crate::kernel_image::inspect(path)?)
    }

    /// The `init-interface-version` file exactly as written (`systemd 2` for
    /// current nixpkgs; no trailing newline). switch-to-configuration
    /// compares it byte for byte.
    #[must_use]
    pub fn init_interface_version(&self) -> Option<&str> {
        self.init_interface_version.as_deref()
    }

    /// The `nixos-version` file (e.g. `25.05.20250601.abcdef0`), trimmed.
    #[must_use]
    pub fn nixos_version(&self) -> Option<&str> {
        self.nixos_version.as_deref().map(str::trim)
    }

    /// The `system` file (e.g. `x86_64-linux`), trimmed.
    #[must_use]
    pub fn system(&self) -> Option<&str> {
        self.system.as_deref().map(str::trim)
    }

    /// Where the `systemd` link (the systemd package) resolves to.
    #[must_use]
    pub fn systemd_path(&self) -> Option<&Path> {
        self.components.systemd.as_deref()
    }

    /// Where the `firmware` link (`hardware.firmware`'s `lib/firmware`)
    /// resolves to.
    #[must_use]
    pub fn firmware_path(&self) -> Option<&Path> {
        self.components.firmware.as_deref()
    }
}

fn bootspec_v1(doc: &BootJson) -> Option<&BootSpecV1> {
    match &doc.generation {
        Generation::V1(v1) => Some(&v1.bootspec),
        // `Generation` is non_exhaustive: future versions are not v1.
        _ => None,
    }
}

/// `switch-inhibitors` as nixpkgs writes it: `writeJSON` of an
/// `attrsOf str`, i.e. a JSON object whose values are strings.
fn parse_inhibitors(bytes: &[u8]) -> std::result::Result<BTreeMap<String, String>, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(object) = value else {
        return Err("not a JSON object".to_owned());
    };
    object
        .into_iter()
        .map(|(key, value)| match value {
            serde_json::Value::String(s) => Ok((key, s)),
            other => Err(format!("the value of {key:?} is not a string: {other}")),
        })
        .collect()
}

/// A component link: its resolved path if it exists here, its target if it
/// is a link to a path not on this machine, `None` if there is no entry.
fn resolve(path: &Path) -> Option<PathBuf> {
    if let Ok(resolved) = fs::canonicalize(path) {
        return Some(resolved);
    }
    fs::read_link(path).ok().map(|target| {
        if target.is_absolute() { target } else { path.parent().map_or(target.clone(), |dir| dir.join(&target)) }
    })
}

/// A small file of the toplevel, bounded and only if it is a regular file;
/// `None` when it does not exist.
fn read_optional(path: &Path, limit: Limit) -> Result<Option<Vec<u8>>> {
    fleetgate_files::read_optional(path, limit).map_err(SystemError::from)
}

fn read_optional_string(path: &Path, limit: Limit) -> Result<Option<String>> {
    Ok(read_optional(path, limit)?.map(lossy_text))
}
