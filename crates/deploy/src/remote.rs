//! A deploy target as the apply engine sees it: an SSH [`Connector`] (a
//! shared ControlMaster connection, fresh logins where a new login must be
//! proved), a [`ScriptMachine`] configured from the host's inventory and
//! facts, and an [`Observer`] that turns the engine's steps into the deploy's
//! phases and progress lines.

use std::time::{Duration, Instant};

use fleetgate_apply::health::HealthChecks;
use fleetgate_apply::outcome::{Observer, Step};
use fleetgate_apply::remote::{CallTimeouts, Connector, Loader, ScriptMachine};
use fleetgate_apply::scripts::Layout;
use fleetgate_facts::Facts;
use fleetgate_transport::{Ssh, SshTarget, Transport};

use crate::events::{EventKind, Phase, Timeline};
use crate::inventory::Host;
use crate::options::Timeouts;

/// Connections to one host over OpenSSH.
pub struct SshConnector {
    target: SshTarget,
    options: Vec<String>,
    connect: Duration,
    shared: Option<Ssh>,
}

impl SshConnector {
    /// A connector; nothing is connected yet.
    #[must_use]
    pub fn new(target: SshTarget, options: Vec<String>, connect: Duration) -> SshConnector {
        SshConnector { target, options, connect, shared: None }
    }

    /// The control socket of the shared connection, once it is connected.
    #[must_use]
    pub fn control_path(&self) -> Option<std::path::PathBuf> {
        self.shared.as_ref().and_then(Ssh::control_path)
    }

    /// Logs in the shared connection now (see [`Ssh::connect`]); within
    /// the connect timeout and as long again for the login itself.
    ///
    /// # Errors
    /// When the host cannot be reached: the next command tries again.
    pub fn connect_shared(&mut self) -> Result<(), fleetgate_transport::TransportError> {
        let within = self.connect.saturating_mul(2);
        let fresh = self.ssh(true);
        self.shared.get_or_insert(fresh).connect(within)
    }

    fn ssh(&self, multiplex: bool) -> Ssh {
        Ssh::new(self.target.clone(), self.options.clone())
            .with_connect_timeout(self.connect)
            .with_multiplexing(multiplex)
    }
}

impl Connector for SshConnector {
    fn describe(&self) -> String {
        self.target.to_string()
    }

    fn shared(&mut self) -> &dyn Transport {
        let fresh = self.ssh(true);
        self.shared.get_or_insert(fresh)
    }

    fn fresh(&self) -> Box<dyn Transport> {
        Box::new(self.ssh(false))
    }

    fn disconnect(&mut self) {
        self.shared = None;
    }
}

/// The engine's machine for a host.
pub type Machine = ScriptMachine<SshConnector>;

/// The connections to `host` at `target`; nothing is connected yet.
#[must_use]
pub fn connector(host: &Host, target: SshTarget, t: &Timeouts) -> SshConnector {
    SshConnector::new(target, host.ssh_opts.clone(), t.connect)
}

/// The machine of `host` over `conn` (from [`connector`]), before its
/// facts are known.
#[must_use]
pub fn machine(host: &Host, conn: SshConnector, t: &Timeouts) -> Machine {
    let timeouts = CallTimeouts {
        command: t.command,
        activation: t.activation,
        probe: Duration::from_secs(15),
        power_cycle: t.power_cycle,
    };
    let mut m = ScriptMachine::new(conn, Layout::default(), timeouts);
    m.health = HealthChecks {
        units: host.health.units.clone(),
        commands: host.health.commands.clone(),
        tcp: host.health.tcp.iter().map(|p| host.expand(p)).collect(),
        http: host.health.http.iter().map(|p| host.expand(p)).collect(),
    };
    m.power_cycle = host.power_cycle.as_deref().map(|c| host.expand(c));
    m
}

/// Tells the machine what the facts say about the boot loader (an SSH
/// host's, or the agent's own).
pub fn configure_loader<C: Connector>(m: &mut ScriptMachine<C>, facts: &Facts) {
    m.loader = match facts.boot.loader {
        Some(fleetgate_facts::Loader::SystemdBoot) => {
            Some(Loader::SystemdBoot { esp: facts.boot.location.clone().unwrap_or_else(|| "/boot".to_owned()) })
        }
        Some(fleetgate_facts::Loader::Grub) => {
            Some(Loader::Grub { cfg: facts.boot.location.clone().unwrap_or_else(|| "/boot/grub/grub.cfg".to_owned()) })
        }
        None => None,
    };
    m.efi_default_before = facts.boot.efi_vars.get("LoaderEntryDefault").cloned().filter(|v| !v.is_empty());
}

/// How often a wait is reported.
pub const WAITING_EVERY: Duration = Duration::from_secs(5);

/// The engine's progress on a host's timeline and the bus.
pub struct Progress<'t> {
    /// The timeline.
    pub tl: &'t mut Timeline,
    last_wait: Option<(String, Instant)>,
}

impl<'t> Progress<'t> {
    /// Progress on `tl`.
    pub fn new(tl: &'t mut Timeline) -> Progress<'t> {
        Progress { tl, last_wait: None }
    }
}

/// The deploy phase of an engine step.
#[must_use]
pub fn phase(step: Step) -> Phase {
    match step {
        Step::Activate => Phase::Activate,
        Step::Health => Phase::Health,
        Step::Confirm => Phase::Confirm,
        Step::Reboot => Phase::Reboot,
        Step::WaitBoot => Phase::WaitBoot,
        Step::PowerCycle => Phase::PowerCycle,
        Step::Bless => Phase::Bless,
        Step::Rollback => Phase::Rollback,
    }
}

impl Observer for Progress<'_> {
    fn step(&mut self, step: Step) {
        self.last_wait = None;
        self.tl.start(phase(step));
    }

    fn info(&mut self, text: &str) {
        self.tl.info(text);
    }

    fn waiting(&mut self, what: &str, left_secs: u64) {
        let due = match &self.last_wait {
            Some((w, at)) => w != what || at.elapsed() >= WAITING_EVERY,
            None => true,
        };
        if due {
            self.last_wait = Some((what.to_owned(), Instant::now()));
            self.tl.send(EventKind::Waiting { what: what.to_owned(), left_secs });
        }
    }
}
