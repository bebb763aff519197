//! This host, as the agent needs it beyond the engine's [`Machine`]: its
//! live facts (gathered locally, the same facts `deploy` gathers over SSH),
//! the same pre-flight (`fleetgate check` through deploy's planner, without
//! the lints that would evaluate a flake), what the boot loader boots by
//! default, its profile generations, and the reboot the agent does not live
//! through. [`LocalHost`] is the real one: the engine's scripts run with
//! `/bin/sh` on this machine ([`LocalConnector`]).

use std::path::Path;
use std::time::Duration;

use fleetgate_apply::Machine;
use fleetgate_apply::machine::HostState;
use fleetgate_apply::remote::{BootDefault, CallTimeouts, LocalConnector, ScriptMachine};
use fleetgate_apply::scripts::{Layout, PROFILE};
use fleetgate_deploy::plan::{CheckPlanner, Plan, PlanInput, Planner};
use fleetgate_facts::Facts;

/// Where the host stands, for reports and status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Current, booted, profile, boot id.
    pub state: HostState,
    /// The boot loader's default entry.
    pub default: Option<BootDefault>,
    /// The profile's generations (number, system), oldest first.
    pub generations: Vec<(u64, String)>,
}

impl View {
    fn generation_of(&self, system: &str) -> Option<u64> {
        self.generations.iter().filter(|(_, s)| s == system).map(|(n, _)| *n).max()
    }

    /// The default entry's generation (by its system, else the profile's).
    #[must_use]
    pub fn default_generation(&self) -> Option<u64> {
        match self.default.as_ref().and_then(|d| d.system.as_deref()) {
            Some(system) => self.generation_of(system),
            None => None,
        }
    }

    /// Generations made the default and not booted since: those newer than
    /// the booted one, up to the default's. `None` when that cannot be told
    /// (the booted system is no generation any more, the default unknown).
    #[must_use]
    pub fn boot_debt(&self) -> Option<Vec<(u64, String)>> {
        let booted = self.generation_of(&self.state.booted)?;
        let default = self.default_generation()?;
        Some(self.generations.iter().filter(|(n, _)| *n > booted && *n <= default).cloned().collect())
    }
}

/// The host the agent runs on.
pub trait Host {
    /// The engine's machine.
    fn machine(&mut self) -> &mut dyn Machine;
    /// Its live facts (and the machine told about its boot loader).
    ///
    /// # Errors
    /// Why they could not be gathered.
    fn facts(&mut self) -> Result<Facts, String>;
    /// The pre-flight of `system` on this host.
    fn plan(&mut self, system: &str, facts: &Facts) -> Plan;
    /// Where it stands now.
    ///
    /// # Errors
    /// Why it could not be read.
    fn view(&mut self) -> Result<View, String>;
    /// Keeps `system` from garbage collection as the last good generation.
    fn record_last_good(&mut self, system: &str);
    /// Asks for the reboot (the intent is on the host) and returns: the
    /// caller waits for it to take the agent down on its clock, which a stop
    /// request (the service manager's SIGTERM on the way down) ends.
    fn reboot(&mut self);
    /// Which of `targets` (`host:port`) accept a TCP connection now.
    fn reachable(&mut self, targets: &[String]) -> Vec<String>;
    /// The `host:port` the host must still reach after the change (the
    /// engine's TCP health checks).
    fn must_reach(&mut self, targets: Vec<String>);
}

/// Whether `address` (`host:port`) accepts a TCP connection within `timeout`.
#[must_use]
pub fn accepts(address: &str, timeout: Duration) -> bool {
    use std::net::ToSocketAddrs as _;
    address
        .to_socket_addrs()
        .map(|addrs| addrs.into_iter().any(|a| std::net::TcpStream::connect_timeout(&a, timeout).is_ok()))
        .unwrap_or(false)
}

/// This machine.
pub struct LocalHost {
    machine: ScriptMachine<LocalConnector>,
    facts_timeout: Duration,
}

impl LocalHost {
    /// This machine, with the engine's call limits and health checks.
    #[must_use]
    pub fn new(timeouts: CallTimeouts, health: fleetgate_apply::health::HealthChecks) -> LocalHost {
        let mut machine = ScriptMachine::new(LocalConnector, Layout::default(), timeouts.clone());
        machine.health = health;
        LocalHost { machine, facts_timeout: timeouts.command }
    }

    /// The machine, for what is not the engine's.
    pub fn script_machine(&mut self) -> &mut ScriptMachine<LocalConnector> {
        &mut self.machine
    }
}

fn generations(layout: &Layout) -> Vec<(u64, String)> {
    let profile = layout.at(PROFILE);
    let dir = Path::new(&profile).parent().map(Path::to_path_buf).unwrap_or_default();
    let mut out: Vec<(u64, String)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let n = fleetgate_apply::remote::generation_number(&name)?;
                    let target = std::fs::canonicalize(e.path()).ok()?;
                    Some((n, target.to_string_lossy().into_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

impl Host for LocalHost {
    fn machine(&mut self) -> &mut dyn Machine {
        &mut self.machine
    }

    fn facts(&mut self) -> Result<Facts, String> {
        let facts =
            fleetgate_facts::collect(&fleetgate_transport::Local, self.facts_timeout).map_err(|e| e.to_string())?;
        fleetgate_deploy::remote::configure_loader(&mut self.machine, &facts);
        Ok(facts)
    }

    fn plan(&mut self, system: &str, facts: &Facts) -> Plan {
        CheckPlanner { no_lints: true }.plan(&PlanInput {
            flake: "",
            host: facts.hostname.as_deref().unwrap_or("localhost"),
            system: Path::new(system),
            facts,
            reboot: false,
        })
    }

    fn view(&mut self) -> Result<View, String> {
        let state = self.machine.state().map_err(|e| e.to_string())?;
        let default = self.machine.boot_default().ok().flatten();
        Ok(View { state, default, generations: generations(&self.machine.layout) })
    }

    fn record_last_good(&mut self, system: &str) {
        let script = self.machine.layout.record_last_good(system);
        let _ = self.machine.sh_ok("writing the last-good GC root", &script, self.facts_timeout);
    }

    fn reachable(&mut self, targets: &[String]) -> Vec<String> {
        targets.iter().filter(|t| accepts(t, Duration::from_secs(5))).cloned().collect()
    }

    fn must_reach(&mut self, targets: Vec<String>) {
        self.machine.health.tcp = targets;
    }

    fn reboot(&mut self) {
        self.machine.reboot();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(booted: &str, default: Option<&str>, gens: &[(u64, &str)]) -> View {
        View {
            state: HostState { booted: booted.into(), ..HostState::default() },
            default: default.map(|s| BootDefault { entry: "e".into(), system: Some(s.into()) }),
            generations: gens.iter().map(|(n, s)| (*n, (*s).to_owned())).collect(),
        }
    }

    #[test]
    fn boot_debt_is_what_became_default_since_the_last_boot() {
        let gens = [(1, "/a"), (2, "/b"), (3, "/c")];
        assert_eq!(view("/a", Some("/c"), &gens).boot_debt(), Some(vec![(2, "/b".into()), (3, "/c".into())]));
        assert_eq!(view("/c", Some("/c"), &gens).boot_debt(), Some(vec![]));
        assert_eq!(view("/gone", Some("/c"), &gens).boot_debt(), None, "the booted system has no generation");
        assert_eq!(view("/a", None, &gens).boot_debt(), None, "the default cannot be told");
    }

    #[test]
    fn generations_are_read_from_the_profile_links() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (old, new) = fleetgate_apply::testing::host(tmp.path(), 0);
        std::os::unix::fs::symlink(&new, tmp.path().join("nix/var/nix/profiles/system-2-link")).expect("ln");
        let layout = Layout { root: tmp.path().display().to_string() };
        let canon = |p: &str| std::fs::canonicalize(p).expect("exists").display().to_string();
        assert_eq!(generations(&layout), vec![(1, canon(&old)), (2, canon(&new))]);
    }
}
