//! The command-line options of `fleetgate channel`, and their one checked conversion into
//! the library's configuration ([`channel_config`], [`nix_for`]).
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetgate_nix::{Nix, PublicKey, StoreUri};

use crate::branch::BranchPolicy;
use crate::error::ChannelError;
use crate::git::GitSettings;
use crate::hydra::hook::DEFAULT_JOB_PATTERN;
use crate::promote::ChannelConfig;
use crate::secret::Secret;

/// Where promotions go and how (shared by every command that promotes, and `serve`).
#[derive(Debug, clap::Args)]
pub struct ChannelOpts {
    /// Channel git repository: a path or URL (no credentials in it).
    #[arg(long, env = "FLEETGATE_REPO")]
    pub(super) repo: Option<String>,
    /// Binary cache store URI (file://, http(s)://, s3://).
    #[arg(long, env = "FLEETGATE_CACHE")]
    pub(super) cache: Option<String>,
    /// Nix secret signing key file (signs the cache and the manifests).
    #[arg(long, env = "FLEETGATE_SIGNING_KEY")]
    pub(super) signing_key: Option<PathBuf>,
    /// Public key narinfos must verify with, `name:base64` or a file holding it
    /// (default: the signing key's).
    #[arg(long)]
    pub(super) public_key: Option<String>,
    /// State directory for repository mirrors and locks.
    #[arg(long, env = "STATE_DIRECTORY", default_value = "/var/lib/fleetgate/channel")]
    pub(super) state_dir: PathBuf,
    /// File holding the git HTTP token.
    #[arg(long)]
    pub(super) token_file: Option<PathBuf>,
    /// systemd credential name holding the git HTTP token ($CREDENTIALS_DIRECTORY/NAME).
    #[arg(long)]
    pub(super) token_credential: Option<String>,
    /// Also write <host>.json manifests into this directory.
    #[arg(long)]
    pub(super) manifest_dir: Option<PathBuf>,
    /// Push attempts before a rejected push is reported.
    #[arg(long, default_value_t = 5)]
    pub(super) push_attempts: u32,
    /// Seconds to wait for another promotion of the same repository.
    #[arg(long, default_value_t = 600)]
    pub(super) lock_timeout: u64,
    /// Seconds each git command may take.
    #[arg(long, default_value_t = 300)]
    pub(super) git_timeout: u64,
    /// Seconds each nix command may take.
    #[arg(long, default_value_t = 3600)]
    pub(super) nix_timeout: u64,
    /// Extra `--option NAME VALUE` for every nix call, as NAME=VALUE (repeatable).
    #[arg(long = "nix-option", value_name = "NAME=VALUE")]
    pub(super) nix_options: Vec<String>,
}

impl ChannelOpts {
    /// True if promotions are configured (`--repo` given): `serve` then accepts hooks.
    pub fn promotion_configured(&self) -> bool {
        self.repo.is_some()
    }
}

#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// Host name (its branch is nixos-tested-<host>).
    #[arg(long)]
    pub(super) host: String,
    /// Full commit id CI built.
    #[arg(long)]
    pub(super) commit: String,
    /// The system's top-level store path.
    #[arg(long)]
    pub(super) system: String,
    /// CI build reference recorded in the manifest.
    #[arg(long)]
    pub(super) build: Option<String>,
    /// Allow rewinding the branch or moving it sideways.
    #[arg(long)]
    pub(super) force: bool,
    /// Print the outcome (or the error) as one JSON document on stdout.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    pub(super) opts: ChannelOpts,
}

#[derive(Debug, clap::Args)]
pub struct HydraHookArgs {
    /// The event file (Hydra sets $HYDRA_JSON).
    #[arg(long, env = "HYDRA_JSON")]
    pub(super) event: PathBuf,
    /// Jobs to promote; the `host` group names the host.
    #[arg(long, default_value = DEFAULT_JOB_PATTERN)]
    pub(super) job_pattern: String,
    /// Only builds of this project.
    #[arg(long)]
    pub(super) project: Option<String>,
    /// Only builds of this jobset.
    #[arg(long)]
    pub(super) jobset: Option<String>,
    /// Hydra base URL (commit fallback through its API, and build links).
    #[arg(long)]
    pub(super) hydra_url: Option<String>,
    /// Hydra database name for the psql fallback (e.g. `hydra`).
    #[arg(long)]
    pub(super) hydra_db: Option<String>,
    /// Print the outcome, the skip reason or the error as one JSON document on stdout.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    pub(super) opts: ChannelOpts,
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Flake reference without revision (git+https://…, github:o/r, git+file:///…).
    #[arg(long)]
    pub(super) flake: String,
    /// Full commit id to evaluate.
    #[arg(long)]
    pub(super) commit: String,
    /// Only these hosts (default: all of --hosts-attr).
    #[arg(long = "host")]
    pub(super) hosts: Vec<String>,
    /// Attribute set holding the hosts.
    #[arg(long, default_value = "nixosConfigurations")]
    pub(super) hosts_attr: String,
    /// Attribute of each host that is its system.
    #[arg(long, default_value = "config.system.build.toplevel")]
    pub(super) system_attr: String,
    /// Print every host's result (or the error) as one JSON document on stdout.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    pub(super) opts: ChannelOpts,
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Key name, conventionally `<cache host name>-<n>`.
    #[arg(long)]
    pub(super) name: String,
    /// Where to write the secret key.
    #[arg(long)]
    pub(super) secret_key_file: PathBuf,
    /// Where to write the public key.
    #[arg(long)]
    pub(super) public_key_file: PathBuf,
    /// Print the public key (or the error) as one JSON document on stdout.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Public key: the key text `name:base64` (as in nix.conf's trusted-public-keys) or
    /// a file holding it.
    #[arg(long)]
    pub(super) public_key: String,
    /// The manifest document.
    pub(super) manifest: PathBuf,
    /// Print the verified manifest (or the error) as one JSON document on stdout.
    #[arg(long)]
    pub(super) json: bool,
}

pub fn nix_for(opts: &ChannelOpts) -> Result<Nix, ChannelError> {
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

pub fn channel_config(opts: &ChannelOpts) -> Result<ChannelConfig, ChannelError> {
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

/// A `--public-key` value: the key text `name:base64`, or a file holding it. A value that
/// names an existing file is read; anything else must be the key itself.
pub(super) fn public_key_arg(given: &str) -> Result<PublicKey, ChannelError> {
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
