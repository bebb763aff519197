//! What to do on a host: `switch` live, `boot` with a verified reboot, or
//! nothing because the plan is `blocked` — decided by `fleetgate check`
//! before anything is pushed. The [`Planner`] trait keeps the deployer
//! independent of how the decision is made (tests plug in their own).

use std::path::Path;

use fleetgate_check::{Decision, FlakeHost, Options};
use fleetgate_facts::{Facts, Finding};
use fleetgate_system::SystemToplevel;
use serde::{Deserialize, Serialize};

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
