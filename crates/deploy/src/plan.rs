//! What to do on a host: `switch` live, `boot` with a verified reboot, or
//! nothing because the plan is `blocked` — decided by `fleetgate check`
//! before anything is pushed. The [`Planner`] trait keeps the deployer
//! independent of how the decision is made (tests plug in their own).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use fleetgate_check::{Decision, FlakeHost, Options};
use fleetgate_facts::{Facts, Finding};
use fleetgate_system::SystemToplevel;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the deployer will do on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The host already runs and booted the new system.
    UpToDate,
    /// Live switch with magic rollback.
    Switch,
    /// Install for boot, boot it once, verify, then make it the default.
    Boot,
    /// Not deployed (unless forced).
    Blocked,
}

impl Action {
    /// `up-to-date`, `switch`, `boot`, `blocked`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Action::UpToDate => "up-to-date",
            Action::Switch => "switch",
            Action::Boot => "boot",
            Action::Blocked => "blocked",
        }
    }
}

/// A host's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The decision.
    pub action: Action,
    /// Was it blocked and is it a reboot that would be needed were it not?
    /// (`--force` on a blocked plan deploys with a verified reboot when
    /// this is set, else with a switch.)
    pub reboot_needed: bool,
    /// What the decision rests on.
    pub findings: Vec<Finding>,
    /// One sentence: what to do next.
    pub next_step: String,
}

/// What a planner gets.
pub struct PlanInput<'a> {
    /// The flake.
    pub flake: &'a str,
    /// The host's name.
    pub host: &'a str,
    /// The new system, in the local store.
    pub system: &'a Path,
    /// The host's facts.
    pub facts: &'a Facts,
    /// `--reboot`: a system that was only switched to live is not up to
    /// date, it must boot once.
    pub reboot: bool,
}

/// Decides a host's [`Plan`].
pub trait Planner: Send + Sync {
    /// Called once per run, before any [`Planner::plan`], with the hosts
    /// about to be planned: a planner may evaluate what it needs for all of
    /// them at once. The default does nothing.
    fn prepare(&self, _flake: &str, _hosts: &[String]) {}
    /// The plan for one host.
    fn plan(&self, input: &PlanInput<'_>) -> Plan;
}

/// The real planner: `fleetgate check` (initrd driver coverage, root
/// device, switch inhibitors and reboot triggers, hazard lints).
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckPlanner {
    /// Skip the hazard lints that evaluate the flake again.
    pub no_lints: bool,
}

impl Planner for CheckPlanner {
    fn plan(&self, input: &PlanInput<'_>) -> Plan {
        self.plan_with(input, None)
    }
}

/// [`CheckPlanner`] for a fleet: [`Planner::prepare`] evaluates the hazard
/// lints' inputs of every host in one `nix eval` (issue 15: the flake was
/// evaluated again for every host, ~1 s each); a host whose inputs that did
/// not give is evaluated on its own, as [`CheckPlanner`] does.
#[derive(Debug, Default)]
pub struct FleetPlanner {
    /// The checks.
    pub check: CheckPlanner,
    lint_inputs: Mutex<BTreeMap<String, Value>>,
}

impl Planner for FleetPlanner {
    fn prepare(&self, flake: &str, hosts: &[String]) {
        if self.check.no_lints || hosts.is_empty() {
            return;
        }
        // On failure each host is evaluated on its own and reports why.
        let inputs = fleetgate_check::hazards::evaluate_hosts(flake, hosts).unwrap_or_default();
        *self.lint_inputs.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = inputs;
    }

    fn plan(&self, input: &PlanInput<'_>) -> Plan {
        let inputs = self.lint_inputs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(input.host);
        self.check.plan_with(input, inputs)
    }
}

impl CheckPlanner {
    /// The plan, with the hazard lints' inputs when already evaluated.
    fn plan_with(&self, input: &PlanInput<'_>, lint_inputs: Option<Value>) -> Plan {
        if let Some(p) = up_to_date(input) {
            return p;
        }
        let new = match SystemToplevel::open(input.system) {
            Ok(new) => new,
            Err(e) => {
                return Plan {
                    action: Action::Blocked,
                    reboot_needed: false,
                    findings: vec![Finding::new(
                        "deploy.unreadable-system",
                        fleetgate_facts::Severity::Error,
                        format!("the new system {} cannot be read: {e}", input.system.display()),
                    )],
                    next_step: "Rebuild the system and deploy again.".to_owned(),
                };
            }
        };
        let options = Options {
            flake: (!self.no_lints).then(|| FlakeHost { flake: input.flake.to_owned(), host: input.host.to_owned() }),
            no_closure_diff: true,
            lint_inputs,
            ..Options::default()
        };
        let report = fleetgate_check::check(&new, input.facts, &options);
        let reboot_needed = report.decision == Decision::Boot || report.findings.iter().any(is_reboot_finding);
        Plan {
            action: match report.decision {
                Decision::Switch => Action::Switch,
                Decision::Boot => Action::Boot,
                Decision::Blocked => Action::Blocked,
            },
            reboot_needed,
            findings: report.findings,
            next_step: report.next_step,
        }
    }
}

/// check's findings that mean a live switch is refused or not enough.
fn is_reboot_finding(f: &Finding) -> bool {
    matches!(
        f.id.as_str(),
        "switch.refused"
            | "switch.activation-refused"
            | "switch.reboot-needed"
            | "switch.no-current-system"
            | "switch.current-unreadable"
            | "switch.booted-unreadable"
    )
}

/// The plan when the host already runs `system` and it is the profile (so
/// the boot default): up to date, whether it booted it or switched to it
/// live — unless `--reboot` asks for a verified boot of a system that was
/// never booted.
#[must_use]
pub fn up_to_date(input: &PlanInput<'_>) -> Option<Plan> {
    let path = input.system.to_str()?;
    let current = input.facts.current_system.as_ref().map(|s| s.path.as_str());
    let booted = input.facts.booted_system.as_ref().map(|s| s.path.as_str());
    let profile = input.facts.profile.as_ref().map(|p| p.path.as_str());
    let in_place = current == Some(path) && profile == Some(path);
    (in_place && (!input.reboot || booted == Some(path))).then(|| Plan {
        action: Action::UpToDate,
        reboot_needed: false,
        findings: Vec::new(),
        next_step: if booted == Some(path) {
            "Nothing to do: the host runs and booted this system.".to_owned()
        } else {
            "Nothing to do: the host runs this system (switched live) and boots it by default.".to_owned()
        },
    })
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    /// Issue 15: `prepare` evaluates every host's lint inputs at once, and
    /// each host's plan takes its own (so it evaluates nothing again);
    /// with `no_lints` nothing is evaluated.
    #[test]
    fn prepare_evaluates_the_fleet_once_and_each_plan_takes_its_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("flake.nix"),
            "{ outputs = { self }: { nixosConfigurations = { a = { config.hardware.facter.reportPath = null; }; b = { config = { }; }; }; }; }",
        )
        .expect("write");
        let flake = format!("path:{}", dir.path().display());
        let hosts = vec!["a".to_owned(), "b".to_owned()];
        let planner = FleetPlanner::default();
        planner.prepare(&flake, &hosts);
        let take = |h: &str| planner.lint_inputs.lock().expect("lock").remove(h);
        let a = take("a").expect("a evaluated");
        assert_eq!(a["facter"]["declared"], Value::Bool(true));
        assert_eq!(take("b").expect("b evaluated")["facter"]["declared"], Value::Bool(false));
        assert!(take("a").is_none(), "taken once");

        let off = FleetPlanner { check: CheckPlanner { no_lints: true }, ..FleetPlanner::default() };
        off.prepare(&flake, &hosts);
        assert!(off.lint_inputs.lock().expect("lock").is_empty());
    }
}
