//! [`Agent`]: everything one poll works with — the configuration, the state
//! and its directory, the manifest source, the store, this host, the report
//! queue and where it goes, the clock — behind traits, so that every exit
//! of [`crate::cycle`] and [`crate::recover`] is a unit test against fakes
//! (the engine's `FakeMachine` among them).

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetgate_apply::Outcome;
use fleetgate_apply::outcome::{Observer, Step};
use fleetgate_facts::Finding;

use crate::config::AgentConfig;
use crate::cycle::End;
use crate::host::{Host, View};
use crate::queue::{Queue, Sink};
use crate::report::{self, Outcome as Said, Report, ResultRecord};
use crate::source::Source;
use crate::state::{AgentState, StateDir};
use crate::store::Store;

/// Time, as the agent sees it.
pub trait Clock {
    /// Seconds since the epoch.
    fn unix(&self) -> u64;
    /// Minutes after local midnight.
    fn minute_of_day(&self) -> u16;
    /// Waits `d`; false when woken early (the agent is asked to stop).
    fn sleep(&mut self, d: Duration) -> bool;
}

/// The system clock; sleeps end early when a message arrives on `stop`
/// (SIGTERM, SIGINT).
#[derive(Debug)]
pub struct SystemClock {
    stop: Option<Receiver<()>>,
    stopped: bool,
}

impl SystemClock {
    /// A clock whose sleeps `stop` interrupts.
    #[must_use]
    pub fn new(stop: Option<Receiver<()>>) -> SystemClock {
        SystemClock { stop, stopped: false }
    }

    /// Whether a stop was asked for.
    #[must_use]
    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

impl Clock for SystemClock {
    fn unix(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    fn minute_of_day(&self) -> u16 {
        crate::window::local_minute_of_day()
    }

    fn sleep(&mut self, d: Duration) -> bool {
        if self.stopped {
            return false;
        }
        match &self.stop {
            None => {
                std::thread::sleep(d);
                true
            }
            Some(rx) => match rx.recv_timeout(d) {
                Err(RecvTimeoutError::Timeout) => true,
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    self.stopped = true;
                    false
                }
            },
        }
    }
}

/// The engine's progress as log lines.
pub struct Lines<'l>(pub &'l mut dyn FnMut(&str));

impl Observer for Lines<'_> {
    fn step(&mut self, step: Step) {
        (self.0)(&format!(
            "engine: {}",
            serde_json::to_value(step).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        ));
    }
    fn info(&mut self, text: &str) {
        (self.0)(text);
    }
    fn waiting(&mut self, what: &str, left_secs: u64) {
        if left_secs % 10 == 0 {
            (self.0)(&format!("waiting for {what} ({left_secs} s left)"));
        }
    }
}

/// One agent at work.
pub struct Agent<'a> {
    /// The configuration.
    pub cfg: &'a AgentConfig,
    /// Its directory.
    pub dir: &'a StateDir,
    /// What it remembers (saved by [`Agent::save`]).
    pub state: AgentState,
    /// The manifest source.
    pub source: &'a mut dyn Source,
    /// The store.
    pub store: &'a mut dyn Store,
    /// This host.
    pub host: &'a mut dyn Host,
    /// Reports not delivered yet.
    pub queue: Queue,
    /// Where reports go (none: no server).
    pub sink: Option<&'a mut dyn Sink>,
    /// Time.
    pub clock: &'a mut dyn Clock,
    /// Log lines (the journal).
    pub log: &'a mut dyn FnMut(&str),
    /// Set when the poll did more than ask whether anything changed
    /// (verified, fetched, checked, applied, recovered): the daemon then
    /// starts afresh, so that its idle memory is its baseline again.
    pub worked: bool,
}

impl Agent<'_> {
    /// A log line.
    pub fn log(&mut self, line: &str) {
        (self.log)(line);
    }

    /// Saves the state (a failure is logged: the next save tries again).
    pub fn save(&mut self) {
        if let Err(e) = self.dir.save(&self.state) {
            let line = format!("cannot save the agent's state: {e}");
            self.log(&line);
        }
    }

    /// The last result becomes `r`.
    pub fn record(&mut self, r: ResultRecord) {
        self.state.last_result = Some(r);
    }

    /// The last result becomes `r` unless it says the same already (so a
    /// condition that lasts is recorded, and reported, once).
    pub fn record_once(&mut self, r: ResultRecord) {
        let same = self
            .state
            .last_result
            .as_ref()
            .is_some_and(|l| l.outcome == r.outcome && l.system == r.system && l.message == r.message);
        if !same {
            self.record(r);
        }
    }

    /// A failure that says nothing about the system itself (not marked bad).
    pub fn failed(&mut self, system: &str, commit: &str, message: String, findings: &[Finding]) -> End {
        let line = message.clone();
        self.log(&line);
        let r = ResultRecord::new(Said::Failed, self.clock.unix(), Some(system), Some(commit), message)
            .with_findings(findings);
        self.record_once(r);
        End::Failed
    }

    /// How the engine ended an attempt ([`crate::cycle::conclude`]).
    pub fn conclude(&mut self, outcome: &Outcome, system: &str, commit: &str, findings: &[Finding]) -> End {
        crate::cycle::conclude(self, outcome, system, commit, findings)
    }

    /// The report of the state and `view` now.
    #[must_use]
    pub fn build_report(&self, view: Option<&View>) -> Report {
        report::build(self.cfg, &self.state, view, self.clock.unix())
    }

    /// Queues a report when anything in it changed (or a heartbeat is due),
    /// then sends what waits.
    pub fn report(&mut self) {
        let view = match self.host.view() {
            Ok(v) => Some(v),
            Err(e) => {
                self.log(&format!("cannot read where this host stands for the report: {e}"));
                None
            }
        };
        let report = self.build_report(view.as_ref());
        let digest = report.digest();
        let now = self.clock.unix();
        let due = match &self.state.last_report {
            None => true,
            Some((at, d)) => *d != digest || now.saturating_sub(*at) >= self.cfg.report_every.as_secs(),
        };
        if due {
            match self.queue.push(&report) {
                Ok(()) => {
                    self.state.last_report = Some((now, digest));
                    self.state.reset = None;
                    self.save();
                }
                Err(e) => self.log(&format!("cannot queue the report: {e}")),
            }
        }
        if let Some(sink) = self.sink.as_deref_mut() {
            let (sent, notes) = self.queue.flush(sink);
            if sent > 0 {
                self.log(&format!("delivered {sent} report(s)"));
            }
            // A problem is said once while it lasts (a server down for an hour is one line).
            let problem = notes.last().cloned();
            if problem != self.state.delivery {
                for n in &notes {
                    self.log(n);
                }
                if problem.is_none() && self.state.delivery.is_some() {
                    self.log("reports are delivered again");
                }
                self.state.delivery = problem;
                self.save();
            }
        }
    }
}
