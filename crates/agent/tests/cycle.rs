//! Every exit of the agent's poll (`cycle.rs`, `recover.rs`) against the
//! scripted host (the engine's `FakeMachine`), source, store, clock and
//! server. Each test asserts what the agent says AND where the host stands
//! (current, booted, profile, default entry).

use std::time::Duration;

use fleetgate_agent::agent::Agent;
use fleetgate_agent::config::{AgentConfig, ConfigFile, Flags};
use fleetgate_agent::cycle::{End, PollOptions, poll};
use fleetgate_agent::fake::{FakeClock, FakeHost, FakeSink, FakeSource, FakeStore, plan};
use fleetgate_agent::queue::Queue;
use fleetgate_agent::report::{Outcome as Said, RebootReason};
use fleetgate_agent::source::FetchError;
use fleetgate_agent::state::{AgentState, StateDir};
use fleetgate_agent::store::StoreError;
use fleetgate_apply::Machine as _;
use fleetgate_apply::fake::sys;
use fleetgate_channel::manifest::{Manifest, SignedManifest};
use fleetgate_deploy::plan::Action;
use fleetgate_facts::{Finding, Severity};
use fleetgate_nix::SecretKey;

const T0: u64 = 1_800_000_000;

struct World {
    _tmp: tempfile::TempDir,
    cfg: AgentConfig,
    dir: StateDir,
    source: FakeSource,
    store: FakeStore,
    host: FakeHost,
    clock: FakeClock,
    sink: FakeSink,
    log: Vec<String>,
    key: SecretKey,
    dry_run: bool,
    last_worked: bool,
}

impl World {
    fn new(extra: &str) -> World {
        let tmp = tempfile::tempdir().expect("tmp");
        let key = SecretKey::from_seed("cache.test-1", &[7; 32]).expect("key");
        let text = format!(
            "host = \"web1\"\nserver = \"http://fleet.test\"\ntrusted_keys = [\"{}\"]\ncaches = [\"http://cache.test\"]\nstate_dir = \"{}\"\n{extra}",
            key.public(),
            tmp.path().display()
        );
        let cfg = AgentConfig::resolve(ConfigFile::parse(&text).expect("parses"), Flags::default()).expect("valid");
        let dir = StateDir::open(cfg.agent_dir()).expect("dir");
        World {
            cfg,
            dir,
            source: FakeSource::default(),
            store: FakeStore::default(),
            host: FakeHost::running(&sys("old")),
            clock: FakeClock { unix: T0, minute: 3 * 60, slept: vec![], stopped: false },
            sink: FakeSink::default(),
            log: vec![],
            key,
            dry_run: false,
            last_worked: false,
            _tmp: tmp,
        }
    }

    fn manifest_by(&self, key: &SecretKey, host: &str, name: &str, at: u64) -> Vec<u8> {
        let m = Manifest {
            host: host.into(),
            branch: format!("nixos-tested-{host}"),
            commit: format!("{:0>40}", at),
            system: sys(name),
            nar_hash: "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=".into(),
            nar_size: 1,
            closure_size: 1,
            closure_paths: 1,
            cache: "http://cache.test".into(),
            created_at: at,
            build: None,
        };
        SignedManifest::sign(&m, key).expect("signs").to_document()
    }

    /// Serves a manifest of `name` made at `at`.
    fn promote(&mut self, name: &str, at: u64) {
        let doc = self.manifest_by(&self.key.clone(), "web1", name, at);
        self.source.serve(doc);
    }

    fn state(&self) -> AgentState {
        self.dir.load().expect("state")
    }

    /// One poll, as a fresh agent process would run it (state from disk).
    fn poll(&mut self) -> End {
        let mut lines = Vec::new();
        let end = {
            let mut log = |l: &str| lines.push(l.to_owned());
            let mut a = Agent {
                cfg: &self.cfg,
                dir: &self.dir,
                state: self.dir.load().expect("state"),
                source: &mut self.source,
                store: &mut self.store,
                host: &mut self.host,
                queue: Queue::new(self.dir.path()),
                sink: Some(&mut self.sink),
                clock: &mut self.clock,
                log: &mut log,
                worked: false,
            };
            let end = poll(&mut a, PollOptions { dry_run: self.dry_run });
            self.last_worked = a.worked;
            end
        };
        self.log.extend(lines);
        self.clock.unix += 60;
        assert!(self.sink.refused.is_empty(), "the server's validation refused a report: {:?}", self.sink.refused);
        end
    }

    /// Runs, has its profile and boot default on `name`, and booted `booted`.
    fn at(&self, name: &str, booted: &str) {
        let (s, b) = (sys(name), sys(booted));
        assert_eq!(self.host.m.on(), (s.clone(), b, s.clone(), s), "{:#?}", self.log);
    }

    /// Runs, booted, and boots `name`.
    fn on(&self, name: &str) {
        self.at(name, name);
    }

    fn last(&self) -> (Said, String) {
        let r = self.state().last_result.expect("a result");
        (r.outcome, r.message.unwrap_or_default())
    }
}

#[test]
fn a_promoted_build_is_switched_to_reported_and_then_up_to_date() {
    let mut w = World::new("");
    w.promote("new", T0 - 10);
    assert_eq!(w.poll(), End::Applied, "{:#?}", w.log);
    assert!(w.last_worked, "the daemon starts afresh after this poll");
    w.at("new", "old");
    assert_eq!(w.store.realised, [sys("new")]);
    assert_eq!(w.last().0, Said::Applied);
    let report = w.sink.got.last().expect("reported");
    assert_eq!(report.current.as_deref(), Some(sys("new").as_str()));
    assert_eq!(report.desired.as_ref().map(|d| d.system.clone()), Some(sys("new")));
    // The next poll: not modified, up to date, nothing done, nothing new said.
    let reports = w.sink.got.len();
    assert_eq!(w.poll(), End::Idle);
    assert!(!w.last_worked, "not after an idle one");
    assert!(w.source.asked_with.last().is_some_and(|v| v.0.is_some()), "the second fetch is conditional");
    assert_eq!(w.sink.got.len(), reports, "nothing changed, nothing reported");
    assert_eq!(w.store.realised.len(), 1);
}

#[test]
fn a_build_failing_its_health_check_rolls_back_and_is_never_retried() {
    let mut w = World::new("");
    w.host.m.unhealthy.insert(sys("new"));
    w.promote("new", T0 - 10);
    assert_eq!(w.poll(), End::Failed, "{:#?}", w.log);
    w.on("old");
    assert_eq!(w.last().0, Said::RolledBack);
    assert!(w.state().bad(&sys("new")).is_some());
    let ops = w.host.m.log.len();
    assert_eq!(w.poll(), End::Idle);
    assert_eq!(w.poll(), End::Idle);
    assert!(!w.host.m.log[ops..].contains(&fleetgate_apply::fake::Op::SetProfile), "the bad path is not tried again");
    assert_eq!(w.last().0, Said::RolledBack, "how it failed stays the last result");
    w.on("old");
    // Upstream fixed: a newer commit heals the host by itself.
    w.promote("fixed", T0 + 100);
    assert_eq!(w.poll(), End::Applied, "{:#?}", w.log);
    w.at("fixed", "old");
}

#[test]
fn activation_failing_rolls_back_too() {
    let mut w = World::new("");
    w.host.m.activation_exit.insert(sys("new"), 4);
    w.promote("new", T0 - 10);
    assert_eq!(w.poll(), End::Failed);
    w.on("old");
    assert!(w.last().1.contains("exit 4"), "{}", w.last().1);
}

fn reboot_findings() -> Vec<Finding> {
    vec![Finding::new("switch.refused", Severity::Info, "dbus-implementation : dbus -> broker")]
}

#[test]
fn a_build_needing_a_reboot_is_booted_once_inside_the_window_and_blessed_at_the_next_start() {
    let mut w = World::new(
        "[reboot]\nallow = true\nwindow = { lower = \"02:00\", upper = \"05:00\" }\nrandomized_delay = \"10m\"\n",
    );
    w.host.plans.insert(sys("new"), plan(Action::Boot, reboot_findings()));
    w.promote("new", T0 - 10);
    assert_eq!(w.poll(), End::Rebooting, "{:#?}", w.log);
    assert_eq!(w.host.reboots, 1);
    assert!(w.clock.slept.iter().all(|d| *d <= Duration::from_secs(600)), "a random delay, within the window");
    assert_eq!(w.last().0, Said::InProgress);
    assert!(w.state().attempt.is_some(), "the attempt survives the reboot");
    // The host booted the new system once; the default is still the old one.
    assert_eq!((w.host.m.booted.clone(), w.host.m.default_entry.clone()), (sys("new"), sys("old")));
    // The agent starts again after the boot: it verifies and blesses.
    assert_eq!(w.poll(), End::Applied, "{:#?}", w.log);
    w.on("new");
    assert_eq!(w.host.last_good, [sys("new")]);
    assert!(w.state().attempt.is_none());
    assert_eq!(w.last().0, Said::Applied);
}

/// Under systemd the agent's own reboot stops its unit (SIGTERM) while the
/// agent waits for the host to go down: that wait must end on the stop, or
/// every verified reboot waits out the unit's stop timeout (90 s) and the
/// agent is SIGKILLed (seen on the lab VM: `seed_incident_vm_agent_*`).
#[test]
fn the_wait_for_its_own_reboot_ends_when_the_agent_is_asked_to_stop() {
    let mut w = World::new("[reboot]\nallow = true\n");
    w.host.plans.insert(sys("new"), plan(Action::Boot, reboot_findings()));
    w.promote("new", T0 - 10);
    w.clock.stopped = true;
    assert_eq!(w.poll(), End::Rebooting, "{:#?}", w.log);
    assert_eq!(w.host.reboots, 1);
    assert_eq!(
        w.clock.slept.last(),
        Some(&fleetgate_agent::cycle::REBOOT_TAKES_US_DOWN),
        "after asking for the reboot it waits on the clock a stop wakes, not in a bare sleep"
    );
    assert!(w.state().attempt.is_some(), "the attempt survives the reboot");
}

#[test]
fn a_reboot_outside_the_window_is_pending_and_reported_not_done() {
    let mut w = World::new("[reboot]\nallow = true\nwindow = { lower = \"01:00\", upper = \"02:00\" }\n");
    w.host.plans.insert(sys("new"), plan(Action::Boot, reboot_findings()));
    w.promote("new", T0 - 10);
    assert_eq!(w.poll(), End::Pending, "{:#?}", w.log);
    w.on("old");
    assert_eq!(w.host.reboots, 0);
    let p = w.state().pending_reboot.expect("pending");
    assert!(p.why.contains("01:00-02:00"), "{p:?}");
    let report = w.sink.got.last().expect("reported");
    let pending = report.pending_reboot.as_ref().expect("pending in the report");
    assert_eq!(pending.reasons, [RebootReason::Inhibitor]);
    // Polls outside the window change nothing, say nothing new, and do no
    // work: no facts, no check (the decision holds under the same boot).
    let (n, gathered) = (w.sink.got.len(), w.host.facts_gathered);
    assert_eq!(w.poll(), End::Pending);
    assert_eq!(w.poll(), End::Pending);
    assert_eq!((w.sink.got.len(), w.host.facts_gathered), (n, gathered));
    assert!(!w.last_worked, "an idle poll");
    // Inside the window it goes.
    w.clock.minute = 90;
    assert_eq!(w.poll(), End::Rebooting);
    assert_eq!(w.poll(), End::Applied);
    w.on("new");
}

#[test]
fn reboots_not_allowed_are_pending() {
    let mut w = World::new("");
    w.host.plans.insert(sys("new"), plan(Action::Boot, reboot_findings()));
    w.promote("new", T0 - 10);
    assert_eq!(w.poll(), End::Pending);
    w.on("old");
    assert!(w.state().pending_reboot.is_some_and(|p| p.why.contains("reboot.allow")));
}

#[test]
fn a_new_generation_that_hangs_comes_back_on_the_fallback_and_is_bad() {
    let mut w = World::new("[reboot]\nallow = true\n");
    w.host.plans.insert(sys("new"), plan(Action::Boot, vec![]));
    w.host.m.hangs.insert(sys("new"));
    w.promote("new", T0 - 10);
    assert_eq!(w.poll(), End::Rebooting);
    assert!(!w.host.m.up, "hung in stage 1");
    // A provider's watchdog power-cycles it: the one-shot is spent, the default boots.
    w.host.m.power_cycle().expect("power cycle");
    w.host.m.advance(Duration::from_secs(10));
    assert_eq!(w.poll(), End::Failed, "{:#?}", w.log);
    w.on("old");
    assert_eq!(w.last().0, Said::RolledBack);
    assert!(w.state().bad(&sys("new")).is_some());
}

#[test]
fn a_blocked_build_is_refused_locally_and_an_upstream_fix_heals_the_host() {
    let mut w = World::new("");
    let missing = Finding::new("initrd.missing-modules", Severity::Error, "the initrd lacks virtio_blk");
    w.host.plans.insert(sys("broken"), plan(Action::Blocked, vec![missing]));
    w.promote("broken", T0 - 10);
    assert_eq!(w.poll(), End::Failed);
    w.on("old");
    assert!(!w.host.m.log.contains(&fleetgate_apply::fake::Op::SetProfile), "nothing applied");
    let r = w.state().last_result.expect("result");
    assert_eq!(r.outcome, Said::Blocked);
    assert_eq!(r.findings[0].id, "initrd.missing-modules");
    assert!(w.state().bad(&sys("broken")).is_some());
    w.promote("fixed", T0 + 50);
    assert_eq!(w.poll(), End::Applied);
    w.at("fixed", "old");
}

#[test]
fn refused_manifests_change_nothing() {
    let mut w = World::new("");
    w.promote("new", T0 - 100);
    assert_eq!(w.poll(), End::Applied);
    let stranger = SecretKey::from_seed("cache.test-1", &[8; 32]).expect("key");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (w.manifest_by(&stranger, "web1", "evil", T0), "manifest.bad-signature"),
        (w.manifest_by(&w.key.clone(), "web2", "other", T0), "manifest.other-host"),
        (w.manifest_by(&w.key.clone(), "web1", "older", T0 - 500), "manifest.older"),
        (
            String::from_utf8(w.manifest_by(&w.key.clone(), "web1", "newer", T0))
                .expect("utf8")
                .replace("newer", "evilx")
                .into_bytes(),
            "manifest.bad-signature",
        ),
    ];
    for (doc, id) in cases {
        w.source.serve(doc);
        assert_eq!(w.poll(), End::Failed, "{id}");
        let r = w.state().last_result.expect("result");
        assert_eq!((r.outcome, r.findings[0].id.as_str()), (Said::Failed, id), "{r:?}");
        assert_eq!(
            w.sink.got.last().and_then(|r| r.result.as_ref()).map(|r| r.findings[0].id.clone()).as_deref(),
            Some(id)
        );
        w.at("new", "old");
    }
    assert_eq!(w.state().desired.map(|d| d.manifest.system), Some(sys("new")), "the desired system did not move");
}

#[test]
fn an_unsigned_or_incomplete_closure_is_refused_before_anything_is_fetched() {
    for id in ["closure.unsigned", "closure.missing"] {
        let mut w = World::new("");
        w.store.verify.insert(sys("new"), StoreError::Refused { id, message: format!("{id} in the cache") });
        w.promote("new", T0 - 10);
        assert_eq!(w.poll(), End::Failed);
        w.on("old");
        assert!(w.store.realised.is_empty(), "nothing fetched");
        assert_eq!(w.state().last_result.expect("result").findings[0].id, id);
    }
}

#[test]
fn an_unreachable_source_or_cache_backs_off_and_changes_nothing() {
    let mut w = World::new("");
    w.source.answers.push_back(Err(FetchError::Unreachable("connection refused".into())));
    assert_eq!(w.poll(), End::Unavailable);
    assert_eq!(w.state().fetch.failures, 1);
    w.promote("new", T0 - 10);
    w.store.realise_fails.push_back(StoreError::Unavailable("cache down".into()));
    assert_eq!(w.poll(), End::Unavailable);
    w.on("old");
    // Retried at the next poll, with the manifest accepted before.
    assert_eq!(w.poll(), End::Applied);
    w.at("new", "old");
    assert!(End::Unavailable.backs_off());
}

#[test]
fn reports_queue_while_the_server_is_down_and_arrive_later_in_order() {
    let mut w = World::new("");
    w.sink.down = true;
    w.promote("a", T0 - 10);
    assert_eq!(w.poll(), End::Applied);
    w.promote("b", T0 + 10);
    assert_eq!(w.poll(), End::Applied);
    w.at("b", "old");
    assert!(w.sink.got.is_empty());
    assert_eq!(Queue::new(w.dir.path()).len(), 2, "both reports wait");
    w.sink.down = false;
    assert_eq!(w.poll(), End::Idle);
    let systems: Vec<_> = w.sink.got.iter().filter_map(|r| r.current.clone()).collect();
    assert_eq!(systems, [sys("a"), sys("b")]);
}

#[test]
fn the_agent_killed_mid_switch_finds_the_host_rolled_back_and_tries_again() {
    let mut w = World::new("");
    w.promote("new", T0 - 10);
    // The agent started the switch and died once the watchdog was running:
    // its attempt saved, the profile set, its lock held, the watchdog waiting.
    let mut state = w.state();
    state.attempt = Some(fleetgate_agent::state::Attempt {
        run_id: "agent-1-1".into(),
        system: sys("new"),
        commit: format!("{:0>40}", T0 - 10),
        started_at: T0,
        kind: fleetgate_agent::state::AttemptKind::Switch {
            old: sys("old"),
            old_generation: Some(1),
            boot_id: "1".into(),
            window_secs: 60,
            activation_secs: 60,
        },
    });
    w.dir.save(&state).expect("save");
    w.host.m.set_profile(&sys("new")).expect("profile");
    w.host.m.lock("agent-1-1").expect("the dead agent's lock");
    w.host
        .m
        .start_watchdog(&fleetgate_apply::machine::WatchdogSpec {
            run_id: "agent-1-1".into(),
            new: sys("new"),
            old: sys("old"),
            old_generation: Some(1),
            window: Duration::from_secs(60),
            activation: Duration::from_secs(60),
        })
        .expect("watchdog");
    w.host.m.advance(Duration::from_secs(5));
    assert_eq!(w.host.m.current, sys("new"), "activated, unconfirmed");
    // Restarted: the attempt is finished first, the host on a known-good generation.
    assert_eq!(w.poll(), End::Failed, "{:#?}", w.log);
    w.on("old");
    assert!(w.last().1.contains("stopped during run agent-1-1"), "{}", w.last().1);
    assert!(w.state().bad(&sys("new")).is_none(), "one interruption is not the system's fault");
    // The next poll tries again, and succeeds.
    assert_eq!(w.poll(), End::Applied, "{:#?}", w.log);
    w.at("new", "old");
}

#[test]
fn suspended_upgrades_wait_and_dry_runs_change_nothing() {
    let mut w = World::new("");
    w.dir.suspend("maintenance").expect("suspend");
    w.promote("new", T0 - 10);
    assert_eq!(w.poll(), End::Idle);
    w.on("old");
    assert_eq!(w.last().0, Said::Skipped);
    w.dir.resume().expect("resume");
    let mut d = World::new("");
    d.dry_run = true;
    d.promote("new", T0 - 10);
    let end = d.poll();
    assert!(matches!(&end, End::DryRun(text) if text.contains("would fetch")), "{end:?}");
    d.store.local.insert(sys("new"));
    d.promote("new", T0 - 10);
    let end = d.poll();
    assert!(matches!(&end, End::DryRun(text) if text.contains("switch live")), "{end:?}");
    d.on("old");
    assert_eq!(d.state(), AgentState::default(), "a dry run saves nothing");
    assert!(d.sink.got.is_empty() && d.store.realised.is_empty());
}

#[test]
fn a_stale_manifest_is_flagged_in_the_report() {
    let mut w = World::new("stale_after = \"1h\"\n");
    w.promote("new", T0 - 7200);
    assert_eq!(w.poll(), End::Applied);
    let r = w.sink.got.last().and_then(|r| r.result.clone()).expect("result");
    assert_eq!(r.findings[0].id, "manifest.stale");
}

#[test]
fn what_was_unreachable_before_the_change_is_not_required_after_it() {
    let mut w = World::new("");
    w.host.unreachable.insert("fleet.test:80".into());
    w.promote("new", T0 - 10);
    assert_eq!(w.poll(), End::Applied, "{:#?}", w.log);
    assert_eq!(w.host.must_reach, ["cache.test:80"], "the server was down before the switch");
    assert!(w.log.iter().any(|l| l.contains("not required after it: fleet.test:80")), "{:#?}", w.log);
    w.at("new", "old");
}
