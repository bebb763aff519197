//! `fleetgate facts`: what fleetgate knows about a host.

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use fleetgate_facts::FactsError;

/// What `--target` accepts, as the docs say it.
const TARGET_FORMS: &str =
    "T must be `local`, `ssh://[user@]host[:port]`, or a facts file from `fleetgate facts --json`";

/// An error of `fleetgate facts` or `fleetgate check`, for miette: what
/// failed, why (the source chain), and what to do about it.
#[derive(Debug)]
pub struct CliError {
    message: String,
    source: Option<Cause>,
    help: Option<String>,
}

/// One link of an error's source chain, as text. Errors of some crates
/// repeat their source in their own message; such a source is dropped so
/// that nothing is printed twice.
#[derive(Debug)]
struct Cause {
    text: String,
    next: Option<Box<Cause>>,
}

impl Cause {
    fn of(error: &(dyn std::error::Error + 'static)) -> Cause {
        let mut chain: Option<Box<Cause>> = None;
        for text in fleetgate_check::error_messages(error).into_iter().rev() {
            chain = Some(Box::new(Cause { text, next: chain }));
        }
        chain.map_or_else(|| Cause { text: String::new(), next: None }, |c| *c)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.next.as_deref().map(|c| c as &(dyn std::error::Error + 'static))
    }
}

impl CliError {
    /// An error with a message only.
    pub fn new(message: impl Into<String>) -> CliError {
        CliError { message: message.into(), source: None, help: None }
    }

    /// Adds the error that caused it.
    #[must_use]
    pub fn caused_by(mut self, source: impl std::error::Error + 'static) -> CliError {
        self.source = Some(Cause::of(&source));
        self
    }

    /// Adds what to do about it.
    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> CliError {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl miette::Diagnostic for CliError {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
}

/// `--timeout`, `--deadline`: a whole number of seconds, at least 1.
pub fn parse_seconds(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("a time limit of 0 seconds leaves no time: give at least 1 second".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number of seconds: {e}")),
    }
}

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
    /// Time limit for gathering facts, in seconds (at least 1).
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = parse_seconds)]
    pub timeout: u64,
}

impl TargetArgs {
    /// Gathers the facts.
    ///
    /// # Errors
    /// What went wrong, with help.
    pub fn facts(&self) -> Result<fleetgate_facts::Facts, CliError> {
        self.facts_within(Duration::MAX)
    }

    /// Gathers the facts, in at most `--timeout` and at most `limit`.
    ///
    /// # Errors
    /// What went wrong, with help.
    pub fn facts_within(&self, limit: Duration) -> Result<fleetgate_facts::Facts, CliError> {
        let mut opts = Vec::new();
        if let Some(config) = &self.ssh_config {
            opts.push("-F".to_owned());
            opts.push(config.display().to_string());
        }
        opts.extend(self.ssh_opts.iter().cloned());
        let timeout = Duration::from_secs(self.timeout).min(limit);
        fleetgate_facts::from_target(&self.target, opts, timeout).map_err(|e| self.explain(e))
    }

    fn explain(&self, e: FactsError) -> CliError {
        let help = match &e {
            FactsError::NoSuchTarget { target } => {
                let host = target.rsplit('@').next().unwrap_or(target);
                if !target.contains('/') && !target.contains(".json") {
                    format!("{TARGET_FORMS}; for the host {host}, try `--target ssh://{target}`")
                } else {
                    TARGET_FORMS.to_owned()
                }
            }
            FactsError::Transport(t) if t.is_unreachable() => {
                "check that the host is up and that `ssh` logs in without a prompt (keys, known hosts; --ssh-config, --ssh-opt)".to_owned()
            }
            FactsError::Transport(fleetgate_facts::TransportError::Timeout { .. }) => {
                format!("the facts took longer than --timeout {}s: raise it, or check the host's load", self.timeout)
            }
            FactsError::Transport(fleetgate_facts::TransportError::InvalidArgument(_)) => TARGET_FORMS.to_owned(),
            FactsError::Read(_) | FactsError::Json { .. } | FactsError::Format { .. } => {
                "write the file with `fleetgate facts --json --target …`, or pass `local` or `ssh://…`".to_owned()
            }
            _ => TARGET_FORMS.to_owned(),
        };
        CliError::new(format!("cannot get facts for {}", self.target)).caused_by(e).with_help(help)
    }
}

/// Arguments of `fleetgate facts`.
#[derive(Debug, clap::Args)]
pub struct FactsArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Print the facts as a JSON document (stable; `format` = 1).
    #[arg(long)]
    pub json: bool,
}

/// Runs `fleetgate facts`: exit 0, or an error (exit 2) when the facts cannot be had.
pub fn run(args: &FactsArgs) -> miette::Result<ExitCode> {
    let facts = args.target.facts()?;
    if args.json {
        println!("{}", facts.to_json());
    } else {
        print!("{}", fleetgate_facts::render(&facts));
    }
    Ok(ExitCode::SUCCESS)
}
