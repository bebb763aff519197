//! `fleetgate-check`: decide, before anything is pushed, whether a NixOS
//! system will boot on a host and whether it can switch to it live.
//!
//! [`check`] takes the new system ([`SystemToplevel`]), what is known about
//! the host ([`Facts`]) and [`Options`], runs every check and returns a
//! [`Report`]: a [`Decision`] — `switch`, `boot` or `blocked` — and the
//! [`Finding`]s it rests on. The checks (details in `docs/check.md`):
//!
//! * **boot files** ([`boot_files`]): the kernel is a kernel image of the
//!   system's architecture, `init` is there and executable, the modules are
//!   for the kernel's release, and `boot.json` agrees with the toplevel's
//!   files;
//! * **initrd driver coverage** ([`initrd`]): every device on the host's
//!   root chain that has a driver bound, and the root file system type, are
//!   resolved through the *new* kernel's own module metadata
//!   (`modules.alias`/`dep`/`softdep`/`builtin`, via `fleetgate-kmod`); each
//!   module needed must be built in or inside the new initrd (read with
//!   `fleetgate-initrd`), for the same kernel version;
//! * **root device** ([`root`]): the new system's root (`etc/fstab`,
//!   `root=`) names a device that exists on the host, and its label or UUID
//!   is unique;
//! * **live switch or reboot** ([`switch`]): `fleetgate-system`'s
//!   `compare_for_switch` against the host's current system (inhibitors,
//!   init interface) and booted system (kernel, initrd, modules, params,
//!   firmware, systemd);
//! * **closure diff** ([`closure`]): packages added, removed, upgraded, and
//!   the size delta, when both systems are in the local store;
//! * **hazard lints** ([`hazards`]): from a flake's evaluated configuration
//!   (missing nixos-facter report, sops secrets shared over virtiofs, stage 1
//!   that never gives up).
//!
//! Any finding of severity `error` blocks; otherwise a needed reboot gives
//! `boot` and the rest `switch`.

pub mod boot_files;
pub mod closure;
pub mod deadline;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod hazards;
pub mod human;
pub mod initrd;
pub mod memo;
pub mod prefetch;
pub mod root;
pub mod switch;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{CheckError, error_chain, error_messages};
use fleetgate_facts::Facts;
pub use fleetgate_facts::{Finding, Severity};
use fleetgate_system::SystemToplevel;
pub use prefetch::Prefetch;
use serde::{Deserialize, Serialize};

/// Version of the [`Report`] JSON document.
pub const FORMAT: u32 = 1;

/// How long a whole check may take unless [`Options::deadline`] says
/// otherwise. The hazard lints' `nix eval` alone may take 300 s; everything
/// else is bounded far below.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);

/// What to do with the new system on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// It will boot, and a live `switch` activates all of it.
    Switch,
    /// It will boot, but needs `boot` and a reboot (a switch is refused, or
    /// parts only take effect at boot).
    Boot,
    /// It will not boot, or that cannot be shown: do not deploy.
    Blocked,
}

impl Decision {
    /// `switch`, `boot`, `blocked`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Switch => "switch",
            Decision::Boot => "boot",
            Decision::Blocked => "blocked",
        }
    }
}

/// A flake and host whose evaluated configuration the hazard lints read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeHost {
    /// The flake reference (`.`, `path:/srv/fleet`, `github:org/fleet`).
    pub flake: String,
    /// The host: `nixosConfigurations.<host>`.
    pub host: String,
}

impl FlakeHost {
    /// Parses `<flake>#<host>` (as `nixos-rebuild --flake` takes it).
    /// A local directory (`.`, `./fleet`, `/srv/fleet`, or any relative path
    /// that is a directory) becomes `path:<abs>`
    /// so that Nix 2.8 does not require it to be a git repository.
    #[must_use]
    pub fn parse(text: &str) -> Option<FlakeHost> {
        let (flake, host) = text.rsplit_once('#')?;
        if host.is_empty() || flake.is_empty() {
            return None;
        }
        let host = host.strip_prefix("nixosConfigurations.").unwrap_or(host);
        let local =
            flake.starts_with('.') || flake.starts_with('/') || (!flake.contains(':') && Path::new(flake).is_dir());
        let flake = if local {
            let abs = std::path::absolute(flake).unwrap_or_else(|_| PathBuf::from(flake));
            format!("path:{}", abs.display())
        } else {
            flake.to_owned()
        };
        Some(FlakeHost { flake, host: host.to_owned() })
    }
}

/// How to check.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The system to compare against (`--current`); default: the target's
    /// `/run/current-system` from the facts.
    pub current: Option<PathBuf>,
    /// Assume `NIXOS_NO_CHECK=1` on the host.
    pub no_check: bool,
    /// Evaluate this flake's host for the hazard lints.
    pub flake: Option<FlakeHost>,
    /// What the lints read of `flake`'s host, already evaluated
    /// ([`hazards::evaluate_hosts`]); `None`: evaluate it now.
    pub lint_inputs: Option<serde_json::Value>,
    /// Skip the closure diff (it runs `nix-store`).
    pub no_closure_diff: bool,
    /// How long the check may take ([`DEFAULT_DEADLINE`] when `None`).
    /// Past it, the report is `blocked` with `check.incomplete`.
    pub deadline: Option<Duration>,
}

/// The outcome of a check: the stable JSON document of `fleetgate check --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// [`FORMAT`].
    pub format: u32,
    /// The target the facts came from.
    pub target: String,
    /// The new system.
    pub system: String,
    /// The system compared against for a live switch, if any.
    pub current: Option<String>,
    /// The system the host booted, if known.
    pub booted: Option<String>,
    /// The verdict.
    pub decision: Decision,
    /// One sentence: what to do next.
    pub next_step: String,
    /// What changes, when both closures are in the local store.
    pub closure: Option<closure::ClosureDiff>,
    /// Everything found, errors first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The report as pretty JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
    }

    /// Findings with this id.
    pub fn findings_with_id<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings.iter().filter(move |f| f.id == id)
    }
}

/// Runs every check of `new` against the host described by `facts`, within
/// [`Options::deadline`]: when the deadline passes (or the check stops
/// without a verdict), the report is `blocked` with the error finding
/// `check.incomplete` — never a verdict it did not reach.
#[must_use]
pub fn check(new: &SystemToplevel, facts: &Facts, options: &Options) -> Report {
    check_prefetched(new, facts, options, Prefetch::none())
}

/// [`check`], with the reads of the new system that [`Prefetch::start`]
/// began before the facts were in ([`prefetch`]): the same report, sooner.
#[must_use]
pub fn check_prefetched(new: &SystemToplevel, facts: &Facts, options: &Options, mut prefetch: Prefetch) -> Report {
    let deadline = options.deadline.unwrap_or(DEFAULT_DEADLINE);
    let (new_, facts_, options_) = (new.clone(), facts.clone(), options.clone());
    match deadline::within(deadline, move || check_now(&new_, &facts_, &options_, &mut prefetch)) {
        Ok(report) => report,
        Err(unfinished) => incomplete(new, facts, unfinished),
    }
}

/// The report of a check that reached no verdict.
fn incomplete(new: &SystemToplevel, facts: &Facts, unfinished: deadline::Unfinished) -> Report {
    let message = match unfinished {
        deadline::Unfinished::TimedOut(after) => format!(
            "the check did not finish within its deadline of {} s: whether this system boots on the host is not known",
            after.as_secs()
        ),
        deadline::Unfinished::Stopped => {
            "the check stopped without a verdict: whether this system boots on the host is not known".to_owned()
        }
    };
    let findings = vec![
        Finding::new("check.incomplete", Severity::Error, message)
            .with_fix("check again, with a longer --deadline if the host or Nix is slow"),
    ];
    Report {
        format: FORMAT,
        target: facts.target.clone(),
        system: new.path().display().to_string(),
        current: facts.current_system.as_ref().map(|s| s.path.clone()),
        booted: facts.booted_system.as_ref().map(|s| s.path.clone()),
        decision: Decision::Blocked,
        next_step: next_step(Decision::Blocked, &findings, false),
        closure: None,
        findings,
    }
}

/// [`check`] on the calling thread, without a deadline.
fn check_now(new: &SystemToplevel, facts: &Facts, options: &Options, prefetch: &mut Prefetch) -> Report {
    let mut findings: Vec<Finding> =
        facts.findings.iter().filter(|f| f.severity >= Severity::Warning).cloned().collect();

    findings.extend(boot_files::check_boot_files(new));
    let coverage = initrd::check_coverage_prefetched(new, facts, prefetch);
    findings.extend(coverage.findings.iter().cloned());
    findings.extend(root::check_root(new, facts));
    let switch = switch::check_switch(new, facts, options);
    findings.extend(switch.findings.iter().cloned());

    let closure = match (options.no_closure_diff, switch.current_path.as_deref()) {
        (false, Some(current)) => match closure::diff(current, new.path()) {
            Ok(diff) => Some(diff),
            Err(e) => {
                findings.push(closure::unavailable(&e));
                None
            }
        },
        _ => None,
    };
    if let Some(diff) = &closure {
        findings.push(diff.finding());
    }
    match (&options.flake, &options.lint_inputs) {
        (Some(flake), Some(inputs)) => findings.extend(hazards::lint_with(flake, inputs, new, &coverage)),
        (Some(flake), None) => findings.extend(hazards::lint(flake, new, &coverage)),
        (None, _) => {}
    }

    // Errors first, then warnings, then information; stable within.
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let blocked = findings.iter().any(|f| f.severity == Severity::Error);
    let decision = if blocked {
        Decision::Blocked
    } else if switch.reboot_needed {
        Decision::Boot
    } else {
        Decision::Switch
    };
    let next_step = next_step(decision, &findings, switch.reboot_needed);
    Report {
        format: FORMAT,
        target: facts.target.clone(),
        system: new.path().display().to_string(),
        current: switch.current_path.map(|p| p.display().to_string()),
        booted: switch.booted_path.map(|p| p.display().to_string()),
        decision,
        next_step,
        closure,
        findings,
    }
}

fn next_step(decision: Decision, findings: &[Finding], reboot_needed: bool) -> String {
    match decision {
        Decision::Blocked => {
            let fixes = distinct_fixes(findings);
            let reboot = if reboot_needed {
                " It needs a reboot to take effect, and that reboot would not come back."
            } else {
                ""
            };
            match fixes.as_slice() {
                [] => format!("Do not deploy this system: fix the errors above and check again.{reboot}"),
                [fix] => format!("Do not deploy this system.{reboot} Fix: {fix} Then build and check again."),
                _ => {
                    let fixes: Vec<String> =
                        fixes.iter().enumerate().map(|(i, f)| format!("({}) {f}", i + 1)).collect();
                    format!("Do not deploy this system.{reboot} Fix: {} Then build and check again.", fixes.join(" "))
                }
            }
        }
        Decision::Boot => {
            "Deploy with `boot` and reboot (then confirm the host came back on the new generation).".to_owned()
        }
        Decision::Switch => "Safe to deploy with a live `switch`.".to_owned(),
    }
}

/// The fixes of the error findings, each said once: a fix that another
/// one already says in full (the facter lint's fix offers the initrd
/// fix as its alternative) is left out, and so is a repeated one.
fn distinct_fixes(findings: &[Finding]) -> Vec<&str> {
    let fixes: Vec<&str> =
        findings.iter().filter(|f| f.severity == Severity::Error).filter_map(|f| f.fix.as_deref()).collect();
    let mut out: Vec<&str> = Vec::new();
    for (i, fix) in fixes.iter().enumerate() {
        let said_elsewhere =
            fixes.iter().enumerate().any(|(j, other)| j != i && other.contains(fix) && (other != fix || j < i));
        if !said_elsewhere {
            out.push(fix);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closure_diff_that_cannot_be_made_is_an_info_finding_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in [("nixos-version", "25.05"), ("init-interface-version", "systemd 2")] {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        let new = SystemToplevel::open(dir.path()).expect("opens");
        let host = fleetgate_facts::SystemInfo {
            path: format!("/nix/store/{}-nixos-system-gone-25.05", "0".repeat(32)),
            links: std::collections::BTreeMap::new(),
            files: [("nixos-version", "25.05"), ("init-interface-version", "systemd 2")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        let facts = Facts { current_system: Some(host.clone()), booted_system: Some(host), ..Facts::default() };
        let report = check(&new, &facts, &Options::default());
        let f = report.findings_with_id("closure.unavailable").next().unwrap_or_else(|| panic!("{report:#?}"));
        assert_eq!(f.severity, Severity::Info);
        assert!(f.message.starts_with("no closure diff: ") && !f.message.contains('\n'), "{}", f.message);
        assert!(report.closure.is_none());
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("valid JSON");
        assert_eq!(json["findings"].as_array().map(Vec::len), Some(report.findings.len()));
    }

    fn error_with_fix(id: &str, fix: &str) -> Finding {
        Finding::new(id, Severity::Error, "…").with_fix(fix)
    }

    #[test]
    fn a_blocked_plan_says_each_fix_once() {
        let initrd = r#"boot.initrd.availableKernelModules = [ "virtio_blk" "virtio_pci" ];"#;
        let facter = r#"generate the report (`nixos-facter -o facter.json`) and set hardware.facter.reportPath = ./facter.json, or write boot.initrd.availableKernelModules = [ "virtio_blk" "virtio_pci" ];"#;
        // The incident of product.md §1: the facter lint's fix contains the
        // initrd's; a warning's fix is not part of what must be fixed.
        let findings = [
            error_with_fix("initrd.missing-modules", initrd),
            error_with_fix("hazard.facter-report-missing", facter),
            Finding::new("switch.refused", Severity::Warning, "…").with_fix("deploy with `boot` and reboot"),
        ];
        insta::assert_snapshot!("incident_next_step", next_step(Decision::Blocked, &findings, true));
        // The same fix twice: once, and not numbered.
        let twice =
            [error_with_fix("a", "sops.keepGenerations = 0;"), error_with_fix("b", "sops.keepGenerations = 0;")];
        assert_eq!(
            next_step(Decision::Blocked, &twice, false),
            "Do not deploy this system. Fix: sops.keepGenerations = 0; Then build and check again."
        );
        // Different fixes: each, numbered, in order.
        let two = [error_with_fix("a", "fix one;"), error_with_fix("b", "fix two;")];
        assert_eq!(
            next_step(Decision::Blocked, &two, false),
            "Do not deploy this system. Fix: (1) fix one; (2) fix two; Then build and check again."
        );
        assert_eq!(
            next_step(Decision::Blocked, &[Finding::new("x", Severity::Error, "…")], false),
            "Do not deploy this system: fix the errors above and check again."
        );
    }

    #[test]
    fn a_check_that_reaches_no_verdict_is_blocked_and_says_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("nixos-version"), "25.05").expect("write");
        let new = SystemToplevel::open(dir.path()).expect("opens");
        let facts = Facts { target: "ssh://web1".into(), ..Facts::default() };
        let report = incomplete(&new, &facts, deadline::Unfinished::TimedOut(Duration::from_secs(600)));
        assert_eq!(report.decision, Decision::Blocked);
        assert_eq!(report.target, "ssh://web1");
        assert_eq!(report.findings.len(), 1);
        let f = &report.findings[0];
        assert_eq!((f.id.as_str(), f.severity), ("check.incomplete", Severity::Error));
        assert!(f.message.starts_with("the check did not finish within its deadline of 600 s"), "{}", f.message);
        assert!(report.next_step.contains("--deadline"), "{}", report.next_step);
        let report = incomplete(&new, &facts, deadline::Unfinished::Stopped);
        assert!(report.findings[0].message.starts_with("the check stopped without a verdict"));
    }

    #[test]
    fn parses_flake_hosts() {
        let f = FlakeHost::parse("github:org/fleet#web1").expect("valid");
        assert_eq!((f.flake.as_str(), f.host.as_str()), ("github:org/fleet", "web1"));
        let f = FlakeHost::parse("/srv/fleet#nixosConfigurations.db1").expect("valid");
        assert_eq!((f.flake.as_str(), f.host.as_str()), ("path:/srv/fleet", "db1"));
        assert!(FlakeHost::parse(".#").is_none());
        assert!(FlakeHost::parse("web1").is_none());
    }
}
