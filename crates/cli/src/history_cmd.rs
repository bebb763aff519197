//! `fleetgate history`: the deploy runs and each host's outcome, read from the
//! history database (read-only, [`fleetgate_deploy::history_query`]).
//!
//! - `fleetgate history` — the newest runs (`--limit`, default [`DEFAULT_LIMIT`]);
//! - `fleetgate history RUN` — one run (`RUN` is an id, a unique prefix of one,
//!   or `last`): per host its outcome, standing, action, phases with timings and
//!   findings; `--host H` keeps one host;
//! - `fleetgate history --host H` — that host across runs, newest first.
//!
//! On a terminal, tables that fit its width (80 columns at least); otherwise plain `key=value`
//! lines; with `--json`, one JSON document ([`history_render`](crate::history_render)).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use fleetgate_deploy::history::default_path;
use fleetgate_deploy::history_query::{BUSY_TIMEOUT, HistoryReadError, HistoryReader, MAX_LIMIT};

use crate::facts_cmd::CliError;

use crate::history_render::{Style, WIDTH, host_view, run_view, runs_view};

/// Runs listed when `--limit` is not given.
pub const DEFAULT_LIMIT: usize = 20;

/// `fleetgate history` arguments.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// A run to show: its id, a unique prefix of it, or `last`. Without it, the runs are listed.
    #[arg(value_name = "RUN")]
    pub run: Option<String>,
    /// Only this host: its outcome in RUN, or without RUN its outcomes across runs.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// At most this many runs (or host records), newest first.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT, value_parser = parse_limit)]
    pub limit: usize,
    /// History database (default: `$XDG_STATE_HOME/fleetgate/history.sqlite`, as `fleetgate deploy`).
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--limit`: 1 to [`MAX_LIMIT`].
fn parse_limit(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Ok(_) => Err(format!("give 1 to {MAX_LIMIT}")),
        Err(e) => Err(format!("not a whole number: {e}")),
    }
}

/// Runs `fleetgate history`: exit 0, or an error (exit 2) when the history
/// cannot be read or has no such run.
pub fn run(args: &HistoryArgs) -> miette::Result<ExitCode> {
    let path = args.history.clone().unwrap_or_else(default_path);
    let reader = HistoryReader::open(&path).map_err(explain)?;
    let style = if args.json {
        Style::Json
    } else if std::io::stdout().is_terminal() {
        let columns = terminal_size::terminal_size().map_or(0, |(terminal_size::Width(w), _)| usize::from(w));
        Style::Table(columns.max(WIDTH))
    } else {
        Style::Plain
    };
    let text = match (&args.run, &args.host) {
        (Some(run), host) => run_view(&reader.run(run, host.as_deref()).map_err(explain)?, style),
        (None, Some(host)) => host_view(host, &reader.host(host, args.limit).map_err(explain)?, style),
        (None, None) => runs_view(&reader.runs(args.limit).map_err(explain)?, style),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// The error with what to do about it.
fn explain(e: HistoryReadError) -> CliError {
    let other = "to read another database, pass --history FILE";
    let help = match &e {
        HistoryReadError::Missing { .. } => {
            format!("no deploy was recorded there yet (`fleetgate deploy` creates it with its first run); {other}")
        }
        HistoryReadError::NotADatabase { path, .. } | HistoryReadError::Foreign { path, .. } => format!(
            "to start a new history, move it aside (`mv {0} {0}.bad`): the next `fleetgate deploy` creates a new one; {other}",
            path.display()
        ),
        HistoryReadError::Unreadable { .. } => format!("check the file's permissions; {other}"),
        HistoryReadError::NoSuchRun { .. } => "`fleetgate history` lists the runs; `last` names the newest".to_owned(),
        HistoryReadError::AmbiguousRun { .. } => "give more characters of the run id".to_owned(),
        _ => format!(
            "a running deploy may hold the database (waited {} s), or it is damaged: try again",
            BUSY_TIMEOUT.as_secs()
        ),
    };
    let message = e.to_string();
    match e {
        HistoryReadError::NotADatabase { source, .. } | HistoryReadError::Query { source, .. } => {
            CliError::new(message).caused_by(source)
        }
        _ => CliError::new(message),
    }
    .with_help(help)
}
