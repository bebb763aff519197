//! `fleetgate agent`: wires the pull agent (`fleetgate-agent`) to the
//! command line — the daemon, `--once` for a timer, `--dry-run`, and on the
//! host `status`, `suspend`, `resume`. Every decision is the crate's.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use fleetgate_agent::config::{AgentConfig, ConfigError, ConfigFile, DEFAULT_CONFIG, Flags, parse_span};
use fleetgate_agent::daemon::{RunOptions, run};
use fleetgate_agent::state::StateDir;

use crate::facts_cmd::CliError;

/// `fleetgate agent` arguments.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    #[command(flatten)]
    config: ConfigArgs,
    /// One poll, then exit (for a timer): 0 fine, 1 failed here, 2 bad configuration, 3 host state unknown, 4 source/cache/lock unavailable.
    #[arg(long)]
    once: bool,
    /// With --once: fetch, verify, check and say what would be done; apply, save and report nothing.
    #[arg(long, requires = "once")]
    dry_run: bool,
    /// With --once: print one JSON document.
    #[arg(long, requires = "once")]
    json: bool,
    /// Exit 0 once this file changed (the unit file, the configuration), so the service manager restarts the new agent.
    #[arg(long, value_name = "PATH")]
    exit_when_changed: Vec<PathBuf>,
}

/// What configures the agent (also for `status`, `suspend`, `resume`).
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The configuration file (TOML, or JSON as the NixOS module writes it).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// This host's name in the channel [default: the host name].
    #[arg(long, value_name = "NAME", global = true)]
    host: Option<String>,
    /// `channel serve`'s URL (manifests and reports).
    #[arg(long, value_name = "URL", global = true)]
    server: Option<String>,
    /// The manifest's URL if not at the server (http(s)://, file://; {host} replaced).
    #[arg(long, value_name = "URL", global = true)]
    manifest: Option<String>,
    /// A key that may sign manifests (`name:base64`, or a file); repeat for several.
    #[arg(long = "trusted-key", value_name = "KEY", global = true)]
    trusted_keys: Vec<String>,
    /// A binary cache holding the closures; repeat for several.
    #[arg(long = "cache", value_name = "URL", global = true)]
    caches: Vec<String>,
    /// A key that may sign the caches' narinfos [default: the trusted keys].
    #[arg(long = "cache-key", value_name = "KEY", global = true)]
    cache_keys: Vec<String>,
    /// The report token's file.
    #[arg(long, value_name = "FILE", global = true)]
    token_file: Option<PathBuf>,
    /// The state directory [default: /var/lib/fleetgate].
    #[arg(long, value_name = "DIR", global = true)]
    state_dir: Option<PathBuf>,
    /// Allow reboots (for systems that need one), inside the configured window.
    #[arg(long, global = true)]
    allow_reboot: bool,
    /// Between polls [default: 5m].
    #[arg(long, value_name = "DURATION", value_parser = parse_span, global = true)]
    poll_interval: Option<std::time::Duration>,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Desired vs current vs booted vs default, boot debt, last result, pending reboot.
    Status {
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Hold upgrades on this host (the agent keeps polling and reporting).
    Suspend {
        /// Why (shown in status and reports).
        #[arg(long, default_value = "suspended by an operator")]
        reason: String,
    },
    /// Let upgrades go on.
    Resume,
}

const EXIT_USAGE: u8 = 2;

fn config(args: &ConfigArgs) -> Result<AgentConfig, ConfigError> {
    let file = match &args.config {
        Some(path) => ConfigFile::load(path)?,
        None if std::path::Path::new(DEFAULT_CONFIG).exists() => {
            ConfigFile::load(std::path::Path::new(DEFAULT_CONFIG))?
        }
        None => ConfigFile::default(),
    };
    let flags = Flags {
        host: args.host.clone(),
        server: args.server.clone(),
        manifest: args.manifest.clone(),
        trusted_keys: args.trusted_keys.clone(),
        caches: args.caches.clone(),
        cache_keys: args.cache_keys.clone(),
        token_file: args.token_file.clone(),
        state_dir: args.state_dir.clone(),
        allow_reboot: args.allow_reboot,
        poll_interval: args.poll_interval,
    };
    AgentConfig::resolve(file, flags)
}

/// Says what went wrong (one JSON document too, with `--json`) and exits `code`.
fn fail(json: bool, code: u8, error: CliError) -> ExitCode {
    if json {
        let mut text = error.to_string();
        let mut cause = std::error::Error::source(&error);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        println!("{}", fleetgate_agent::status::error_document(&text, code));
    }
    eprintln!("{:?}", miette::Report::new(error));
    ExitCode::from(code)
}

/// Runs `fleetgate agent …`.
pub fn run_agent(args: &AgentArgs) -> ExitCode {
    let json = args.json || matches!(args.command, Some(AgentCommand::Status { json: true }));
    let cfg = match config(&args.config) {
        Ok(c) => c,
        Err(e) => {
            let error = CliError::new("the agent's configuration cannot be used").caused_by(e).with_help(
                "fix the setting named above in the configuration file (or its flag); `fleetgate agent --help` and docs/agent.md list them",
            );
            return fail(json, EXIT_USAGE, error);
        }
    };
    match &args.command {
        Some(AgentCommand::Status { json }) => match fleetgate_agent::status::read(&cfg) {
            Ok(s) => {
                if *json {
                    println!("{}", s.to_json());
                } else {
                    print!("{}", s.human());
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(
                *json,
                1,
                CliError::new("cannot read the agent's state").caused_by(e).with_help(
                    "run it as root (the state directory is /var/lib/fleetgate by default), or give --state-dir",
                ),
            ),
        },
        Some(AgentCommand::Suspend { reason }) => {
            match StateDir::open(cfg.agent_dir()).and_then(|d| d.suspend(reason)) {
                Ok(()) => {
                    eprintln!("fleetgate agent: upgrades are suspended on this host ({reason})");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    fail(false, 1, CliError::new("cannot suspend upgrades").caused_by(e).with_help("run it as root"))
                }
            }
        }
        Some(AgentCommand::Resume) => match StateDir::open(cfg.agent_dir()).and_then(|d| d.resume()) {
            Ok(()) => {
                eprintln!("fleetgate agent: upgrades go on");
                ExitCode::SUCCESS
            }
            Err(e) => fail(false, 1, CliError::new("cannot resume upgrades").caused_by(e).with_help("run it as root")),
        },
        None => {
            let opts = RunOptions {
                once: args.once,
                dry_run: args.dry_run,
                exit_when_changed: args.exit_when_changed.clone(),
            };
            match run(&cfg, &opts) {
                Ok(end) => {
                    if let fleetgate_agent::cycle::End::DryRun(text) = &end {
                        eprintln!("fleetgate agent: dry run: {text}");
                    }
                    if json {
                        let status = fleetgate_agent::status::read(&cfg).ok();
                        println!("{}", fleetgate_agent::status::once_document(&end, status.as_ref()));
                    }
                    ExitCode::from(end.exit_code())
                }
                Err(e) => fail(
                    json,
                    1,
                    CliError::new("the agent cannot run").caused_by(e).with_help(
                        "another agent may hold this host (see `fleetgate agent status`), or Nix is missing: give nix_bin_dir",
                    ),
                ),
            }
        }
    }
}
