//! `fleetgate channel …` with `serve`: the channel crate's commands (promote,
//! hydra-hook, sync, keygen, verify) plus the HTTP service of this crate. The `fleetgate`
//! binary and `fleetgate-serve` parse these arguments; every decision lives in the library.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use fleetgate_channel::ChannelError;
use fleetgate_channel::cli::{ChannelCommand, ChannelOpts, channel_config, nix_for, report};
use fleetgate_channel::secret::Secret;

use fleetgate_status::Thresholds;

use crate::auth::{MAX_READ_TOKENS_FILE, ReadTokens};
use crate::tokens::{HostTokens, MAX_TOKENS_FILE};
use crate::{Limits, ServerConfig, StoreConfig};

/// Arguments of `fleetgate channel`.
#[derive(Debug, clap::Args)]
pub struct ChannelArgs {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
enum Command {
    #[command(flatten)]
    Channel(ChannelCommand),
    /// Run the HTTP service (GitHub hook, manifests, reports, fleet status).
    Serve(ServeArgs),
}

/// Options of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8419")]
    listen: SocketAddr,
    /// SQLite database file.
    #[arg(long, default_value = "/var/lib/fleetgate/channel/serve.sqlite")]
    db: PathBuf,
    /// PostgreSQL instead of SQLite, for several serve processes sharing one database: a
    /// `postgresql://` URL or a `host=… dbname=…` string (password from
    /// --postgres-password-file, never on the command line).
    #[arg(long, value_name = "CONNINFO")]
    postgres: Option<String>,
    /// File holding the PostgreSQL password.
    #[arg(long)]
    postgres_password_file: Option<PathBuf>,
    /// File with `<name> <token> [<host glob>,…]` lines: who may read the status and the
    /// dashboard (each host's report token reads its own host).
    #[arg(long)]
    read_tokens_file: Option<PathBuf>,
    /// systemd credential holding the read tokens file.
    #[arg(long)]
    read_tokens_credential: Option<String>,
    /// Seconds without news after which a host is `stale`.
    #[arg(long, default_value_t = 3600)]
    stale_after: u64,
    /// File holding the webhook HMAC secret.
    #[arg(long)]
    hook_secret_file: Option<PathBuf>,
    /// systemd credential holding the webhook HMAC secret.
    #[arg(long)]
    hook_secret_credential: Option<String>,
    /// File with `<host> <token>` or `<host> sha256:<hex>` lines.
    #[arg(long)]
    host_tokens_file: Option<PathBuf>,
    /// systemd credential holding the host token file.
    #[arg(long)]
    host_tokens_credential: Option<String>,
    /// Hook promotions running at once (more wait in the job queue, up to 64).
    #[arg(long, default_value_t = 2)]
    max_promotions: usize,
    /// Seconds a client has to send a request's headers (also: the most a kept-alive
    /// connection may stay idle).
    #[arg(long, default_value_t = 10)]
    header_timeout: u64,
    /// Seconds a client has to send a request's body after its headers.
    #[arg(long, default_value_t = 30)]
    body_timeout: u64,
    /// Connections served at once; more are answered 503 and closed.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Seconds running promotions may take to finish on SIGTERM/SIGINT before the process
    /// exits anyway (keep it below the unit's TimeoutStopSec=).
    #[arg(long, default_value_t = 80)]
    shutdown_timeout: u64,
    #[command(flatten)]
    opts: ChannelOpts,
}

impl ServeArgs {
    /// The service's limits; timeouts and the connection cap must be at least 1.
    fn limits(&self) -> Result<Limits, ChannelError> {
        let positive = |n: u64, flag: &str| {
            if n == 0 { Err(ChannelError::Config(format!("{flag} must be at least 1"))) } else { Ok(n) }
        };
        Ok(Limits {
            header_timeout: Duration::from_secs(positive(self.header_timeout, "--header-timeout")?),
            body_timeout: Duration::from_secs(positive(self.body_timeout, "--body-timeout")?),
            max_connections: usize::try_from(positive(self.max_connections as u64, "--max-connections")?)
                .unwrap_or(usize::MAX),
            job_deadline: Duration::from_secs(self.shutdown_timeout),
            ..Limits::default()
        })
    }
}

/// Runs `fleetgate channel`; returns the process exit code.
pub fn run(args: ChannelArgs) -> ExitCode {
    match args.command {
        Command::Channel(command) => fleetgate_channel::cli::run_command(command, &mut std::io::stdout()),
        Command::Serve(a) => run_serve(a),
    }
}

/// Runs `serve` alone (`fleetgate-serve`).
pub fn run_serve(a: ServeArgs) -> ExitCode {
    match serve(a) {
        Ok(code) => code,
        Err(e) => report(e),
    }
}

fn log_line(line: &str) {
    eprintln!("fleetgate channel: {line}");
}

fn serve(a: ServeArgs) -> Result<ExitCode, ChannelError> {
    let hook_secret =
        Secret::load_optional("webhook secret", a.hook_secret_file.as_deref(), a.hook_secret_credential.as_deref())?;
    let host_tokens = match Secret::load_optional_text(
        "host tokens",
        a.host_tokens_file.as_deref(),
        a.host_tokens_credential.as_deref(),
        MAX_TOKENS_FILE,
    )? {
        Some(text) => HostTokens::parse(&text)?,
        None => HostTokens::default(),
    };
    let read_tokens = match Secret::load_optional_text(
        "read tokens",
        a.read_tokens_file.as_deref(),
        a.read_tokens_credential.as_deref(),
        MAX_READ_TOKENS_FILE,
    )? {
        Some(text) => ReadTokens::parse(&text)?,
        None => ReadTokens::default(),
    };
    let limits = a.limits()?;
    if a.stale_after == 0 {
        return Err(ChannelError::Config("--stale-after must be at least 1".into()));
    }
    let thresholds = Thresholds { stale_after: i64::try_from(a.stale_after).unwrap_or(i64::MAX) };
    let store = match &a.postgres {
        Some(conninfo) => StoreConfig::Postgres(postgres_conninfo(conninfo, a.postgres_password_file.as_deref())?),
        None => {
            if let Some(dir) = a.db.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| ChannelError::io("creating", dir, e))?;
            }
            StoreConfig::Sqlite(a.db.clone())
        }
    };
    let channel =
        if a.opts.promotion_configured() { Some((nix_for(&a.opts)?, channel_config(&a.opts)?)) } else { None };
    let cfg = ServerConfig {
        listen: a.listen,
        store,
        read_tokens,
        thresholds,
        hook_secret,
        host_tokens,
        channel,
        max_promotions: a.max_promotions,
        limits,
    };
    crate::serve_forever(cfg, Arc::new(log_line))?;
    Ok(ExitCode::SUCCESS)
}

/// The connection string with the password from `password_file` (a URL with a password
/// in it is refused: it would show in `ps`).
fn postgres_conninfo(conninfo: &str, password_file: Option<&std::path::Path>) -> Result<String, ChannelError> {
    let parsed: ::postgres::Config = conninfo.parse().map_err(|e| ChannelError::Config(format!("--postgres: {e}")))?;
    if parsed.get_password().is_some() {
        return Err(ChannelError::Config(
            "--postgres must not hold the password (it would show in ps): use --postgres-password-file".into(),
        ));
    }
    let Some(file) = password_file else { return Ok(conninfo.to_owned()) };
    let password = Secret::load_optional_text("PostgreSQL password", Some(file), None, 4096)?
        .map(|s| s.expose().trim_end_matches(['\n', '\r']).to_owned())
        .unwrap_or_default();
    // key=value form: quoted, with \ and ' escaped (libpq's rules, which the crate follows).
    let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
    if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        return Err(ChannelError::Config(
            "--postgres-password-file needs the key=value form of --postgres (host=… user=… dbname=…)".into(),
        ));
    }
    Ok(format!("{conninfo} password='{quoted}'"))
}
