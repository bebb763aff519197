//! Live switch or reboot: what NixOS itself would do, per
//! `fleetgate-system`'s [`compare_for_switch`].
//!
//! The current system is `--current` if given, else the host's
//! `/run/current-system`. When that store path is not in the local store
//! (the usual case for a remote host), it is rebuilt from the facts as a
//! *shadow toplevel*: a temporary directory with the host's component links
//! (as dangling symlinks to the host's store paths — store paths are
//! identities) and its small files (`switch-inhibitors`,
//! `init-interface-version`, `kernel-params`, `boot.json`…), byte for byte.
//! Inhibitors and the init interface are compared against the current
//! system; the boot-time components (kernel, initrd, modules, parameters,
//! firmware, systemd) against the booted one, as they are what is running.

use std::path::{Path, PathBuf};

use fleetgate_facts::{Facts, Finding, Severity, SystemInfo};
use fleetgate_system::{Effect, SwitchReason, SystemToplevel, compare_for_switch};

use crate::Options;

/// The result of [`check_switch`].
#[derive(Debug, Default)]
pub struct SwitchCheck {
    /// The current system's path (on the host).
    pub current_path: Option<PathBuf>,
    /// The booted system's path (on the host).
    pub booted_path: Option<PathBuf>,
    /// Whether the new system needs `boot` + reboot.
    pub reboot_needed: bool,
    /// The findings.
    pub findings: Vec<Finding>,
}

/// A system opened locally, or rebuilt from facts in a temporary directory
/// that lives as long as this value.
struct Opened {
    system: SystemToplevel,
    _shadow: Option<tempfile::TempDir>,
}

fn open_from_facts(info: &SystemInfo) -> Result<Opened, String> {
    let path = Path::new(&info.path);
    if path.is_dir() {
        if let Ok(system) = SystemToplevel::open(path) {
            return Ok(Opened { system, _shadow: None });
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("fleetgate-shadow-")
        .tempdir()
        .map_err(|e| format!("creating a temporary directory: {e}"))?;
    for (name, target) in &info.links {
        if !matches!(name.as_str(), "kernel" | "initrd" | "kernel-modules" | "firmware" | "systemd") {
            continue;
        }
        std::os::unix::fs::symlink(target, dir.path().join(name)).map_err(|e| format!("creating {name}: {e}"))?;
    }
    for (name, text) in &info.files {
        if !matches!(
            name.as_str(),
            "kernel-params" | "init-interface-version" | "nixos-version" | "system" | "switch-inhibitors" | "boot.json"
        ) {
            continue;
        }
        std::fs::write(dir.path().join(name), text).map_err(|e| format!("writing {name}: {e}"))?;
    }
    let system = SystemToplevel::open(dir.path()).map_err(|e| e.to_string())?;
    Ok(Opened {
        system,
        _shadow: Some(dir),
    })
}

fn is_component_change(reason: &SwitchReason) -> bool {
    matches!(reason, SwitchReason::Changed { .. })
}

/// The live-switch check.
#[must_use]
pub fn check_switch(new: &SystemToplevel, facts: &Facts, options: &Options) -> SwitchCheck {
    let mut out = SwitchCheck::default();
    let current = match &options.current {
        Some(path) => match SystemToplevel::open(path) {
            Ok(system) => Some(Opened { system, _shadow: None }),
            Err(e) => {
                out.findings.push(Finding::new(
                    "switch.current-unreadable",
                    Severity::Error,
                    format!("--current {} cannot be read: {e}", path.display()),
                ));
                return out;
            }
        },
        None => match &facts.current_system {
            Some(info) => match open_from_facts(info) {
                Ok(o) => Some(o),
                Err(e) => {
                    out.findings.push(Finding::new(
                        "switch.current-unreadable",
                        Severity::Warning,
                        format!("the host's current system {} cannot be examined: {e}", info.path),
                    ));
                    None
                }
            },
            None => None,
        },
    };
    let booted = facts.booted_system.as_ref().and_then(|info| open_from_facts(info).ok());
    out.current_path = match (&options.current, &facts.current_system) {
        (Some(p), _) => Some(current.as_ref().map_or(p.clone(), |c| c.system.path().to_path_buf())),
        (None, Some(info)) => Some(PathBuf::from(&info.path)),
        (None, None) => None,
    };
    out.booted_path = facts.booted_system.as_ref().map(|b| PathBuf::from(&b.path));

    let Some(current) = current else {
        out.reboot_needed = true;
        out.findings.push(Finding::new(
            "switch.no-current-system",
            Severity::Warning,
            "the host runs no NixOS system to switch from: the new system can only be installed with `boot` and a reboot",
        ));
        return out;
    };
    let against_current = compare_for_switch(&current.system, new, options.no_check);
    let against_booted = booted.as_ref().map(|b| compare_for_switch(&b.system, new, options.no_check));
    let mut reasons: Vec<SwitchReason> = against_current
        .reasons
        .iter()
        .filter(|r| !is_component_change(r))
        .cloned()
        .collect();
    let components = against_booted.as_ref().unwrap_or(&against_current);
    reasons.extend(components.reasons.iter().filter(|r| is_component_change(r)).cloned());
    for note in &against_current.notes {
        let fleetgate_system::DecisionNote::UnreadableInhibitors { path, reason } = note;
        out.findings.push(Finding::new(
            "switch.unreadable-inhibitors",
            Severity::Warning,
            format!("{} is not a JSON object of strings ({reason}): NixOS then compares no inhibitors at all", path.display()),
        ));
    }

    let lines = |effect: Effect| -> Vec<String> {
        reasons.iter().filter(|r| r.effect() == effect).map(ToString::to_string).collect()
    };
    let refused = lines(Effect::SwitchRefused);
    let activation = lines(Effect::ActivationRefused);
    let later = lines(Effect::RebootToTakeEffect);
    let skipped = lines(Effect::CheckSkipped);
    let reference = if against_booted.is_some() && out.booted_path != out.current_path {
        " (compared with the booted system)"
    } else {
        ""
    };

    if !refused.is_empty() {
        out.findings.push(
            Finding::new(
                "switch.refused",
                Severity::Warning,
                format!(
                    "NixOS refuses a live switch ({}): this system needs `boot` and a reboot",
                    refused.join("; ")
                ),
            )
            .with_evidence(refused.iter().cloned())
            .with_fix("deploy with `boot` and reboot (one host first, then the rest)"),
        );
    }
    if !activation.is_empty() {
        out.findings.push(
            Finding::new(
                "switch.activation-refused",
                Severity::Warning,
                format!(
                    "switch-to-configuration would install the boot loader but not activate ({}): a reboot is needed",
                    activation.join("; ")
                ),
            )
            .with_evidence(activation.iter().cloned()),
        );
    }
    if !later.is_empty() {
        out.findings.push(
            Finding::new(
                "switch.reboot-needed",
                Severity::Info,
                format!("boot-time components change{reference}: they take effect only after a reboot"),
            )
            .with_evidence(later.iter().cloned()),
        );
    }
    if !skipped.is_empty() {
        out.findings.push(
            Finding::new(
                "switch.checks-skipped",
                Severity::Warning,
                "NIXOS_NO_CHECK=1 skips NixOS's pre-switch checks; NixOS warns the switch may fail or leave the system unstable",
            )
            .with_evidence(skipped.iter().cloned()),
        );
    }
    out.reboot_needed = !(refused.is_empty() && activation.is_empty() && later.is_empty());
    if !out.reboot_needed {
        out.findings.push(Finding::new(
            "switch.live",
            Severity::Info,
            "nothing stands in the way of a live switch, and nothing needs a reboot",
        ));
    }
    out
}
