//! `fleetgate facts`: what fleetgate knows about a host.

use std::process::ExitCode;
use std::time::Duration;

/// Where a host's facts come from, and how to reach it.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// `local` (this machine, read live), `ssh://[user@]host[:port]`, or a
    /// facts JSON file (from `fleetgate facts --json`).
    #[arg(long, value_name = "T")]
    pub target: String,
    /// An ssh_config file for `ssh://` targets (`ssh -F FILE`).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<std::path::PathBuf>,
    /// An extra argument for `ssh`, as deploy-rs' `sshOpts` (repeatable):
    /// `--ssh-opt=-o --ssh-opt=Port=2222`.
    #[arg(long = "ssh-opt", value_name = "ARG", allow_hyphen_values = true)]
    pub ssh_opts: Vec<String>,
    /// Time limit for gathering facts, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
}

impl TargetArgs {
    /// Gathers the facts, or prints why not.
    pub fn facts(&self) -> Result<fleetgate_facts::Facts, ExitCode> {
        let mut opts = Vec::new();
        if let Some(config) = &self.ssh_config {
            opts.push("-F".to_owned());
            opts.push(config.display().to_string());
        }
        opts.extend(self.ssh_opts.iter().cloned());
        fleetgate_facts::from_target(&self.target, opts, Duration::from_secs(self.timeout)).map_err(|e| {
            eprintln!("fleetgate: cannot get facts for {}: {e}", self.target);
            ExitCode::from(2)
        })
    }
}

/// Arguments of `fleetgate facts`.
#[derive(Debug, clap::Args)]
pub struct FactsArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Print the facts as a JSON document (stable; `format` = 1).
    #[arg(long)]
    json: bool,
}

/// Runs `fleetgate facts`: exit 0, or 2 when the facts cannot be had.
pub fn run(args: &FactsArgs) -> ExitCode {
    match args.target.facts() {
        Ok(facts) => {
            if args.json {
                println!("{}", facts.to_json());
            } else {
                print!("{}", fleetgate_facts::render(&facts));
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
