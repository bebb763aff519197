//! Hazard lints from a flake's evaluated configuration (`--flake F#host`):
//! failure modes that no file of the built system shows by itself.

use std::collections::BTreeMap;
use std::time::Duration;

use fleetgate_facts::{Finding, Severity};
use fleetgate_nix::Nix;
use fleetgate_system::SystemToplevel;
use serde::Deserialize;
use serde_json::Value;

use crate::initrd::Coverage;
use crate::{CheckError, FlakeHost};

/// Evaluates every attribute the lints read in one `nix eval` of
/// `nixosConfigurations.<host>` (its `config`, and its `options` when it
/// has them), each defaulting when the module that defines it is not
/// imported. Paths are turned into strings with `toString` (never copied
/// into the store) and tested with `pathExists`.
///
/// nixos-facter: `declared` says whether any module declares
/// `hardware.facter` at all (`config.hardware ? facter`, which forces no
/// value); `explicit` whether a module set `reportPath` rather than leaving
/// the option's default (its `highestPrio` is below the default's 1500), or
/// null when the configuration has no `options` to ask.
const APPLY: &str = r#"s:
  let
    c = s.config or { };
    o = s.options or null;
    try = v: let r = builtins.tryEval v; in if r.success then r.value else null;
    get = path: try (builtins.foldl'
      (acc: k: if builtins.isAttrs acc then acc.${k} or null else null) c path);
    orDefault = v: d: if v == null then d else v;
    report = get [ "hardware" "facter" "reportPath" ];
    declared = try (c ? hardware && builtins.isAttrs c.hardware && c.hardware ? facter);
    prio = if o == null then null else try (o.hardware.facter.reportPath.highestPrio or null);
  in {
    facter = {
      declared = declared == true;
      explicit = if prio == null then null else prio < 1500;
      report = if report == null then null else {
        path = toString report;
        # A path value is checked by Nix (allowed in pure evaluation); a
        # string is checked by fleetgate on this machine.
        exists = if builtins.isPath report then builtins.pathExists report else null;
      };
    };
    availableKernelModules = orDefault (get [ "boot" "initrd" "availableKernelModules" ]) [];
    kernelModules = orDefault (get [ "boot" "initrd" "kernelModules" ]) [];
    sopsKeepGenerations = get [ "sops" "keepGenerations" ];
    microvmShares = orDefault (get [ "microvm" "shares" ]) [];
  }"#;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Evaluated {
    facter: Facter,
    available_kernel_modules: Vec<String>,
    kernel_modules: Vec<String>,
    sops_keep_generations: Option<i64>,
    microvm_shares: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct Facter {
    /// Some module declares `hardware.facter`.
    declared: bool,
    /// A module set `reportPath` (not the option's default); `None`: unknown.
    explicit: Option<bool>,
    /// `reportPath`, when not null.
    report: Option<FacterReport>,
}

impl Facter {
    /// Whether the configuration uses nixos-facter: it is imported, and
    /// `reportPath` was set (to something, even null) unless that cannot be
    /// told.
    fn in_use(&self) -> bool {
        self.declared && self.explicit != Some(false)
    }
}

#[derive(Debug, Deserialize)]
struct FacterReport {
    path: String,
    exists: Option<bool>,
}

impl FacterReport {
    /// Whether the report exists: as Nix said for a path value; for a
    /// string, on this machine (relative to a `path:` flake's directory).
    fn exists(&self, flake: &FlakeHost) -> bool {
        if let Some(e) = self.exists {
            return e;
        }
        let p = std::path::Path::new(&self.path);
        if p.is_absolute() {
            return p.exists();
        }
        flake.flake.strip_prefix("path:").is_some_and(|dir| std::path::Path::new(dir).join(p).exists())
    }
}

/// Evaluates what the lints read from `flake`.
///
/// # Errors
/// [`CheckError::NixUnavailable`], [`CheckError::Eval`] or
/// [`CheckError::EvalShape`].
fn evaluate(installable: &str) -> Result<Evaluated, CheckError> {
    let nix = Nix::detect().map_err(|source| CheckError::NixUnavailable { source })?;
    let value = nix
        .with_timeout(Duration::from_secs(300))
        .eval_json(installable, Some(APPLY))
        .map_err(|source| CheckError::Eval { installable: installable.to_owned(), source })?;
    serde_json::from_value::<Evaluated>(value)
        .map_err(|source| CheckError::EvalShape { installable: installable.to_owned(), source })
}

/// Evaluates what the lints read for every host of `hosts` in ONE `nix eval`
/// of `flake#nixosConfigurations` (issue 15: a fleet deploy evaluates the
/// flake once, not once per host). Each value is for [`lint_with`].
///
/// # Errors
/// [`CheckError::NixUnavailable`] or [`CheckError::Eval`]: the caller falls
/// back to [`lint`], host by host.
pub fn evaluate_hosts(flake: &str, hosts: &[String]) -> Result<BTreeMap<String, Value>, CheckError> {
    let installable = format!("{flake}#nixosConfigurations");
    let names = hosts.iter().map(|h| serde_json::Value::String(h.clone()).to_string()).collect::<Vec<_>>().join(" ");
    let apply = format!(
        "cs: let lintInputs = {APPLY}; in builtins.listToAttrs (map (n: {{ name = n; value = lintInputs cs.${{n}}; }}) [ {names} ])"
    );
    let nix = Nix::detect().map_err(|source| CheckError::NixUnavailable { source })?;
    let value = nix
        .with_timeout(Duration::from_secs(300))
        .eval_json(&installable, Some(&apply))
        .map_err(|source| CheckError::Eval { installable: installable.clone(), source })?;
    serde_json::from_value(value).map_err(|source| CheckError::EvalShape { installable, source })
}

/// Runs the hazard lints on inputs [`evaluate_hosts`] evaluated.
#[must_use]
pub fn lint_with(flake: &FlakeHost, inputs: &Value, new: &SystemToplevel, coverage: &Coverage) -> Vec<Finding> {
    let installable = format!("{}#nixosConfigurations.\"{}\"", flake.flake, flake.host);
    match serde_json::from_value::<Evaluated>(inputs.clone()) {
        Ok(ev) => lint_evaluated(&ev, flake, new, coverage),
        Err(source) => eval_failed(&installable, &CheckError::EvalShape { installable: installable.clone(), source }),
    }
}

/// Runs the hazard lints.
#[must_use]
pub fn lint(flake: &FlakeHost, new: &SystemToplevel, coverage: &Coverage) -> Vec<Finding> {
    let installable = format!("{}#nixosConfigurations.\"{}\"", flake.flake, flake.host);
    match evaluate(&installable) {
        Ok(ev) => lint_evaluated(&ev, flake, new, coverage),
        Err(e) => eval_failed(&installable, &e),
    }
}

fn eval_failed(installable: &str, e: &CheckError) -> Vec<Finding> {
    // Nix's own message is at the end; the command line (with the whole
    // --apply expression) is not worth repeating.
    let text = crate::error_chain(e);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.iter().position(|l| l.trim_start().starts_with("error:")).unwrap_or(lines.len().saturating_sub(3));
    let tail = lines[from..].iter().map(|l| l.trim()).collect::<Vec<_>>().join(" / ");
    vec![Finding::new(
        "hazard.eval-failed",
        Severity::Warning,
        format!("cannot evaluate {installable} for the hazard lints: {tail}"),
    )]
}

fn lint_evaluated(ev: &Evaluated, flake: &FlakeHost, new: &SystemToplevel, coverage: &Coverage) -> Vec<Finding> {
    let mut out = Vec::new();

    // nixos-facter: a missing report silently adds no drivers. A
    // configuration that does not use nixos-facter is not concerned.
    let report_state = match &ev.facter.report {
        _ if !ev.facter.in_use() => None,
        None => Some("hardware.facter.reportPath is null".to_owned()),
        Some(r) if !r.exists(flake) => {
            Some(format!("hardware.facter.reportPath points at {}, which does not exist", r.path))
        }
        Some(_) => None,
    };
    if let Some(state) = report_state {
        let configured: Vec<&String> = ev.available_kernel_modules.iter().chain(&ev.kernel_modules).collect();
        let uncovered: Vec<String> = coverage
            .root_modules()
            .into_iter()
            .filter(|m| !configured.iter().any(|c| c.replace('-', "_") == *m))
            .collect();
        if !uncovered.is_empty() {
            let quoted: Vec<String> = uncovered.iter().map(|m| format!("\"{m}\"")).collect();
            out.push(
                Finding::new(
                    "hazard.facter-report-missing",
                    Severity::Error,
                    format!(
                        "{state}, and boot.initrd.availableKernelModules does not list the root disk's drivers ({}): nixos-facter silently adds nothing, so every generation built from this configuration loses them",
                        uncovered.join(", ")
                    ),
                )
                .with_evidence([
                    format!("boot.initrd.availableKernelModules = {:?}", ev.available_kernel_modules),
                    format!("boot.initrd.kernelModules = {:?}", ev.kernel_modules),
                ])
                .with_fix(format!(
                    "generate the report (`nixos-facter -o facter.json`) and set hardware.facter.reportPath = ./facter.json, or write boot.initrd.availableKernelModules = [ {} ];",
                    quoted.join(" ")
                )),
            );
        }
    }

    // sops-nix deletes old secret generations that virtiofsd still serves.
    if let Some(keep) = ev.sops_keep_generations.filter(|k| *k != 0) {
        let shares: Vec<String> = ev
            .microvm_shares
            .iter()
            .filter(|s| s.get("proto").and_then(Value::as_str) == Some("virtiofs"))
            .filter_map(|s| s.get("source").and_then(Value::as_str))
            .filter(|src| src.starts_with("/run/secrets"))
            .map(str::to_owned)
            .collect();
        if !shares.is_empty() {
            out.push(
                Finding::new(
                    "hazard.sops-virtiofs",
                    Severity::Warning,
                    format!(
                        "sops.keepGenerations = {keep} while a microvm shares {} over virtiofs: each rebuild deletes the secrets generation virtiofsd still serves, and the VM sees an empty mount",
                        shares.join(", ")
                    ),
                )
                .with_evidence(shares.iter().map(|s| format!("microvm.shares: source = {s}, proto = virtiofs")))
                .with_fix("sops.keepGenerations = 0;"),
            );
        }
    }

    // Stage 1 that waits forever cannot be recovered by a watchdog reboot.
    let params = new.kernel_params();
    let panic_on_fail = params.iter().any(|p| p == "boot.panic_on_fail");
    let panic_reboots = params
        .iter()
        .filter_map(|p| p.strip_prefix("panic="))
        .next_back()
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|n| n != 0);
    if !(panic_on_fail && panic_reboots) {
        out.push(
            Finding::new(
                "hazard.stage1-hangs",
                Severity::Info,
                "if stage 1 cannot find the root device, this system waits forever at the console; a headless host then needs hands on a (VNC) console",
            )
            .with_evidence([format!("kernel params: {}", params.join(" "))])
            .with_fix("boot.kernelParams = [ \"boot.panic_on_fail\" \"panic=30\" ]; (a failed stage 1 then reboots, and a verified reboot falls back by itself)"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system(params: &str) -> (tempfile::TempDir, SystemToplevel) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("nixos-version"), "25.05").expect("write");
        std::fs::write(dir.path().join("kernel-params"), params).expect("write");
        let s = SystemToplevel::open(dir.path()).expect("opens");
        (dir, s)
    }

    fn evaluated(json: serde_json::Value) -> Evaluated {
        serde_json::from_value(json).expect("shape")
    }

    fn flake() -> FlakeHost {
        FlakeHost { flake: "path:/nonexistent".into(), host: "h".into() }
    }

    #[test]
    fn sops_secrets_over_virtiofs_warn_unless_all_generations_are_kept() {
        let (_d, sys) = system("boot.panic_on_fail panic=30");
        let shares = serde_json::json!([
            { "source": "/run/secrets", "mountPoint": "/secrets", "tag": "s", "proto": "virtiofs" },
            { "source": "/nix/store", "mountPoint": "/nix/.ro-store", "tag": "ro", "proto": "virtiofs" },
        ]);
        let ev = |keep: i64| {
            evaluated(serde_json::json!({
                "facter": { "declared": true, "explicit": true, "report": { "path": "/etc/facter.json", "exists": true } },
                "availableKernelModules": [], "kernelModules": [],
                "sopsKeepGenerations": keep, "microvmShares": shares,
            }))
        };
        let found = lint_evaluated(&ev(1), &flake(), &sys, &Coverage::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].id, "hazard.sops-virtiofs");
        assert_eq!(found[0].fix.as_deref(), Some("sops.keepGenerations = 0;"));
        assert!(lint_evaluated(&ev(0), &flake(), &sys, &Coverage::default()).is_empty());
    }

    #[test]
    fn a_facter_report_that_exists_or_hand_written_modules_are_fine() {
        let (_d, sys) = system("loglevel=4");
        let coverage = Coverage {
            needs: vec![crate::initrd::Need {
                what: "virtio1".into(),
                module: Some("virtio_blk".into()),
                builtin: false,
                missing: vec![],
                missing_soft: vec![],
                device: true,
            }],
            findings: vec![],
        };
        let ev = |report: serde_json::Value, modules: &[&str]| {
            evaluated(serde_json::json!({
                "facter": { "declared": true, "explicit": null, "report": report },
                "availableKernelModules": modules, "kernelModules": [],
                "sopsKeepGenerations": null, "microvmShares": [],
            }))
        };
        let ids =
            |e: &Evaluated| lint_evaluated(e, &flake(), &sys, &coverage).into_iter().map(|f| f.id).collect::<Vec<_>>();
        assert_eq!(ids(&ev(serde_json::Value::Null, &[])), ["hazard.facter-report-missing", "hazard.stage1-hangs"]);
        assert_eq!(
            ids(&ev(serde_json::json!({"path": "/nonexistent/facter.json", "exists": null}), &[])),
            ["hazard.facter-report-missing", "hazard.stage1-hangs"]
        );
        assert_eq!(ids(&ev(serde_json::Value::Null, &["virtio-blk"])), ["hazard.stage1-hangs"]);
        assert_eq!(ids(&ev(serde_json::json!({"path": "/x", "exists": true}), &[])), ["hazard.stage1-hangs"]);
        // nixos-facter not imported, or declared by a module everyone
        // imports but never set: not concerned.
        let facter = |declared: bool, explicit: serde_json::Value| {
            evaluated(serde_json::json!({
                "facter": { "declared": declared, "explicit": explicit, "report": null },
                "availableKernelModules": [], "kernelModules": [], "sopsKeepGenerations": null, "microvmShares": [],
            }))
        };
        assert_eq!(ids(&facter(false, serde_json::Value::Null)), ["hazard.stage1-hangs"]);
        assert_eq!(ids(&facter(true, serde_json::json!(false))), ["hazard.stage1-hangs"]);
        assert_eq!(
            ids(&facter(true, serde_json::json!(true))),
            ["hazard.facter-report-missing", "hazard.stage1-hangs"]
        );
    }
}
