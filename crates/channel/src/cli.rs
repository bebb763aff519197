//! `fleetgate channel …`: argument parsing and error reporting (miette) for the channel
//! front ends. Every decision lives in the library modules.
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
    /// Public key file narinfos must verify with (default: the signing key's).
    #[arg(long)]
    public_key: Option<PathBuf>,
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
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// Public key file (`name:base64`).
    #[arg(long)]
    public_key: PathBuf,
    /// The manifest document.
    manifest: PathBuf,
}

fn log_line(line: &str) {
    eprintln!("fleetgate channel: {line}");
}

fn report(e: ChannelError) -> ExitCode {
    eprintln!("{:?}", miette::Report::new(e));
    ExitCode::FAILURE
}

/// Runs `fleetgate channel`; returns the process exit code.
pub fn run(args: ChannelArgs) -> ExitCode {
    let result = match args.command {
        ChannelCommand::Promote(a) => run_promote(a),
        ChannelCommand::HydraHook(a) => run_hydra_hook(a),
        ChannelCommand::Sync(a) => run_sync(a),
        ChannelCommand::Serve(a) => run_serve(a),
        ChannelCommand::Keygen(a) => run_keygen(a),
        ChannelCommand::Verify(a) => run_verify(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => report(e),
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
        let (k, v) = o.split_once('=').ok_or_else(|| {
            ChannelError::Config(format!("--nix-option {o:?}: expected NAME=VALUE"))
        })?;
        nix = nix.with_option(k, v);
    }
    Ok(nix)
}

fn required<'a, T>(v: &'a Option<T>, flag: &str) -> Result<&'a T, ChannelError> {
    v.as_ref()
        .ok_or_else(|| ChannelError::Config(format!("{flag} is required")))
}

fn channel_config(opts: &ChannelOpts) -> Result<ChannelConfig, ChannelError> {
    let repo = required(&opts.repo, "--repo")?;
    let cache = StoreUri::parse(required(&opts.cache, "--cache")?).map_err(ChannelError::Nix)?;
    let key = required(&opts.signing_key, "--signing-key")?;
    let mut cfg = ChannelConfig::new(repo, cache, key, &opts.state_dir)?;
    if let Some(pk) = &opts.public_key {
        cfg.public_key = PublicKey::from_file(pk).map_err(ChannelError::Nix)?;
    }
    cfg.git = GitSettings {
        timeout: Duration::from_secs(opts.git_timeout),
        token: Secret::load_optional(
            "git token",
            opts.token_file.as_deref(),
            opts.token_credential.as_deref(),
        )?,
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

fn print_outcome(o: &PromoteOutcome) {
    let what = match &o.movement {
        crate::branch::Movement::Created => "created".to_owned(),
        crate::branch::Movement::FastForward { from } => format!("fast-forwarded from {from}"),
        crate::branch::Movement::AlreadyAt => "already at this commit, unchanged".to_owned(),
        crate::branch::Movement::AlreadyContained { tip } => {
            format!("already contains it (tip {tip}), unchanged")
        }
        crate::branch::Movement::ForcedRewind { from } => format!("rewound from {from} (--force)"),
        crate::branch::Movement::ForcedSideways { from } => {
            format!("moved sideways from {from} (--force)")
        }
    };
    println!("{} -> {}: {what}", o.branch, o.commit);
}

fn run_promote(a: PromoteArgs) -> Result<ExitCode, ChannelError> {
    let req = PromoteRequest::parse(&a.host, &a.commit, &a.system, a.build.as_deref(), a.force)?;
    let cfg = channel_config(&a.opts)?;
    let nix = nix_for(&a.opts)?;
    let outcome = promote(&nix, &cfg, &req, &log_line)?;
    print_outcome(&outcome);
    Ok(ExitCode::SUCCESS)
}

fn run_hydra_hook(a: HydraHookArgs) -> Result<ExitCode, ChannelError> {
    let event = HydraEvent::read(&a.event)?;
    let mut hook_cfg = HookConfig::new(&a.job_pattern)?;
    hook_cfg.project = a.project;
    hook_cfg.jobset = a.jobset;
    hook_cfg.hydra_url = a.hydra_url;
    hook_cfg.hydra_db = a.hydra_db;
    // Decide before touching Nix or git: skipped events need neither.
    if let hook::Decision::Skip(reason) = hook::decide(&event, &hook_cfg)? {
        println!("skipped: {reason}");
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = channel_config(&a.opts)?;
    let nix = nix_for(&a.opts)?;
    match hook::run(&nix, &cfg, &hook_cfg, &event, &log_line)? {
        HookOutcome::Skipped(reason) => println!("skipped: {reason}"),
        HookOutcome::Promoted(o) => print_outcome(&o),
    }
    Ok(ExitCode::SUCCESS)
}

fn run_sync(a: SyncArgs) -> Result<ExitCode, ChannelError> {
    let commit = crate::commit::CommitId::parse(&a.commit)?;
    let cfg = channel_config(&a.opts)?;
    let nix = nix_for(&a.opts)?;
    let req = SyncRequest {
        flake: a.flake,
        commit,
        hosts: (!a.hosts.is_empty()).then_some(a.hosts),
        hosts_attr: a.hosts_attr,
        system_attr: a.system_attr,
    };
    let results = crate::sync::run(&nix, &cfg, &req, &log_line)?;
    let mut failed = 0;
    for (host, r) in results {
        match r {
            HostSync::Promoted(o) => print_outcome(&o),
            HostSync::NotCached(p) => println!("{host}: {p} not in the cache, skipped"),
            HostSync::Failed(e) => {
                failed += 1;
                println!("{host}: failed");
                eprintln!("{:?}", miette::Report::new(e));
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_serve(a: ServeArgs) -> Result<ExitCode, ChannelError> {
    let hook_secret = Secret::load_optional(
        "webhook secret",
        a.hook_secret_file.as_deref(),
        a.hook_secret_credential.as_deref(),
    )?;
    let host_tokens = match Secret::load_optional(
        "host tokens",
        a.host_tokens_file.as_deref(),
        a.host_tokens_credential.as_deref(),
    )? {
        Some(text) => HostTokens::parse(&text)?,
        None => HostTokens::default(),
    };
    let channel = if a.opts.repo.is_some() {
        Some((nix_for(&a.opts)?, channel_config(&a.opts)?))
    } else {
        None
    };
    if let Some(dir) = a.db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ChannelError::io("creating", dir, e))?;
    }
    let cfg = ServerConfig {
        listen: a.listen,
        db: a.db,
        hook_secret,
        host_tokens,
        channel,
    };
    crate::server::serve_forever(cfg, Arc::new(log_line))?;
    Ok(ExitCode::SUCCESS)
}

fn run_keygen(a: KeygenArgs) -> Result<ExitCode, ChannelError> {
    for p in [&a.secret_key_file, &a.public_key_file] {
        if p.exists() {
            return Err(ChannelError::Config(format!(
                "{} already exists; refusing to overwrite a key",
                p.display()
            )));
        }
    }
    let nix = Nix::detect().map_err(ChannelError::Nix)?;
    nix.generate_key_pair(&a.name, &a.secret_key_file, &a.public_key_file)
        .map_err(ChannelError::Nix)?;
    let pk = PublicKey::from_file(&a.public_key_file).map_err(ChannelError::Nix)?;
    println!("{pk}");
    Ok(ExitCode::SUCCESS)
}

fn run_verify(a: VerifyArgs) -> Result<ExitCode, ChannelError> {
    let pk = PublicKey::from_file(&a.public_key).map_err(ChannelError::Nix)?;
    let bytes = read(&a.manifest)?;
    let m = SignedManifest::parse(&bytes)?.verify(&pk)?;
    let text = serde_json::to_string_pretty(&m)
        .map_err(|e| ChannelError::ManifestFormat(e.to_string()))?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn read(p: &Path) -> Result<Vec<u8>, ChannelError> {
    std::fs::read(p).map_err(|e| ChannelError::io("reading", p, e))
}
