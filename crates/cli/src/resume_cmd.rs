//! `fleetgate resume-pending`: run ON a host (the agent's NixOS module runs
//! it as a boot unit) to finish a verified reboot that its deployer did not
//! live to finish: bless the new generation when it booted and is healthy,
//! otherwise make sure the previous one is the default, and say which. The
//! same engine and scripts as `deploy`, over the local machine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use fleetgate_apply::health::HealthChecks;
use fleetgate_apply::machine::{LockError, Machine as _};
use fleetgate_apply::outcome::{Observer, Step};
use fleetgate_apply::reboot::{resume, resume_owner};
use fleetgate_apply::remote::{CallTimeouts, Loader, LocalConnector, ScriptMachine};
use fleetgate_apply::scripts::Layout;
use fleetgate_apply::{Outcome, Standing};

/// `fleetgate resume-pending` arguments.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The boot loader: `systemd-boot:ESP` or `grub:GRUB_CFG` (default: found
    /// by looking at this host).
    #[arg(long, value_name = "LOADER")]
    pub loader: Option<String>,
    /// Seconds health checks may take to pass.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub health_timeout: u64,
    /// Treat this directory as the root of the host (tests).
    #[arg(long, hide = true)]
    pub root: Option<PathBuf>,
}

/// Progress as plain lines on stderr (a boot unit's journal).
struct Lines;

impl Observer for Lines {
    fn step(&mut self, step: Step) {
        eprintln!("fleetgate: {step:?}");
    }
    fn info(&mut self, text: &str) {
        eprintln!("fleetgate: {text}");
    }
    fn waiting(&mut self, what: &str, left_secs: u64) {
        eprintln!("fleetgate: waiting for {what} ({left_secs} s left)");
    }
}

fn loader(spec: &str) -> Option<Loader> {
    match spec.split_once(':') {
        Some(("systemd-boot", esp)) => Some(Loader::SystemdBoot { esp: esp.to_owned() }),
        Some(("grub", cfg)) => Some(Loader::Grub { cfg: cfg.to_owned() }),
        _ => None,
    }
}

/// Runs `fleetgate resume-pending`: exit 0 when nothing is pending or the
/// host is on a known-good default, 1 when the new generation was refused,
/// 3 when where the host stands cannot be told.
pub fn run(args: &ResumeArgs) -> ExitCode {
    let layout = Layout { root: args.root.as_ref().map(|r| r.display().to_string()).unwrap_or_default() };
    let timeouts = CallTimeouts {
        command: Duration::from_secs(120),
        activation: Duration::from_secs(600),
        probe: Duration::from_secs(15),
        power_cycle: Duration::from_secs(300),
    };
    let mut m = ScriptMachine::new(LocalConnector, layout, timeouts);
    let intent = match m.read_intent() {
        Ok(None) => {
            eprintln!("fleetgate: no verified reboot is pending");
            return ExitCode::SUCCESS;
        }
        Ok(Some(i)) => i,
        Err(e) => {
            eprintln!("fleetgate: the pending intent cannot be read: {e}");
            return ExitCode::from(3);
        }
    };
    m.loader = match &args.loader {
        Some(spec) => match loader(spec) {
            Some(l) => Some(l),
            None => {
                eprintln!("fleetgate: --loader takes systemd-boot:ESP or grub:GRUB_CFG, not {spec:?}");
                return ExitCode::from(2);
            }
        },
        None => detect_loader(),
    };
    m.health = HealthChecks {
        units: intent.verified.units.clone(),
        commands: intent.verified.commands.clone(),
        tcp: intent.verified.tcp.clone(),
        ..HealthChecks::default()
    };
    let owner = resume_owner(&intent.run_id);
    match m.lock(&owner) {
        Ok(()) => {}
        Err(LockError::Held { owner }) => {
            eprintln!("fleetgate: {owner} is finishing the verified reboot; leaving it to them");
            return ExitCode::SUCCESS;
        }
        Err(LockError::Machine(e)) => {
            eprintln!("fleetgate: could not take the deploy lock: {e}");
            return ExitCode::from(3);
        }
    }
    // A boot unit runs while the system is still starting (it is one of the
    // boot's jobs itself): `starting` is not held against the new generation;
    // `degraded` and worse still are, and the units and commands must pass.
    let mut intent = intent;
    if fleetgate_apply::health::rank(&intent.verified.baseline) < fleetgate_apply::health::rank("starting") {
        intent.verified.baseline = "starting".to_owned();
    }
    let outcome =
        resume(&mut m, &mut Lines, &intent, Duration::from_secs(args.health_timeout), false, Duration::from_secs(300));
    let _ = m.unlock(&owner);
    eprintln!("fleetgate: the verified reboot of run {}: {}", intent.run_id, outcome.message());
    match (outcome.standing(), &outcome) {
        (Standing::Unknown, _) => ExitCode::from(3),
        (_, Outcome::Blessed) => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

fn detect_loader() -> Option<Loader> {
    let facts = fleetgate_facts::collect(&fleetgate_transport::Local, Duration::from_secs(60)).ok()?;
    match facts.boot.loader? {
        fleetgate_facts::Loader::SystemdBoot => {
            Some(Loader::SystemdBoot { esp: facts.boot.location.unwrap_or_else(|| "/boot".to_owned()) })
        }
        fleetgate_facts::Loader::Grub => {
            Some(Loader::Grub { cfg: facts.boot.location.unwrap_or_else(|| "/boot/grub/grub.cfg".to_owned()) })
        }
    }
}
