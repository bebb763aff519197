//! Can the running system switch to a new one live, or does it need a
//! reboot? [`compare_for_switch`] answers the way NixOS itself would.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::toplevel::{Inhibitors, SystemToplevel};

/// Text of nixpkgs' `switchInhibitors` pre-switch check when inhibitors
/// differ (`nixos/modules/system/activation/switchable-system.nix`), up to
/// the diff lines.
pub const INHIBITOR_HEADER: &str = "There are changes to critical components of the system:";

/// The lines nixpkgs prints after the diff lines, one per `echo`.
pub const INHIBITOR_FOOTER: [&str; 8] = [
    "",
    "Switching into this system is not recommended.",
    "You probably want to run 'nixos-rebuild boot' and reboot your system instead.",
    "",
    "If you really want to switch into this configuration directly, then",
    "you can set NIXOS_NO_CHECK=1 to ignore pre-switch checks.",
    "",
    "WARNING: doing so might cause the switch to fail or your system to become unstable.",
];

/// What `switch-to-configuration` prints when the init interface changed
/// (`pkgs/by-name/sw/switch-to-configuration-ng/src/src/main.rs`,
/// `do_system_switch`), before exiting with status 100.
pub const INIT_INTERFACE_WARNING: &str = "Warning: the new NixOS configuration has an ‘init’ that is\n\
incompatible with the current configuration.  The new configuration\n\
won't take effect until you reboot the system.\n";

/// A part of the system whose change only takes effect after a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// The `kernel` link: the running kernel is not replaced by a switch.
    Kernel,
    /// The `initrd` link: only used at boot.
    Initrd,
    /// The `kernel-modules` link: modules are loaded from the booted
    /// system's tree until the next boot.
    KernelModules,
    /// The `kernel-params` file: the command line is fixed at boot.
    KernelParams,
    /// The `firmware` link: drivers that already loaded their firmware
    /// keep it.
    Firmware,
    /// The `systemd` link. switch-to-configuration re-executes systemd when
    /// its binary changed, but the initrd's systemd and everything started
    /// before the re-exec stay old until a reboot.
    Systemd,
}

impl Component {
    /// The toplevel entry name.
    #[must_use]
    pub fn entry(self) -> &'static str {
        match self {
            Component::Kernel => "kernel",
            Component::Initrd => "initrd",
            Component::KernelModules => "kernel-modules",
            Component::KernelParams => "kernel-params",
            Component::Firmware => "firmware",
            Component::Systemd => "systemd",
        }
    }
}

/// One value of a changed component, for reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentValue {
    /// The toplevel has no such entry.
    Absent,
    /// A resolved path.
    Path(PathBuf),
    /// Kernel parameters.
    Params(Vec<String>),
}

impl fmt::Display for ComponentValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentValue::Absent => f.write_str("(none)"),
            ComponentValue::Path(p) => write!(f, "{}", p.display()),
            ComponentValue::Params(p) => f.write_str(&p.join(" ")),
        }
    }
}

/// What a reason does to `switch-to-configuration switch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Effect {
    /// A pre-switch check fails: switch-to-configuration exits 1 before it
    /// installs the bootloader or activates anything.
    SwitchRefused,
    /// The bootloader is installed, then switch-to-configuration refuses to
    /// activate and exits 100; the new system runs only after a reboot.
    ActivationRefused,
    /// The switch goes ahead, but this part keeps running the old version
    /// until a reboot.
    RebootToTakeEffect,
    /// A pre-switch check would refuse, but `NIXOS_NO_CHECK=1` skips the
    /// checks; the switch goes ahead and, in NixOS' words, "might cause the
    /// switch to fail or your system to become unstable".
    CheckSkipped,
}

/// One reason a live switch is impossible or a reboot is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchReason {
    /// A switch inhibitor present in both systems with different values.
    Inhibitor {
        /// The inhibitor, e.g. `dbus-implementation`.
        key: String,
        /// The current system's value.
        old: String,
        /// The new system's value.
        new: String,
        /// `NIXOS_NO_CHECK=1` skips the check.
        check_skipped: bool,
    },
    /// `init-interface-version` differs (the current one counts as empty
    /// when absent, as switch-to-configuration reads it).
    InitInterfaceVersion {
        /// The current system's file, if any.
        old: Option<String>,
        /// The new system's file, if any.
        new: Option<String>,
    },
    /// The new system has no `init-interface-version`:
    /// switch-to-configuration fails with "File init-interface-version
    /// should exist" after installing the bootloader.
    MissingInitInterfaceVersion,
    /// A boot-time component differs.
    Changed {
        /// Which one.
        component: Component,
        /// The current system's.
        old: ComponentValue,
        /// The new system's.
        new: ComponentValue,
    },
}

impl SwitchReason {
    /// What this reason does to a switch.
    #[must_use]
    pub fn effect(&self) -> Effect {
        match self {
            SwitchReason::Inhibitor { check_skipped: true, .. } => Effect::CheckSkipped,
            SwitchReason::Inhibitor { .. } => Effect::SwitchRefused,
            SwitchReason::InitInterfaceVersion { .. } | SwitchReason::MissingInitInterfaceVersion => {
                Effect::ActivationRefused
            }
            SwitchReason::Changed { .. } => Effect::RebootToTakeEffect,
        }
    }
}

impl fmt::Display for SwitchReason {
    /// Inhibitors exactly as NixOS prints them (`key : old -> new`), the
    /// rest in the same spirit.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchReason::Inhibitor { key, old, new, .. } => write!(f, "{key} : {old} -> {new}"),
            SwitchReason::InitInterfaceVersion { old, new } => write!(
                f,
                "init-interface-version : {} -> {}",
                old.as_deref().unwrap_or(""),
                new.as_deref().unwrap_or("")
            ),
            SwitchReason::MissingInitInterfaceVersion => {
                f.write_str("init-interface-version : missing in the new system")
            }
            SwitchReason::Changed { component, old, new } => write!(f, "{} : {old} -> {new}", component.entry()),
        }
    }
}

/// Something the decision is based on that a reader should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionNote {
    /// A `switch-inhibitors` file that is not a JSON object of strings.
    /// nixpkgs' check compares it as `{}` (its jq either fails or, in newer
    /// versions, uses `try fromjson catch {}`), so it inhibits nothing —
    /// silently there, loudly here.
    UnreadableInhibitors {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything standing between the current system and a live switch to the
/// new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchDecision {
    /// Whether the decision assumes `NIXOS_NO_CHECK=1`.
    pub no_check: bool,
    /// All reasons, in this order: inhibitors (sorted by key, as nixpkgs
    /// lists them), init interface, then components.
    pub reasons: Vec<SwitchReason>,
    /// Caveats about the inputs.
    pub notes: Vec<DecisionNote>,
}

impl SwitchDecision {
    /// Whether `switch-to-configuration switch` would activate the new
    /// system now (possibly with parts that need a reboot to take effect).
    #[must_use]
    pub fn can_switch_live(&self) -> bool {
        !self.reasons.iter().any(|r| matches!(r.effect(), Effect::SwitchRefused | Effect::ActivationRefused))
    }

    /// Whether a pre-switch check refuses the switch outright.
    #[must_use]
    pub fn switch_refused(&self) -> bool {
        self.reasons.iter().any(|r| r.effect() == Effect::SwitchRefused)
    }

    /// Whether the new system only fully runs after `boot` + reboot.
    /// Skipped inhibitor checks do not count: the switch goes ahead.
    #[must_use]
    pub fn reboot_needed(&self) -> bool {
        self.reasons.iter().any(|r| r.effect() != Effect::CheckSkipped)
    }

    /// The reasons with a given effect.
    pub fn with_effect(&self, effect: Effect) -> impl Iterator<Item = &SwitchReason> {
        self.reasons.iter().filter(move |r| r.effect() == effect)
    }

    /// What NixOS prints on stderr when its `switchInhibitors` check
    /// refuses this switch, line for line; `None` when it does not refuse
    /// (no differing inhibitor, or `NIXOS_NO_CHECK=1`).
    #[must_use]
    pub fn nixos_refusal(&self) -> Option<String> {
        let lines: Vec<String> = self.with_effect(Effect::SwitchRefused).map(ToString::to_string).collect();
        if lines.is_empty() {
            return None;
        }
        // `echo -n "Checking switch inhibitors..."` followed by `echo`.
        let mut out = String::from("Checking switch inhibitors...\n");
        out.push_str(INHIBITOR_HEADER);
        out.push_str("\n\n");
        for line in &lines {
            out.push_str(line);
            out.push('\n');
        }
        for line in INHIBITOR_FOOTER {
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
        out.push_str("Pre-switch check 'switchInhibitors' failed\n");
        out.push_str("Pre-switch checks failed\n");
        Some(out)
    }
}

/// Lists every reason why switching from `current` to `new` is refused or
/// needs a reboot, following NixOS:
///
/// * **Inhibitors** — nixpkgs' `switchInhibitors` pre-switch check
///   (`nixos/modules/system/activation/switchable-system.nix`) reads both
///   `switch-inhibitors` files (a missing one counts as `{}`) and reports
///   every key present in **both** whose values differ, as
///   `key : old -> new`, in key order; keys added or removed never block.
///   Any such line makes switch-to-configuration exit 1 before doing
///   anything. nixpkgs compares against `/run/current-system`, so pass the
///   current system as `current`.
/// * **`no_check`** mirrors `NIXOS_NO_CHECK=1`: switch-to-configuration
///   (`pkgs/by-name/sw/switch-to-configuration-ng/src/src/main.rs`,
///   `do_system_switch`) then skips the pre-switch check script entirely —
///   the inhibitor check and any other `system.preSwitchChecks` — and
///   nothing else. Inhibitor differences are still listed, as
///   [`Effect::CheckSkipped`].
/// * **`init-interface-version`** — compared byte for byte after the
///   bootloader is installed (a missing current file reads as empty); a
///   difference exits 100 with [`INIT_INTERFACE_WARNING`]. `NIXOS_NO_CHECK`
///   does not skip it.
/// * **Reboot triggers** — kernel, initrd, kernel-modules, kernel-params,
///   firmware and systemd: a switch activates the new system but these keep
///   running the old version until a reboot. For the kernel, initrd and
///   modules the meaningful `current` is the *booted* system
///   (`/run/booted-system`); call this once per reference if they differ.
///
/// Components are compared by resolved path (store paths are identities;
/// two plain directories with copies of the same file count as different),
/// kernel parameters by value.
#[must_use]
pub fn compare_for_switch(current: &SystemToplevel, new: &SystemToplevel, no_check: bool) -> SwitchDecision {
    let mut reasons = Vec::new();
    let mut notes = Vec::new();

    let inhibitors = |system: &SystemToplevel, notes: &mut Vec<DecisionNote>| match system.inhibitors_state() {
        Inhibitors::Absent => BTreeMap::new(),
        Inhibitors::Valid(map) => map.clone(),
        Inhibitors::Invalid(reason) => {
            notes.push(DecisionNote::UnreadableInhibitors {
                path: system.path().join("switch-inhibitors"),
                reason: reason.clone(),
            });
            BTreeMap::new()
        }
    };
    let old_inhibitors = inhibitors(current, &mut notes);
    let new_inhibitors = inhibitors(new, &mut notes);
    for (key, old) in &old_inhibitors {
        if let Some(new_value) = new_inhibitors.get(key) {
            if new_value != old {
                reasons.push(SwitchReason::Inhibitor {
                    key: key.clone(),
                    old: old.clone(),
                    new: new_value.clone(),
                    check_skipped: no_check,
                });
            }
        }
    }

    match new.init_interface_version() {
        None => reasons.push(SwitchReason::MissingInitInterfaceVersion),
        Some(new_version) => {
            if current.init_interface_version().unwrap_or("") != new_version {
                reasons.push(SwitchReason::InitInterfaceVersion {
                    old: current.init_interface_version().map(str::to_owned),
                    new: Some(new_version.to_owned()),
                });
            }
        }
    }

    let (a, b) = (current.components(), new.components());
    let paths: [(Component, &Option<PathBuf>, &Option<PathBuf>); 3] = [
        (Component::Kernel, &a.kernel, &b.kernel),
        (Component::Initrd, &a.initrd, &b.initrd),
        (Component::KernelModules, &a.kernel_modules, &b.kernel_modules),
    ];
    for (component, old, new) in paths {
        push_path_change(&mut reasons, component, old.as_deref(), new.as_deref());
    }
    let (old_params, new_params) = (params_of(current), params_of(new));
    if old_params != new_params {
        reasons.push(SwitchReason::Changed {
            component: Component::KernelParams,
            old: old_params.map_or(ComponentValue::Absent, ComponentValue::Params),
            new: new_params.map_or(ComponentValue::Absent, ComponentValue::Params),
        });
    }
    push_path_change(&mut reasons, Component::Firmware, a.firmware.as_deref(), b.firmware.as_deref());
    push_path_change(&mut reasons, Component::Systemd, a.systemd.as_deref(), b.systemd.as_deref());

    SwitchDecision { no_check, reasons, notes }
}

fn params_of(system: &SystemToplevel) -> Option<Vec<String>> {
    system
        .kernel_params_file()
        .map(<[String]>::to_vec)
        .or_else(|| system.bootspec_v1().map(|b| b.kernel_params.clone()))
}

fn push_path_change(reasons: &mut Vec<SwitchReason>, component: Component, old: Option<&Path>, new: Option<&Path>) {
    if old != new {
        let value = |p: Option<&Path>| p.map_or(ComponentValue::Absent, |p| ComponentValue::Path(p.to_path_buf()));
        reasons.push(SwitchReason::Changed { component, old: value(old), new: value(new) });
    }
}
