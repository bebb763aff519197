//! `fleetgate install FLAKE#HOST --target ssh://root@IP`: nixos-anywhere's
//! job, where every phase proves it happened (`fleetgate-install`,
//! docs/install.md). This file only turns arguments into a
//! [`fleetgate_install::Plan`] — building the system and the disko script,
//! evaluating the layout — and prints the report.
//!
//! Exit codes: 0 every requested phase proven; 1 refused or failed, the
//! machine's state known (the report says which, and the command that
//! resumes); 2 bad arguments or a build/eval error, nothing touched; 3 the
//! machine's state is unknown.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use fleetgate_check::FlakeHost;
use fleetgate_install::enrol::{self, Enrolment};
use fleetgate_install::hardware;
use fleetgate_install::kexec::Nonce;
use fleetgate_install::layout::{EVAL_APPLY, Layout};
use fleetgate_install::ssh::{BuiltSystem, KexecSource, SshTarget};
use fleetgate_install::{Phase, Phases, Plan};

use crate::facts_cmd::{CliError, TargetArgs};
use crate::install_progress::Progress;

/// Arguments of `fleetgate install`.
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The flake and host (`.#web1`), as nixos-anywhere's `--flake`.
    #[arg(value_name = "FLAKE#HOST")]
    flake: String,
    #[command(flatten)]
    target: TargetArgs,
    /// Comma-separated phases to run, as nixos-anywhere's: kexec, disko,
    /// install, reboot (pre-flight always runs).
    #[arg(long, value_name = "PHASES", default_value = "kexec,disko,install,reboot")]
    phases: String,
    /// The kexec installer: a nixos-images kexec tarball (`kexec/run`),
    /// a file streamed over SSH or an http(s) URL the target downloads.
    /// Needed with the kexec phase.
    #[arg(long, value_name = "PATH|URL")]
    kexec: Option<String>,
    /// Extra flags for `kexec --load`, passed to the tarball's `run` as
    /// nixos-anywhere's `--kexec-extra-flags` (e.g. `--no-sync`).
    #[arg(long, value_name = "FLAGS", default_value = "", allow_hyphen_values = true)]
    kexec_extra_flags: String,
    /// Write a hardware report (boot.initrd.availableKernelModules for the
    /// root disk's chain) from the running OS's facts to this file.
    #[arg(long, value_name = "PATH")]
    generate_hardware_config: Option<PathBuf>,
    /// Use these built store paths instead of building the flake, as
    /// nixos-anywhere's `--store-paths`: the disko script, then the system.
    #[arg(long, value_names = ["DISKO_SCRIPT", "SYSTEM"], num_args = 2)]
    store_paths: Option<Vec<String>>,
    /// A file the target's console is logged to (a VM's serial log): its
    /// tail is shown when the first boot fails.
    #[arg(long, value_name = "FILE")]
    console_log: Option<PathBuf>,
    /// A phase's deadline, in seconds, instead of its default (repeatable):
    /// `--phase-timeout kexec=120`. Defaults: pre-flight 600, kexec 600,
    /// disko 1800, install 3600, reboot 900.
    #[arg(long = "phase-timeout", value_name = "PHASE=SECS", value_parser = parse_phase_timeout)]
    phase_timeouts: Vec<(Phase, u64)>,
    /// Enrol the host for the pull agent (`fleetgate agent`): a directory
    /// laid out as the new root (`etc/fleetgate/agent.toml`,
    /// `var/lib/secrets/fleetgate-token`, …), as nixos-anywhere's
    /// `--extra-files`. Each file is written owned by root, mode 0400 (0600
    /// when its owner may write it here), and read back before the reboot.
    #[arg(long, alias = "enroll-agent", value_name = "DIR")]
    enrol_agent: Option<PathBuf>,
    /// Print the report as one JSON document (`format` 1).
    #[arg(long)]
    pub json: bool,
}

/// `PHASE=SECS`, SECS at least 1.
fn parse_phase_timeout(text: &str) -> Result<(Phase, u64), String> {
    let (name, secs) = text.split_once('=').ok_or_else(|| format!("{text:?} is not PHASE=SECS"))?;
    let phase = Phase::ALL
        .into_iter()
        .find(|p| p.as_str() == name)
        .ok_or_else(|| format!("unknown phase {name:?} (the phases are pre-flight, kexec, disko, install, reboot)"))?;
    match secs.parse::<u64>() {
        Ok(n) if n >= 1 => Ok((phase, n)),
        _ => Err(format!("{secs:?} is not a number of seconds (at least 1)")),
    }
}

/// Runs `fleetgate install`.
pub fn run(args: &InstallArgs) -> miette::Result<ExitCode> {
    Ok(run_inner(args)?)
}

fn run_inner(args: &InstallArgs) -> Result<ExitCode, CliError> {
    let host = FlakeHost::parse(&args.flake).ok_or_else(|| {
        CliError::new(format!("install wants FLAKE#HOST, got {:?}", args.flake))
            .with_help("name the flake and the host, as nixos-anywhere --flake takes them: `.#web1`")
    })?;
    let phases = Phases::parse(&args.phases).map_err(|e| CliError::new(format!("--phases: {e}")))?;
    if !args.target.target.starts_with("ssh://") {
        return Err(CliError::new(format!("--target {:?} is not ssh://[user@]host[:port]", args.target.target))
            .with_help("install works over SSH only: `--target ssh://root@192.0.2.10`"));
    }
    let address = fleetgate_transport::SshTarget::parse(&args.target.target)
        .map_err(|e| CliError::new("bad --target").caused_by(e))?;
    let kexec = match (&args.kexec, phases.contains(Phase::Kexec)) {
        (Some(text), _) => Some(KexecSource::parse(text).map_err(|e| CliError::new(format!("--kexec: {e}")))?),
        (None, true) => {
            return Err(CliError::new("the kexec phase needs --kexec PATH|URL").with_help(
                "pass nixos-images' kexec tarball, e.g. --kexec https://github.com/nix-community/nixos-images/releases/download/nixos-25.11/nixos-kexec-installer-noninteractive-x86_64-linux.tar.gz",
            ));
        }
        (None, false) => None,
    };
    if let Some(KexecSource::Path(p)) = &kexec {
        if !p.is_file() {
            return Err(CliError::new(format!("--kexec {}: no such file", p.display())));
        }
    }
    if args.generate_hardware_config.is_some() && !phases.contains(Phase::Kexec) {
        return Err(CliError::new("--generate-hardware-config reads the old OS's hardware: it needs the kexec phase")
            .with_help(
                "run it before the kexec (`--phases kexec,…`), or with `fleetgate facts --target … --json` beforehand",
            ));
    }
    let enrol = match &args.enrol_agent {
        Some(dir) => {
            if !phases.contains(Phase::Install) {
                return Err(CliError::new(
                    "--enrol-agent writes into the installed system: it needs the install phase",
                )
                .with_help("resume with `--phases install,reboot` (the copy and nixos-install are idempotent)"));
            }
            Enrolment::from_dir(dir).map_err(|e| CliError::new(format!("--enrol-agent: {e}")))?
        }
        None => Enrolment::default(),
    };
    let (disko_script, system) = built_paths(args, &host)?;
    let layout = eval_layout(&host)?;
    let check = BuiltSystem::open(Path::new(&system))
        .map_err(|e| CliError::new(format!("cannot read the system {system}")).caused_by(e))?;
    if !enrol.is_empty() {
        let notes = enrol::check_against_system(&enrol, Path::new(&system))
            .map_err(|e| CliError::new(format!("--enrol-agent: {e}")).with_help(
                "put the token where the system's services.fleetgate.agent.tokenFile says, under a directory that persists (/var/lib/secrets, /etc)",
            ))?;
        for note in notes {
            eprintln!("enrol-agent: {note}");
        }
    }
    if let Some(path) = &args.generate_hardware_config {
        write_hardware_report(args, &system, path)?;
    }
    let nonce = Nonce::random().map_err(|e| CliError::new("no nonce").caused_by(e))?;
    let mut deadlines = Plan::default_deadlines();
    for (phase, secs) in &args.phase_timeouts {
        if let Some(i) = Phase::ALL.iter().position(|p| p == phase) {
            deadlines[i] = Duration::from_secs(*secs);
        }
    }
    let plan = Plan {
        flake: args.flake.clone(),
        target: args.target.target.clone(),
        system,
        disko_script,
        layout,
        phases,
        deadlines,
        nonce,
        enrol,
    };
    let mut ssh_options = Vec::new();
    if let Some(config) = &args.target.ssh_config {
        ssh_options.extend(["-F".to_owned(), config.display().to_string()]);
    }
    ssh_options.extend(args.target.ssh_opts.iter().cloned());
    let mut target = SshTarget::new(address, ssh_options, kexec, args.console_log.clone())
        .with_kexec_extra_flags(&args.kexec_extra_flags);
    let mut progress = Progress::new(args.json);
    let report = fleetgate_install::install(&mut target, &check, &plan, progress.observer());
    progress.end();
    if args.json {
        crate::exit::print_json(&serde_json::to_value(&report).unwrap_or_default());
    } else {
        print!("{}", report.human());
    }
    Ok(ExitCode::from(report.exit_code()))
}

fn nix() -> Result<fleetgate_nix::Nix, CliError> {
    fleetgate_nix::Nix::detect()
        .map(|n| n.with_timeout(Duration::from_secs(3600)))
        .map_err(|e| CliError::new("cannot run nix").caused_by(e))
}

/// The disko script and the system: given, or built from the flake.
fn built_paths(args: &InstallArgs, host: &FlakeHost) -> Result<(String, String), CliError> {
    if let Some([disko, system]) = args.store_paths.as_deref() {
        return Ok((disko.clone(), system.clone()));
    }
    let attr = |a: &str| format!("{}#nixosConfigurations.\"{}\".config.system.build.{a}", host.flake, host.host);
    let built = nix()?
        .build(&[attr("diskoScript"), attr("toplevel")])
        .map_err(|e| CliError::new(format!("building {} failed", args.flake)).caused_by(e))?;
    let out = |i: usize| built.get(i).and_then(|b| b.outputs.get("out")).cloned();
    match (out(0), out(1)) {
        (Some(d), Some(s)) => Ok((d, s)),
        _ => Err(CliError::new("nix build did not name the disko script and the system")),
    }
}

/// What the disko configuration creates.
fn eval_layout(host: &FlakeHost) -> Result<Layout, CliError> {
    let attr = format!("{}#nixosConfigurations.\"{}\".config.disko.devices.disk", host.flake, host.host);
    let value = nix()?.eval_json(&attr, Some(EVAL_APPLY)).map_err(|e| {
        CliError::new(format!("cannot evaluate the disko layout {attr}"))
            .caused_by(e)
            .with_help("the host's configuration must import disko's NixOS module and set disko.devices")
    })?;
    Layout::parse(&value.to_string()).map_err(|e| CliError::new("the disko layout cannot be used").caused_by(e))
}

fn write_hardware_report(args: &InstallArgs, system: &str, path: &Path) -> Result<(), CliError> {
    let facts = args.target.facts()?;
    let toplevel = fleetgate_system::SystemToplevel::open(system)
        .map_err(|e| CliError::new(format!("cannot read the system {system}")).caused_by(e))?;
    let index = toplevel.kernel_modules_dir().ok().and_then(|dir| fleetgate_kmod::ModuleIndex::load(dir).ok());
    let modules = hardware::initrd_modules(&facts, index.as_ref());
    std::fs::write(path, hardware::report(&facts, &modules))
        .map_err(|e| CliError::new(format!("cannot write {}", path.display())).caused_by(e))?;
    eprintln!("hardware report written to {}: {}", path.display(), modules.modules.join(" "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// The error `fleetgate install ARGS` ends with, as its `--json` document.
    fn error_of(args: &[&str]) -> serde_json::Value {
        let cli = crate::Cli::try_parse_from([&["fleetgate", "install"], args].concat()).expect("parses");
        let crate::Command::Install(install) = cli.command else { panic!("not install") };
        let e = run_inner(&install).expect_err("refused before anything runs");
        crate::exit::failure_json(&miette::Report::new(e), crate::exit::EXIT_USAGE)
    }

    #[test]
    fn phase_timeouts_are_checked() {
        assert_eq!(parse_phase_timeout("kexec=120"), Ok((Phase::Kexec, 120)));
        assert_eq!(parse_phase_timeout("pre-flight=1"), Ok((Phase::PreFlight, 1)));
        assert!(parse_phase_timeout("kexec=0").is_err());
        assert!(parse_phase_timeout("kexec").is_err());
        assert!(parse_phase_timeout("format=10").unwrap_err().contains("unknown phase"));
    }

    #[test]
    fn bad_arguments_are_refused_before_anything_is_built() {
        let t = ["--target", "ssh://root@192.0.2.10"];
        let doc = error_of(&[&[".#web1", "--phases", "kexec,format"][..], &t].concat());
        assert_eq!(doc["error"], "--phases: unknown phase \"format\" (the phases are kexec, disko, install, reboot)");
        assert_eq!(doc["exit_code"], 2);
        let doc = error_of(&[&[".#web1"][..], &t].concat());
        assert_eq!(doc["error"], "the kexec phase needs --kexec PATH|URL");
        assert!(doc["help"].as_str().unwrap_or_default().contains("nixos-kexec-installer"));
        let doc = error_of(&[".#web1", "--target", "root@192.0.2.10", "--phases", "install"]);
        assert!(doc["error"].as_str().unwrap_or_default().contains("is not ssh://"), "{doc}");
        let doc = error_of(&[&["web1", "--phases", "install"][..], &t].concat());
        assert!(doc["error"].as_str().unwrap_or_default().contains("FLAKE#HOST"), "{doc}");
        let doc =
            error_of(&[&[".#web1", "--phases", "install", "--generate-hardware-config", "hw.nix"][..], &t].concat());
        assert!(doc["error"].as_str().unwrap_or_default().contains("needs the kexec phase"), "{doc}");
        let doc = error_of(&[&[".#web1", "--kexec", "/nonexistent/k.tar.gz"][..], &t].concat());
        assert_eq!(doc["error"], "--kexec /nonexistent/k.tar.gz: no such file");
        let doc =
            error_of(&[&[".#web1", "--phases", "install", "--enrol-agent", "/nonexistent/agent"][..], &t].concat());
        assert!(
            doc["error"].as_str().unwrap_or_default().starts_with("--enrol-agent: cannot read /nonexistent/agent"),
            "{doc}"
        );
        let doc =
            error_of(&[&[".#web1", "--phases", "reboot", "--enrol-agent", "/nonexistent/agent"][..], &t].concat());
        assert!(doc["error"].as_str().unwrap_or_default().contains("needs the install phase"), "{doc}");
    }
}
