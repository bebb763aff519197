//! The event bus between the per-host jobs and whatever shows progress
//! (colmena's model): every job sends [`Event`]s; the front end renders
//! them (a progress bar per host on a terminal, plain lines otherwise).

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The phases of a host's deploy, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Waiting for its wave or a free slot.
    Queued,
    /// Building the system (on this machine).
    Build,
    /// Taking the lock on the target.
    Lock,
    /// Gathering facts.
    Facts,
    /// `fleetgate check`.
    Plan,
    /// `nix copy`.
    Copy,
    /// Activating (live switch under the watchdog, or installing for boot).
    Activate,
    /// Health checks.
    Health,
    /// Confirming a live switch over a new connection.
    Confirm,
    /// Rebooting into the new generation once.
    Reboot,
    /// Waiting for a new boot.
    WaitBoot,
    /// Running the power-cycle command.
    PowerCycle,
    /// Making the new generation the default.
    Bless,
    /// Going back to the previous generation.
    Rollback,
    /// Writing the history and the last-good GC root.
    Record,
}

impl Phase {
    /// The phase's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Build => "build",
            Phase::Lock => "lock",
            Phase::Facts => "facts",
            Phase::Plan => "plan",
            Phase::Copy => "copy",
            Phase::Activate => "activate",
            Phase::Health => "health",
            Phase::Confirm => "confirm",
            Phase::Reboot => "reboot",
            Phase::WaitBoot => "wait-boot",
            Phase::PowerCycle => "power-cycle",
            Phase::Bless => "bless",
            Phase::Rollback => "rollback",
            Phase::Record => "record",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A phase started.
    Phase(Phase),
    /// A line worth showing.
    Info(String),
    /// How far the copy is (throttled: a few a second at most, see
    /// [`crate::copy::PROGRESS_EVERY`]). Bytes are NAR bytes (what
    /// `nix path-info` calls `narSize`); with Nix 2.8 they move one store
    /// path at a time, when Nix has sent it.
    CopyProgress {
        /// NAR bytes sent so far.
        done_bytes: u64,
        /// NAR bytes to send in all, when known (the paths the target lacks).
        expected_bytes: Option<u64>,
    },
    /// The copy ended well (sent once, after the last [`EventKind::CopyProgress`]).
    Copied {
        /// NAR bytes sent: the NAR sizes of the paths the target lacked.
        bytes: u64,
        /// Store paths sent.
        paths: u64,
    },
    /// A wait goes on (health checks, the boot of a host): what is waited
    /// for and the seconds left (sent every few seconds).
    Waiting {
        /// What is waited for.
        what: String,
        /// Seconds left before fleetgate gives up waiting.
        left_secs: u64,
    },
    /// The host is done; the text is the outcome and its reason.
    Finished {
        /// Whether it ended well.
        ok: bool,
        /// The outcome in one line.
        summary: String,
    },
}

/// One event of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The host.
    pub host: String,
    /// What happened.
    pub kind: EventKind,
}

/// Where events go; cheap to clone, shared by all jobs.
#[derive(Clone, Default)]
pub struct Bus {
    tx: Option<Arc<Mutex<Sender<Event>>>>,
}

impl Bus {
    /// A bus feeding `tx`.
    #[must_use]
    pub fn new(tx: Sender<Event>) -> Bus {
        Bus { tx: Some(Arc::new(Mutex::new(tx))) }
    }

    /// A bus that drops everything.
    #[must_use]
    pub fn silent() -> Bus {
        Bus::default()
    }

    /// Sends an event (a receiver that went away is ignored).
    pub fn send(&self, host: &str, kind: EventKind) {
        if let Some(tx) = &self.tx {
            let tx = tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = tx.send(Event { host: host.to_owned(), kind });
        }
    }
}

/// One phase's record: when, how long, how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// The phase.
    pub phase: Phase,
    /// Milliseconds since the run started.
    pub start_ms: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// Whether it succeeded.
    pub ok: bool,
    /// What it found or did.
    pub detail: String,
}

/// Times a host's phases and announces them on the bus.
pub struct Timeline {
    host: String,
    bus: Bus,
    run_start: Instant,
    current: Option<(Phase, Instant)>,
    /// The phases so far.
    pub records: Vec<PhaseRecord>,
}

impl Timeline {
    /// A timeline of `host` in a run that started at `run_start`.
    #[must_use]
    pub fn new(host: &str, bus: Bus, run_start: Instant) -> Timeline {
        Timeline { host: host.to_owned(), bus, run_start, current: None, records: Vec::new() }
    }

    /// Ends the running phase (successfully) and starts `phase`.
    pub fn start(&mut self, phase: Phase) {
        self.end(true, "");
        self.current = Some((phase, Instant::now()));
        self.bus.send(&self.host, EventKind::Phase(phase));
    }

    /// Ends the running phase, if any.
    pub fn end(&mut self, ok: bool, detail: &str) {
        if let Some((phase, started)) = self.current.take() {
            let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            self.records.push(PhaseRecord {
                phase,
                start_ms: ms(started.duration_since(self.run_start)),
                duration_ms: ms(started.elapsed()),
                ok,
                detail: detail.to_owned(),
            });
        }
    }

    /// The running phase.
    #[must_use]
    pub fn phase(&self) -> Option<Phase> {
        self.current.map(|(p, _)| p)
    }

    /// Shows a line.
    pub fn info(&self, text: impl Into<String>) {
        self.bus.send(&self.host, EventKind::Info(text.into()));
    }

    /// Sends an event of this host.
    pub fn send(&self, kind: EventKind) {
        self.bus.send(&self.host, kind);
    }
}
