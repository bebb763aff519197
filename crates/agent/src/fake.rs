//! Scripted stand-ins for the agent's unit tests: a host over the engine's
//! [`FakeMachine`] (facts derived from it, plans scripted per system), a
//! manifest source, a store, a clock and a report sink. Every exit of the
//! poll's state machine is tested against these (`tests/cycle.rs`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use fleetgate_apply::Machine;
use fleetgate_apply::fake::FakeMachine;
use fleetgate_apply::machine::HostState;
use fleetgate_apply::remote::BootDefault;
use fleetgate_deploy::plan::{Action, Plan};
use fleetgate_facts::{Facts, Finding, Generation, Profile, SystemInfo};

use crate::agent::Clock;
use crate::host::{Host, View};
use crate::queue::{Delivery, Sink};
use crate::report::Report;
use crate::source::{FetchError, Fetched, Source};
use crate::store::{Closure, Store, StoreError};

/// A host over a [`FakeMachine`].
#[derive(Debug, Clone)]
pub struct FakeHost {
    /// The machine.
    pub m: FakeMachine,
    /// The plan of a system (default: switch live).
    pub plans: BTreeMap<String, Plan>,
    /// Systems recorded as last good.
    pub last_good: Vec<String>,
    /// Reboots asked for.
    pub reboots: u32,
    /// Targets that do not answer.
    pub unreachable: BTreeSet<String>,
    /// What the last change had to keep reaching.
    pub must_reach: Vec<String>,
    /// Times the facts were gathered.
    pub facts_gathered: u32,
}

/// A plan of `action` resting on `findings`.
#[must_use]
pub fn plan(action: Action, findings: Vec<Finding>) -> Plan {
    Plan { action, reboot_needed: action == Action::Boot, findings, next_step: format!("{}.", action.as_str()) }
}

impl FakeHost {
    /// A host running `system`.
    #[must_use]
    pub fn running(system: &str) -> FakeHost {
        FakeHost {
            m: FakeMachine::running(system),
            plans: BTreeMap::new(),
            last_good: Vec::new(),
            reboots: 0,
            unreachable: BTreeSet::new(),
            must_reach: Vec::new(),
            facts_gathered: 0,
        }
    }
}

impl Host for FakeHost {
    fn machine(&mut self) -> &mut dyn Machine {
        &mut self.m
    }

    fn facts(&mut self) -> Result<Facts, String> {
        self.facts_gathered += 1;
        let s = self.m.state().map_err(|e| e.to_string())?;
        let info = |p: &str| Some(SystemInfo { path: p.to_owned(), ..SystemInfo::default() });
        Ok(Facts {
            current_system: info(&s.current),
            booted_system: info(&s.booted),
            profile: Some(Profile { link: format!("system-{}-link", self.m.profile_generation), path: s.profile }),
            generations: self.m.generations.iter().map(|(n, p)| Generation { number: *n, path: p.clone() }).collect(),
            boot_id: Some(s.boot_id),
            ..Facts::default()
        })
    }

    fn plan(&mut self, system: &str, _: &Facts) -> Plan {
        self.plans.get(system).cloned().unwrap_or_else(|| plan(Action::Switch, Vec::new()))
    }

    fn view(&mut self) -> Result<View, String> {
        let state: HostState = self.m.state().map_err(|e| e.to_string())?;
        Ok(View {
            state,
            default: Some(BootDefault { entry: "default".into(), system: Some(self.m.default_entry.clone()) }),
            generations: self.m.generations.iter().map(|(n, p)| (*n, p.clone())).collect(),
        })
    }

    fn record_last_good(&mut self, system: &str) {
        self.last_good.push(system.to_owned());
    }

    fn reachable(&mut self, targets: &[String]) -> Vec<String> {
        targets.iter().filter(|t| !self.unreachable.contains(*t)).cloned().collect()
    }

    fn must_reach(&mut self, targets: Vec<String>) {
        self.must_reach = targets;
    }

    fn reboot(&mut self) {
        self.reboots += 1;
        self.m.reboot();
        self.m.advance(self.m.boot_time + Duration::from_secs(1));
    }
}

/// A source answering from a script (then "not modified").
#[derive(Debug, Clone, Default)]
pub struct FakeSource {
    /// The answers, in order.
    pub answers: VecDeque<Result<Fetched, FetchError>>,
    /// The validators each fetch was given.
    pub asked_with: Vec<(Option<String>, Option<String>)>,
}

impl FakeSource {
    /// Serves `bytes` next (with an ETag derived from its length).
    pub fn serve(&mut self, bytes: Vec<u8>) {
        let etag = format!("\"{}\"", bytes.len());
        self.answers.push_back(Ok(Fetched::Document { bytes, etag: Some(etag), last_modified: None }));
    }
}

impl Source for FakeSource {
    fn describe(&self) -> String {
        "fake".into()
    }
    fn fetch(&mut self, etag: Option<&str>, last_modified: Option<&str>) -> Result<Fetched, FetchError> {
        self.asked_with.push((etag.map(str::to_owned), last_modified.map(str::to_owned)));
        self.answers.pop_front().unwrap_or(Ok(Fetched::NotModified))
    }
}

/// A store with scripted answers.
#[derive(Debug, Clone, Default)]
pub struct FakeStore {
    /// `verify` of a system (default: a complete signed closure).
    pub verify: BTreeMap<String, StoreError>,
    /// `realise` fails with this, once per entry.
    pub realise_fails: VecDeque<StoreError>,
    /// Systems in the local store.
    pub local: BTreeSet<String>,
    /// Systems realised, in order.
    pub realised: Vec<String>,
    /// Systems verified, in order.
    pub verified: Vec<String>,
}

impl Store for FakeStore {
    fn verify(&mut self, system: &str, _: &str) -> Result<Closure, StoreError> {
        self.verified.push(system.to_owned());
        match self.verify.get(system) {
            Some(e) => Err(e.clone()),
            None => Ok(Closure { cache: "http://cache".into(), paths: 3, nar_bytes: 300 }),
        }
    }
    fn is_local(&mut self, system: &str) -> bool {
        self.local.contains(system)
    }
    fn realise(&mut self, system: &str) -> Result<(), StoreError> {
        if let Some(e) = self.realise_fails.pop_front() {
            return Err(e);
        }
        self.realised.push(system.to_owned());
        self.local.insert(system.to_owned());
        Ok(())
    }
}

/// A clock that moves only when told (and when slept on).
#[derive(Debug, Clone, Default)]
pub struct FakeClock {
    /// Seconds since the epoch.
    pub unix: u64,
    /// Minutes after local midnight.
    pub minute: u16,
    /// Sleeps asked for.
    pub slept: Vec<Duration>,
    /// The agent was asked to stop: every sleep ends at once (false).
    pub stopped: bool,
}

impl Clock for FakeClock {
    fn unix(&self) -> u64 {
        self.unix
    }
    fn minute_of_day(&self) -> u16 {
        self.minute
    }
    fn sleep(&mut self, d: Duration) -> bool {
        self.slept.push(d);
        if self.stopped {
            return false;
        }
        self.unix += d.as_secs();
        true
    }
}

/// A server that takes reports, or is down.
#[derive(Debug, Clone, Default)]
pub struct FakeSink {
    /// Whether it is down.
    pub down: bool,
    /// Reports taken, in order.
    pub got: Vec<Report>,
    /// Reports the server's validation ([`fleetgate_status::AgentReport::parse`]) refused, and why.
    pub refused: Vec<String>,
}

impl Sink for FakeSink {
    /// Takes a report as the server does: its JSON parsed and validated
    /// against the status model's schema, else refused.
    fn send(&mut self, r: &Report) -> Delivery {
        if self.down {
            return Delivery::Later("connection refused".into());
        }
        let parsed = serde_json::to_vec(r)
            .map_err(|e| e.to_string())
            .and_then(|body| fleetgate_status::AgentReport::parse(&body).map_err(|e| e.to_string()));
        match parsed {
            Ok(fleetgate_status::AgentReport::V2(_)) => {
                self.got.push(r.clone());
                Delivery::Delivered
            }
            Ok(fleetgate_status::AgentReport::V1(_)) => {
                self.refused.push("read as version 1".into());
                Delivery::Rejected("read as version 1".into())
            }
            Err(e) => {
                self.refused.push(e.clone());
                Delivery::Rejected(e)
            }
        }
    }
}

/// An unsigned manifest for `web1` of `system` at `commit`, made at
/// `created_at` (what an accepted [`crate::accept::Seen`] holds).
#[must_use]
pub fn manifest(system: &str, commit: &str, created_at: u64) -> fleetgate_channel::Manifest {
    fleetgate_channel::Manifest {
        host: "web1".into(),
        branch: "nixos-tested-web1".into(),
        commit: commit.into(),
        system: system.into(),
        nar_hash: "sha256-x".into(),
        nar_size: 1,
        closure_size: 1,
        closure_paths: 1,
        cache: "http://c".into(),
        created_at,
        build: None,
    }
}
