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

use crate::error::one_line;
use crate::{CheckError, Options, error_chain};

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

/// Opens the host's system from the local store when it is there, else
/// rebuilds it from the facts in a temporary directory.
///
/// # Errors
/// [`CheckError::Shadow`] when the temporary directory cannot be made,
/// [`CheckError::Open`] when the result is not a system.
fn open_from_facts(info: &SystemInfo) -> Result<Opened, CheckError> {
    let path = Path::new(&info.path);
    if path.is_dir() {
        if let Ok(system) = SystemToplevel::open(path) {
            return Ok(Opened { system, _shadow: None });
        }
    }
    let shadow = |step: String| move |source| CheckError::Shadow { path: info.path.clone(), step, source };
    let dir = tempfile::Builder::new()
        .prefix("fleetgate-shadow-")
        .tempdir()
        .map_err(shadow("creating a temporary directory".to_owned()))?;
    for (name, target) in &info.links {
        if !matches!(name.as_str(), "kernel" | "initrd" | "kernel-modules" | "firmware" | "systemd") {
            continue;
        }
        std::os::unix::fs::symlink(target, dir.path().join(name)).map_err(shadow(format!("linking {name}")))?;
    }
    for (name, text) in &info.files {
        if !matches!(
            name.as_str(),
            "kernel-params" | "init-interface-version" | "nixos-version" | "system" | "switch-inhibitors" | "boot.json"
        ) {
            continue;
        }
        std::fs::write(dir.path().join(name), text).map_err(shadow(format!("writing {name}")))?;
    }
    let system =
        SystemToplevel::open(dir.path()).map_err(|source| CheckError::Open { path: info.path.clone(), source })?;
    Ok(Opened { system, _shadow: Some(dir) })
}

fn is_component_change(reason: &SwitchReason) -> bool {
    matches!(reason, SwitchReason::Changed { .. })
}

/// The live-switch check.
#[must_use]
pub fn check_switch(new: &SystemToplevel, facts: &Facts, options: &Options) -> SwitchCheck {
    let mut out = SwitchCheck::default();
    let mut booted_unknown = false;
    let current = match &options.current {
        Some(path) => match SystemToplevel::open(path) {
            Ok(system) => Some(Opened { system, _shadow: None }),
            Err(source) => {
                let e = CheckError::Open { path: path.display().to_string(), source };
                out.findings.push(Finding::new(
                    "switch.current-unreadable",
                    Severity::Error,
                    format!("--current: {}", one_line(&error_chain(&e))),
                ));
                return out;
            }
        },
        None => match &facts.current_system {
            Some(info) => match open_from_facts(info) {
                Ok(o) => Some(o),
                Err(e) => {
                    // The host runs NixOS, but what it runs is unknown:
                    // nothing shows that a live switch would be accepted.
                    out.current_path = Some(PathBuf::from(&info.path));
                    out.booted_path = facts.booted_system.as_ref().map(|b| PathBuf::from(&b.path));
                    out.reboot_needed = true;
                    out.findings.push(
                        Finding::new(
                            "switch.current-unreadable",
                            Severity::Warning,
                            format!(
                                "the host's current system cannot be examined, so a live switch cannot be shown to be safe; assuming `boot` and a reboot: {}",
                                one_line(&error_chain(&e))
                            ),
                        )
                        .with_fix("deploy with `boot` and reboot, or pass --current with a copy of the host's system"),
                    );
                    return out;
                }
            },
            None => None,
        },
    };
    let booted = match &facts.booted_system {
        Some(info) => match open_from_facts(info) {
            Ok(o) => Some(o),
            Err(e) => {
                out.findings.push(
                    Finding::new(
                        "switch.booted-unreadable",
                        Severity::Warning,
                        format!(
                            "the host's booted system cannot be examined, so whether boot-time components change is unknown; assuming they do (`boot` and a reboot): {}",
                            one_line(&error_chain(&e))
                        ),
                    )
                    .with_fix("deploy with `boot` and reboot"),
                );
                booted_unknown = true;
                None
            }
        },
        None => None,
    };
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
    let mut reasons: Vec<SwitchReason> =
        against_current.reasons.iter().filter(|r| !is_component_change(r)).cloned().collect();
    // Boot-time components are compared with what the host booted; with
    // the current system only when the host reports no booted system at
    // all, never in place of one that could not be examined.
    let components = if booted_unknown { None } else { Some(against_booted.as_ref().unwrap_or(&against_current)) };
    if let Some(components) = components {
        reasons.extend(components.reasons.iter().filter(|r| is_component_change(r)).cloned());
    }
    for note in &against_current.notes {
        let fleetgate_system::DecisionNote::UnreadableInhibitors { path, reason } = note;
        out.findings.push(Finding::new(
            "switch.unreadable-inhibitors",
            Severity::Warning,
            format!(
                "{} is not a JSON object of strings ({reason}): NixOS then compares no inhibitors at all",
                path.display()
            ),
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
                format!("NixOS refuses a live switch ({}): this system needs `boot` and a reboot", refused.join("; ")),
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
    out.reboot_needed = booted_unknown || !(refused.is_empty() && activation.is_empty() && later.is_empty());
    if !out.reboot_needed {
        out.findings.push(Finding::new(
            "switch.live",
            Severity::Info,
            "nothing stands in the way of a live switch, and nothing needs a reboot",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn info(path: &str, files: &[(&str, &str)]) -> SystemInfo {
        SystemInfo {
            path: path.to_owned(),
            links: BTreeMap::new(),
            files: files.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    const GOOD: &[(&str, &str)] =
        &[("nixos-version", "25.05"), ("init-interface-version", "systemd 2"), ("kernel-params", "loglevel=4")];

    fn new_system() -> (tempfile::TempDir, SystemToplevel) {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in GOOD {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        let s = SystemToplevel::open(dir.path()).expect("opens");
        (dir, s)
    }

    fn ids(check: &SwitchCheck) -> Vec<(&str, Severity)> {
        check.findings.iter().map(|f| (f.id.as_str(), f.severity)).collect()
    }

    #[test]
    fn the_same_system_switches_live() {
        let (_d, new) = new_system();
        let facts = Facts {
            current_system: Some(info("/nix/store/aaaa-current", GOOD)),
            booted_system: Some(info("/nix/store/aaaa-current", GOOD)),
            ..Facts::default()
        };
        let check = check_switch(&new, &facts, &Options::default());
        assert_eq!(ids(&check), [("switch.live", Severity::Info)]);
        assert!(!check.reboot_needed);
    }

    #[test]
    fn a_booted_system_that_cannot_be_examined_warns_and_needs_a_reboot() {
        let (_d, new) = new_system();
        let facts = Facts {
            current_system: Some(info("/nix/store/aaaa-current", GOOD)),
            // No nixos-version, init-interface-version or boot.json: not a system.
            booted_system: Some(info("/nix/store/bbbb-booted", &[])),
            ..Facts::default()
        };
        let check = check_switch(&new, &facts, &Options::default());
        assert_eq!(ids(&check), [("switch.booted-unreadable", Severity::Warning)], "{:#?}", check.findings);
        assert!(check.findings[0].message.contains("/nix/store/bbbb-booted"), "{}", check.findings[0].message);
        assert!(check.reboot_needed, "decided conservatively");
    }

    #[test]
    fn a_current_system_that_cannot_be_examined_warns_and_needs_a_reboot() {
        let (_d, new) = new_system();
        let facts = Facts {
            current_system: Some(info("/nix/store/aaaa-current", &[])),
            booted_system: Some(info("/nix/store/aaaa-current", &[])),
            ..Facts::default()
        };
        let check = check_switch(&new, &facts, &Options::default());
        assert_eq!(ids(&check), [("switch.current-unreadable", Severity::Warning)], "{:#?}", check.findings);
        assert!(check.reboot_needed);
        assert_eq!(check.current_path.as_deref(), Some(Path::new("/nix/store/aaaa-current")));
        let check = check_switch(&new, &facts, &Options { current: Some("/nonexistent".into()), ..Options::default() });
        assert_eq!(ids(&check), [("switch.current-unreadable", Severity::Error)]);
    }
}
