//! `fleetgate channel …`: argument parsing and error reporting (miette) for the channel
//! front ends. Every decision lives in the library modules.
//!
//! Exit codes: 0 success (including "already at" / "already contains" and skipped Hydra events), 1 a
//! promotion was attempted and failed or was refused, 2 bad input or configuration
//! (nothing attempted; see [`ChannelError::exit_code`]; clap's usage errors are 2 too).
//! With `--json`, `promote`, `hydra-hook` and `sync` print one JSON document on stdout —
//! also when they fail — and keep the human-readable report on stderr.
use std::ffi::OsString;
use std::io::{IsTerminal as _, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use fleetgate_nix::{Nix, PublicKey, StoreUri};

use crate::branch::BranchPolicy;
use crate::error::ChannelError;
use crate::git::GitSettings;
use crate::hydra::event::HydraEvent;
use crate::hydra::hook::{self, DEFAULT_JOB_PATTERN, HookConfig, HookOutcome};
use crate::manifest::SignedManifest;
use crate::promote::{ChannelConfig, PromoteOutcome, PromoteRequest, promote};
use crate::secret::Secret;
use crate::server::{ServerConfig, tokens::HostTokens};
use crate::sync::{HostSync, SyncRequest};

/// Arguments of `fleetgate channel`.
#[derive(Debug, clap::Args)]
pub struct ChannelArgs {
    #[command(subcommand)]
    command: ChannelCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ChannelCommand {
    /// Promote one host: closure to the cache (verified), branch nixos-tested-<host>
    /// fast-forwarded, signed manifest published.
    Promote(PromoteArgs),
    /// Drop-in command for Hydra's RunCommand plugin (reads $HYDRA_JSON).
    HydraHook(HydraHookArgs),
    /// Promote every host whose system at COMMIT is already in the cache.
    Sync(SyncArgs),
    /// Run the HTTP service (GitHub hook, manifests, reports, fleet status).
    Serve(ServeArgs),
    /// Make a Nix signing key pair (nix-store --generate-binary-cache-key).
    Keygen(KeygenArgs),
    /// Verify a signed manifest document and print the manifest.
    Verify(VerifyArgs),
}

/// Where promotions go and how.
#[derive(Debug, clap::Args)]
struct ChannelOpts {
    /// Channel git repository: a path or URL (no credentials in it).
    #[arg(long, env = "FLEETGATE_REPO")]
    repo: Option<String>,
    /// Binary cache store URI (file://, http(s)://, s3://).
    #[arg(long, env = "FLEETGATE_CACHE")]
    cache: Option<String>,
    /// Nix secret signing key file (signs the cache and the manifests).
    #[arg(long, env = "FLEETGATE_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// Public key narinfos must verify with, `name:base64` or a file holding it
    /// (default: the signing key's).
    #[arg(long)]
    public_key: Option<String>,
    /// State directory for repository mirrors and locks.
    #[arg(long, env = "STATE_DIRECTORY", default_value = "/var/lib/fleetgate/channel")]
    state_dir: PathBuf,
    /// File holding the git HTTP token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// systemd credential name holding the git HTTP token ($CREDENTIALS_DIRECTORY/NAME).
    #[arg(long)]
    token_credential: Option<String>,
    /// Also write <host>.json manifests into this directory.
    #[arg(long)]
    manifest_dir: Option<PathBuf>,
    /// Push attempts before a rejected push is reported.
    #[arg(long, default_value_t = 5)]
    push_attempts: u32,
    /// Seconds to wait for another promotion of the same repository.
    #[arg(long, default_value_t = 600)]
    lock_timeout: u64,
    /// Seconds each git command may take.
    #[arg(long, default_value_t = 300)]
    git_timeout: u64,
    /// Seconds each nix command may take.
    #[arg(long, default_value_t = 3600)]
    nix_timeout: u64,
    /// Extra `--option NAME VALUE` for every nix call, as NAME=VALUE (repeatable).
    #[arg(long = "nix-option", value_name = "NAME=VALUE")]
    nix_options: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct PromoteArgs {
    /// Host name (its branch is nixos-tested-<host>).
    #[arg(long)]
    host: String,
    /// Full commit id CI built.
    #[arg(long)]
    commit: String,
    /// The system's top-level store path.
    #[arg(long)]
    system: String,
    /// CI build reference recorded in the manifest.
    #[arg(long)]
    build: Option<String>,
    /// Allow rewinding the branch or moving it sideways.
    #[arg(long)]
    force: bool,
    /// Print the outcome (or the error) as one JSON document on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    opts: ChannelOpts,
}

#[derive(Debug, clap::Args)]
struct HydraHookArgs {
    /// The event file (Hydra sets $HYDRA_JSON).
    #[arg(long, env = "HYDRA_JSON")]
    event: PathBuf,
    /// Jobs to promote; the `host` group names the host.
    #[arg(long, default_value = DEFAULT_JOB_PATTERN)]
    job_pattern: String,
    /// Only builds of this project.
    #[arg(long)]
    project: Option<String>,
    /// Only builds of this jobset.
    #[arg(long)]
    jobset: Option<String>,
    /// Hydra base URL (commit fallback through its API, and build links).
    #[arg(long)]
    hydra_url: Option<String>,
    /// Hydra database name for the psql fallback (e.g. `hydra`).
    #[arg(long)]
    hydra_db: Option<String>,
    /// Print the outcome, the skip reason or the error as one JSON document on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    opts: ChannelOpts,
}

#[derive(Debug, clap::Args)]
struct SyncArgs {
    /// Flake reference without revision (git+https://…, github:o/r, git+file:///…).
    #[arg(long)]
    flake: String,
    /// Full commit id to evaluate.
    #[arg(long)]
    commit: String,
    /// Only these hosts (default: all of --hosts-attr).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Attribute set holding the hosts.
    #[arg(long, default_value = "nixosConfigurations")]
    hosts_attr: String,
    /// Attribute of each host that is its system.
    #[arg(long, default_value = "config.system.build.toplevel")]
    system_attr: String,
    /// Print every host's result (or the error) as one JSON document on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    opts: ChannelOpts,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8419")]
    listen: SocketAddr,
    /// SQLite database file.
    #[arg(long, default_value = "/var/lib/fleetgate/channel/serve.sqlite")]
    db: PathBuf,
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
    #[command(flatten)]
    opts: ChannelOpts,
}

#[derive(Debug, clap::Args)]
struct KeygenArgs {
    /// Key name, conventionally `<cache host name>-<n>`.
    #[arg(long)]
    name: String,
    /// Where to write the secret key.
    #[arg(long)]
    secret_key_file: PathBuf,
    /// Where to write the public key.
    #[arg(long)]
    public_key_file: PathBuf,
    /// Print the public key (or the error) as one JSON document on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// Public key: the key text `name:base64` (as in nix.conf's trusted-public-keys) or
    /// a file holding it.
    #[arg(long)]
    public_key: String,
    /// The manifest document.
    manifest: PathBuf,
    /// Print the verified manifest (or the error) as one JSON document on stdout.
    #[arg(long)]
    json: bool,
}

/// True if a command line asks for JSON output (`--json` before any `--`). Used when
/// clap itself refused the command line, so there are no parsed arguments to ask.
pub fn wants_json(args: &[OsString]) -> bool {
    args.iter().take_while(|a| *a != "--").any(|a| a == "--json")
}

/// The JSON document of a command line clap refused: `{"result":"failed","error":…,
/// "exit_code":2}`, the same shape as every other channel failure. `error` is clap's
/// message without the `error:` prefix, the usage and the `--help` hint.
pub fn usage_error_json(e: &clap::Error) -> serde_json::Value {
    let text = e.render().to_string();
    let message = text.split("\nUsage:").next().unwrap_or(&text);
    let message = message.strip_prefix("error: ").unwrap_or(message);
    // One line: a list introduced by `…:` continues with spaces, other lines (clap's
    // `tip:`) are separate sentences.
    let mut one_line = String::new();
    for line in message.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !one_line.is_empty() {
            one_line.push_str(if one_line.ends_with(':') { " " } else { "; " });
        }
        one_line.push_str(line);
    }
    let message = one_line;
    serde_json::json!({ "result": "failed", "error": message, "exit_code": EXIT_USAGE })
}

/// What a front end does when clap refuses the command line of a channel command:
/// `--help` and `--version` print as usual; an error goes to stderr as clap renders it
/// and, with `--json`, also as one JSON document on stdout ([`usage_error_json`]).
/// `args` are the arguments after the program name.
pub fn usage_error(e: &clap::Error, args: &[OsString]) -> ExitCode {
    if !e.use_stderr() {
        // --help, --version: not errors.
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if wants_json(args) {
        print_json(&mut std::io::stdout(), &usage_error_json(e));
    }
    let _ = e.print();
    ExitCode::from(EXIT_USAGE)
}

/// Exit code of bad input and configuration, clap's usage errors included.
pub const EXIT_USAGE: u8 = 2;

fn log_line(line: &str) {
    eprintln!("fleetgate channel: {line}");
}

fn report(e: ChannelError) -> ExitCode {
    let code = e.exit_code();
    eprint!("{}", render(e));
    ExitCode::from(code)
}

/// The error as miette draws it: in colour for a terminal, without colour and at a
/// fixed width (100 columns) for logs, so that CI logs and tests see the same text.
fn render(e: ChannelError) -> String {
    let report = miette::Report::new(e);
    if std::io::stderr().is_terminal() {
        return format!("{report:?}\n");
    }
    let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor()).with_width(100);
    let mut text = String::new();
    if handler.render_report(&mut text, report.as_ref()).is_err() {
        text = format!("{}\n", report.chain().map(ToString::to_string).collect::<Vec<_>>().join(": "));
    }
    text
}

/// The JSON document of a failure.
fn error_json(e: &ChannelError) -> serde_json::Value {
    serde_json::json!({
        "result": "failed",
        "error": e.chain(),
        "exit_code": e.exit_code(),
    })
}

/// The JSON document of a promotion: `{"result":"promoted", …the outcome…}`.
fn outcome_json(o: &PromoteOutcome) -> serde_json::Value {
    tagged(serde_json::to_value(o).unwrap_or_default(), "result", "promoted")
}

/// `v` (an object) with one more member.
fn tagged(mut v: serde_json::Value, key: &str, value: &str) -> serde_json::Value {
    if let Some(map) = v.as_object_mut() {
        map.insert(key.into(), value.into());
    }
    v
}

fn print_json(out: &mut dyn Write, v: &serde_json::Value) {
    // A closed stdout must not turn a promotion into a failure.
    let _ = writeln!(out, "{v}");
}

/// Runs `fleetgate channel`; returns the process exit code.
pub fn run(args: ChannelArgs) -> ExitCode {
    run_with_output(args, &mut std::io::stdout())
}

/// [`run`], printing results to `out` instead of stdout (progress and errors still go
/// to stderr).
pub fn run_with_output(args: ChannelArgs, out: &mut dyn Write) -> ExitCode {
    let json = match &args.command {
        ChannelCommand::Promote(a) => a.json,
        ChannelCommand::HydraHook(a) => a.json,
        ChannelCommand::Sync(a) => a.json,
        ChannelCommand::Keygen(a) => a.json,
        ChannelCommand::Verify(a) => a.json,
        ChannelCommand::Serve(_) => false,
    };
    let result = match args.command {
        ChannelCommand::Promote(a) => run_promote(a, out),
        ChannelCommand::HydraHook(a) => run_hydra_hook(a, out),
        ChannelCommand::Sync(a) => run_sync(a, out),
        ChannelCommand::Serve(a) => run_serve(a),
        ChannelCommand::Keygen(a) => run_keygen(a, out),
        ChannelCommand::Verify(a) => run_verify(a, out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if json {
                print_json(out, &error_json(&e));
            }
            report(e)
        }
    }
}

fn nix_for(opts: &ChannelOpts) -> Result<Nix, ChannelError> {
    let mut nix = Nix::detect()
        .map_err(ChannelError::Nix)?
        .with_timeout(Duration::from_secs(opts.nix_timeout))
        // Verification must see the cache as it is now, not a cached answer.
        .with_option("narinfo-cache-negative-ttl", "0")
        .with_option("narinfo-cache-positive-ttl", "0");
    for o in &opts.nix_options {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| ChannelError::Config(format!("--nix-option {o:?}: expected NAME=VALUE")))?;
        nix = nix.with_option(k, v);
    }
    Ok(nix)
}

fn required<'a, T>(v: &'a Option<T>, flag: &str) -> Result<&'a T, ChannelError> {
    v.as_ref().ok_or_else(|| ChannelError::Config(format!("{flag} is required")))
}

fn channel_config(opts: &ChannelOpts) -> Result<ChannelConfig, ChannelError> {
    let repo = required(&opts.repo, "--repo")?;
    let cache = StoreUri::parse(required(&opts.cache, "--cache")?)
        .map_err(|e| ChannelError::Config(format!("--cache: {e}")))?;
    let key = required(&opts.signing_key, "--signing-key")?;
    let mut cfg = ChannelConfig::new(repo, cache, key, &opts.state_dir)?;
    if let Some(pk) = &opts.public_key {
        cfg.public_key = public_key_arg(pk)?;
    }
    cfg.git = GitSettings {
        timeout: Duration::from_secs(opts.git_timeout),
        token: Secret::load_optional("git token", opts.token_file.as_deref(), opts.token_credential.as_deref())?,
        ..GitSettings::default()
    };
    cfg.policy = BranchPolicy {
        force: false,
        max_attempts: opts.push_attempts.max(1),
        lock_timeout: Duration::from_secs(opts.lock_timeout),
    };
    cfg.manifest_dir = opts.manifest_dir.clone();
    Ok(cfg)
}

fn print_outcome(out: &mut dyn Write, o: &PromoteOutcome) {
    let _ = writeln!(out, "{}: {}", o.branch, o.movement.describe(&o.commit));
}

fn run_promote(a: PromoteArgs, out: &mut dyn Write) -> Result<ExitCode, ChannelError> {
    let req = PromoteRequest::parse(&a.host, &a.commit, &a.system, a.build.as_deref(), a.force)?;
    let cfg = channel_config(&a.opts)?;
    let nix = nix_for(&a.opts)?;
    let outcome = promote(&nix, &cfg, &req, &log_line)?;
    if a.json {
        print_json(out, &outcome_json(&outcome));
    } else {
        print_outcome(out, &outcome);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_skip(out: &mut dyn Write, json: bool, reason: &str) {
    if json {
        print_json(out, &serde_json::json!({ "result": "skipped", "reason": reason }));
    } else {
        let _ = writeln!(out, "skipped: {reason}");
    }
}

fn run_hydra_hook(a: HydraHookArgs, out: &mut dyn Write) -> Result<ExitCode, ChannelError> {
    let event = HydraEvent::read(&a.event)?;
    let mut hook_cfg = HookConfig::new(&a.job_pattern)?;
    hook_cfg.project = a.project;
    hook_cfg.jobset = a.jobset;
    hook_cfg.hydra_url = a.hydra_url;
    hook_cfg.hydra_db = a.hydra_db;
    // Decide before touching Nix or git: skipped events need neither.
    if let hook::Decision::Skip(reason) = hook::decide(&event, &hook_cfg)? {
        print_skip(out, a.json, &reason);
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = channel_config(&a.opts)?;
    let nix = nix_for(&a.opts)?;
    match hook::run(&nix, &cfg, &hook_cfg, &event, &log_line)? {
        HookOutcome::Skipped(reason) => print_skip(out, a.json, &reason),
        HookOutcome::Promoted(o) if a.json => print_json(out, &outcome_json(&o)),
        HookOutcome::Promoted(o) => print_outcome(out, &o),
    }
    Ok(ExitCode::SUCCESS)
}

fn run_sync(a: SyncArgs, out: &mut dyn Write) -> Result<ExitCode, ChannelError> {
    let commit = crate::commit::CommitId::parse(&a.commit)?;
    let cfg = channel_config(&a.opts)?;
    let nix = nix_for(&a.opts)?;
    let req = SyncRequest {
        flake: a.flake,
        commit: commit.clone(),
        hosts: (!a.hosts.is_empty()).then_some(a.hosts),
        hosts_attr: a.hosts_attr,
        system_attr: a.system_attr,
    };
    let results = crate::sync::run(&nix, &cfg, &req, &log_line)?;
    Ok(report_sync(out, a.json, &commit, results))
}

/// Prints the per-host results of a sync; the exit code is the worst of the failures'
/// ([`ChannelError::exit_code`]), 0 if none failed.
pub(crate) fn report_sync(
    out: &mut dyn Write,
    json: bool,
    commit: &crate::commit::CommitId,
    results: Vec<(String, HostSync)>,
) -> ExitCode {
    let mut code = 0u8;
    let mut hosts = Vec::new();
    for (host, r) in results {
        match r {
            HostSync::Promoted(o) if json => hosts.push(tagged(outcome_json(&o), "host", &host)),
            HostSync::Promoted(o) => print_outcome(out, &o),
            HostSync::NotCached(p) => {
                if json {
                    hosts.push(serde_json::json!({
                        "host": host, "result": "not_cached", "system": p,
                    }));
                } else {
                    let _ = writeln!(out, "{host}: {p} not in the cache, skipped");
                }
            }
            HostSync::Failed(e) => {
                code = code.max(e.exit_code());
                if json {
                    hosts.push(tagged(error_json(&e), "host", &host));
                } else {
                    let _ = writeln!(out, "{host}: failed");
                }
                eprint!("{host}: {}", render(e));
            }
        }
    }
    if json {
        print_json(
            out,
            &serde_json::json!({
                "result": if code == 0 { "synced" } else { "failed" },
                "commit": commit,
                "exit_code": code,
                "hosts": hosts,
            }),
        );
    }
    ExitCode::from(code)
}

fn run_serve(a: ServeArgs) -> Result<ExitCode, ChannelError> {
    let hook_secret =
        Secret::load_optional("webhook secret", a.hook_secret_file.as_deref(), a.hook_secret_credential.as_deref())?;
    let host_tokens =
        match Secret::load_optional("host tokens", a.host_tokens_file.as_deref(), a.host_tokens_credential.as_deref())?
        {
            Some(text) => HostTokens::parse(&text)?,
            None => HostTokens::default(),
        };
    let channel = if a.opts.repo.is_some() { Some((nix_for(&a.opts)?, channel_config(&a.opts)?)) } else { None };
    if let Some(dir) = a.db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ChannelError::io("creating", dir, e))?;
    }
    let cfg = ServerConfig {
        listen: a.listen,
        db: a.db,
        hook_secret,
        host_tokens,
        channel,
        max_promotions: a.max_promotions,
    };
    crate::server::serve_forever(cfg, Arc::new(log_line))?;
    Ok(ExitCode::SUCCESS)
}

fn run_keygen(a: KeygenArgs, out: &mut dyn Write) -> Result<ExitCode, ChannelError> {
    for p in [&a.secret_key_file, &a.public_key_file] {
        if p.exists() {
            return Err(ChannelError::Config(format!("{} already exists; refusing to overwrite a key", p.display())));
        }
    }
    fleetgate_nix::keys::check_key_name(&a.name).map_err(|e| ChannelError::Config(format!("--name: {e}")))?;
    let nix = Nix::detect().map_err(ChannelError::Nix)?;
    nix.generate_key_pair(&a.name, &a.secret_key_file, &a.public_key_file).map_err(ChannelError::Nix)?;
    let pk = PublicKey::from_file(&a.public_key_file).map_err(|e| ChannelError::Nix(e.into()))?;
    if a.json {
        let doc = serde_json::json!({
            "result": "generated",
            "public_key": pk.to_string(),
            "secret_key_file": a.secret_key_file,
            "public_key_file": a.public_key_file,
        });
        print_json(out, &doc);
    } else {
        let _ = writeln!(out, "{pk}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A `--public-key` value: the key text `name:base64`, or a file holding it. A value that
/// names an existing file is read; anything else must be the key itself.
fn public_key_arg(given: &str) -> Result<PublicKey, ChannelError> {
    let path = Path::new(given);
    if path.exists() {
        return PublicKey::from_file(path)
            .map_err(|e| ChannelError::PublicKey { given: format!("{given:?}"), source: e.into() });
    }
    match PublicKey::parse(given) {
        // No `name:` at all: a file name that does not exist, most likely.
        Err(fleetgate_nix::KeyError::NoName | fleetgate_nix::KeyError::Empty) => Err(ChannelError::Config(format!(
            "--public-key {given:?} is neither an existing file nor a key `name:base64`"
        ))),
        other => other.map_err(|e| ChannelError::PublicKey { given: "(key text)".into(), source: e.into() }),
    }
}

/// Largest manifest document `verify` reads (they are about 1 KiB).
const MAX_MANIFEST: u64 = 1 << 20;

fn run_verify(a: VerifyArgs, out: &mut dyn Write) -> Result<ExitCode, ChannelError> {
    let pk = public_key_arg(&a.public_key)?;
    let bytes = fleetgate_nix::read_small_file(&a.manifest, MAX_MANIFEST)
        .map_err(|source| ChannelError::InputFile { what: "the manifest", source })?;
    let m = SignedManifest::parse(&bytes)?.verify(&pk)?;
    if a.json {
        print_json(out, &serde_json::json!({ "result": "verified", "key": pk.name(), "manifest": m }));
    } else {
        let text = serde_json::to_string_pretty(&m).map_err(|e| ChannelError::ManifestFormat(e.to_string()))?;
        let _ = writeln!(out, "{text}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::CommitId;

    fn sync_report(results: Vec<(String, HostSync)>) -> (ExitCode, serde_json::Value) {
        let commit = CommitId::parse(&"a".repeat(40)).unwrap();
        let mut out = Vec::new();
        let code = report_sync(&mut out, true, &commit, results);
        (code, serde_json::from_slice(&out).unwrap())
    }

    #[test]
    fn sync_json_lists_every_host_and_the_exit_code_is_the_worst_failure() {
        let store = "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-sys".to_owned();
        let (code, v) = sync_report(vec![("beta".into(), HostSync::NotCached(store.clone()))]);
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(v["result"], "synced");
        assert_eq!(v["commit"], "a".repeat(40));
        assert_eq!(v["hosts"][0]["host"], "beta");
        assert_eq!(v["hosts"][0]["result"], "not_cached");
        assert_eq!(v["hosts"][0]["system"], store.as_str());

        let not_found = ChannelError::CommitNotFound { commit: "a".repeat(40), repo: "r".into() };
        let (code, v) = sync_report(vec![
            ("beta".into(), HostSync::NotCached(store)),
            ("gamma".into(), HostSync::Failed(not_found)),
        ]);
        assert_eq!(code, ExitCode::FAILURE);
        assert_eq!(v["result"], "failed");
        assert_eq!(v["hosts"][1]["host"], "gamma");
        assert_eq!(v["hosts"][1]["exit_code"], 1);
        assert!(v["hosts"][1]["error"].as_str().unwrap().contains("is not in r"), "{v}");

        let bad = ChannelError::BadHost { host: "-x".into() };
        let not_found = ChannelError::CommitNotFound { commit: "a".repeat(40), repo: "r".into() };
        let (code, v) =
            sync_report(vec![("gamma".into(), HostSync::Failed(not_found)), ("-x".into(), HostSync::Failed(bad))]);
        assert_eq!(code, ExitCode::from(2));
        assert_eq!(v["exit_code"], 2);
    }

    #[test]
    fn exit_codes_separate_bad_input_from_failed_promotions() {
        assert_eq!(ChannelError::BadHost { host: "x".into() }.exit_code(), 2);
        assert_eq!(ChannelError::Config("--repo is required".into()).exit_code(), 2);
        assert_eq!(ChannelError::HydraEvent("x".into()).exit_code(), 2);
        let diverged = ChannelError::Diverged { branch: "b".into(), current: "c".into(), commit: "d".into() };
        assert_eq!(diverged.exit_code(), 1);
        assert_eq!(ChannelError::Database("locked".into()).exit_code(), 1);
    }
}
