//! A whole promotion, shared by every front end:
//! 0. under the repository lock: the commit is in the repository (fetched), or nothing
//!    else happens;
//! 1. closure → cache, read back and signature-checked ([`crate::cache`]);
//! 2. under the repository lock: branch + manifest note pushed atomically
//!    ([`crate::branch`]);
//! 3. still under the lock: the signed manifest written next to the cache, to the
//!    manifest directory and to any extra sink (the server's database).
//!
//! Progress reports these as five [`Step`]s (the upload and the verification are two).
//!
//! Any failure in step 1 leaves branch and manifests untouched; a failure in step 2
//! leaves them untouched too (the push is atomic). A failure in step 3 leaves the branch
//! moved and some manifest stale; running the same promotion again finds the branch
//! already there and republishes the manifest the branch tip carries (its git note) to
//! every file and sink that does not hold it.
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetgate_nix::{Nix, PublicKey, SecretKey, StoreUri};
use sha2::Digest as _;

use crate::Log;
use crate::branch::{BranchPolicy, Movement, advance, require_commit};
use crate::cache::{CacheFacts, upload_and_verify};
use crate::commit::CommitId;
use crate::error::ChannelError;
use crate::git::{GitSettings, Mirror, tracking_notes};
use crate::host::HostName;
use crate::lock::RepoLock;
use crate::manifest::{Manifest, SignedManifest};
use crate::progress::Step;

/// Where and how promotions happen.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// The channel repository (URL, or canonical path: [`crate::git::canonical_remote`];
    /// no credentials in it).
    pub repo: String,
    /// The binary cache.
    pub cache: StoreUri,
    /// The Nix secret key file (signs the cache and the manifests).
    pub signing_key_file: PathBuf,
    /// The parsed secret key.
    pub signing_key: SecretKey,
    /// The public key narinfos must verify with (normally the signing key's).
    pub public_key: PublicKey,
    /// State directory (repository mirrors and locks).
    pub state_dir: PathBuf,
    /// How git is run (token, timeouts, identity).
    pub git: GitSettings,
    /// Push attempts and lock timeout (its `force` is ignored: see [`PromoteRequest`]).
    pub policy: BranchPolicy,
    /// An extra directory receiving `<host>.json` manifests.
    pub manifest_dir: Option<PathBuf>,
}

impl ChannelConfig {
    /// A configuration with defaults for everything but the essentials; the public key
    /// is derived from the secret key.
    pub fn new(repo: &str, cache: StoreUri, signing_key_file: &Path, state_dir: &Path) -> Result<Self, ChannelError> {
        let repo = crate::git::canonical_remote(repo)?;
        // Checked here, in full, before Nix ever reads the file (`?secret-key=`): a bad key
        // is the operator's to fix, and Nix's own words for it ("secret key is corrupt")
        // say neither which option nor what a key looks like.
        let signing_key = SecretKey::from_file(signing_key_file).map_err(ChannelError::SigningKey)?;
        // Nix reads the key itself (`?secret-key=`), maybe from another directory.
        let signing_key_file =
            std::path::absolute(signing_key_file).map_err(|e| ChannelError::io("resolving", signing_key_file, e))?;
        Ok(Self {
            repo,
            cache,
            signing_key_file,
            public_key: signing_key.public(),
            signing_key,
            state_dir: state_dir.to_owned(),
            git: GitSettings::default(),
            policy: BranchPolicy::default(),
            manifest_dir: None,
        })
    }
}

/// One promotion.
#[derive(Clone, Debug)]
pub struct PromoteRequest {
    /// The host.
    pub host: HostName,
    /// The commit CI built.
    pub commit: CommitId,
    /// The system's top-level store path.
    pub system: String,
    /// The CI build reference.
    pub build: Option<String>,
    /// Allow rewinding or jumping sideways.
    pub force: bool,
}

impl PromoteRequest {
    /// Validates raw strings into a request.
    pub fn parse(
        host: &str,
        commit: &str,
        system: &str,
        build: Option<&str>,
        force: bool,
    ) -> Result<Self, ChannelError> {
        let build = match build {
            Some(b) if b.len() > 1024 || b.chars().any(char::is_control) => {
                return Err(ChannelError::BadBuild { build: crate::error::shown(b) });
            }
            other => other.map(str::to_owned),
        };
        Ok(Self {
            host: HostName::parse(host)?,
            commit: CommitId::parse(commit)?,
            system: crate::store_path::validate(system)?,
            build,
            force,
        })
    }
}

/// What a promotion did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PromoteOutcome {
    /// The host.
    pub host: HostName,
    /// Its branch.
    pub branch: String,
    /// The commit.
    pub commit: CommitId,
    /// What happened to the branch.
    pub movement: Movement,
    /// Push attempts used (0 when nothing had to change).
    pub push_attempts: u32,
    /// True if the closure was uploaded by this run.
    pub uploaded: bool,
    /// The published manifest (when the branch changed).
    #[serde(skip)]
    pub manifest: Option<SignedManifest>,
    /// Files the manifest was written to (when the branch did not change: the files
    /// that were stale and got the branch tip's manifest again).
    pub published: Vec<PathBuf>,
}

/// Receives the signed manifest while the repository lock is still held.
pub trait ManifestSink: Sync {
    /// Stores it; an error is reported but the branch has already moved (a retry of
    /// the same promotion republishes it).
    fn publish(&self, host: &HostName, manifest: &SignedManifest) -> Result<(), ChannelError>;

    /// The document ([`SignedManifest::to_document`]) it currently holds for the host,
    /// so that an unchanged promotion republishes only what differs. `None` (the
    /// default) means "unknown": the manifest is published again.
    fn current(&self, host: &HostName) -> Option<Vec<u8>> {
        let _ = host;
        None
    }
}

/// Promotes with no extra sink.
pub fn promote(
    nix: &Nix,
    cfg: &ChannelConfig,
    req: &PromoteRequest,
    log: Log<'_>,
) -> Result<PromoteOutcome, ChannelError> {
    promote_with(nix, cfg, req, None, log)
}

/// Promotes, handing the manifest to `sink` under the lock. A promotion that fails
/// removes the repository mirror if it created it (a mistyped or unreachable repository
/// leaves nothing behind in the state directory).
pub fn promote_with(
    nix: &Nix,
    cfg: &ChannelConfig,
    req: &PromoteRequest,
    sink: Option<&dyn ManifestSink>,
    log: Log<'_>,
) -> Result<PromoteOutcome, ChannelError> {
    let mirror = Mirror::new(&cfg.state_dir, &cfg.repo, cfg.git.clone())?;
    let created = !mirror.exists();
    let result = promote_in(nix, cfg, req, &mirror, sink, log);
    if result.is_err() && created {
        // Under the lock: another promotion may be using the mirror by now; it re-creates
        // it if needed (`Mirror::ensure` at the start of each locked step).
        let removed = RepoLock::acquire(mirror.lock_path(), cfg.policy.lock_timeout).and_then(|l| mirror.remove(l));
        if let Err(e) = removed {
            log.note(&format!("could not remove the mirror this failed promotion created: {}", e.chain()));
        }
    }
    result
}

fn promote_in(
    nix: &Nix,
    cfg: &ChannelConfig,
    req: &PromoteRequest,
    mirror: &Mirror,
    sink: Option<&dyn ManifestSink>,
    log: Log<'_>,
) -> Result<PromoteOutcome, ChannelError> {
    // The commit must exist before anything is uploaded: an event naming a commit nobody
    // pushed must not fill the cache first and fail after.
    {
        log.step(Step::CheckCommit, &format!("{} has {}", cfg.repo, req.commit));
        let _lock = RepoLock::acquire(mirror.lock_path(), cfg.policy.lock_timeout)?;
        mirror.ensure()?;
        mirror.fetch()?;
        require_commit(mirror, &req.commit)?;
    }

    // Nix 2.8 fails ("coroutine has finished") when two `nix copy` write the same paths
    // to one file:// cache at once, so uploads to one cache take turns.
    let cache_lock = cfg
        .state_dir
        .join("caches")
        .join(format!("{}.lock", hex::encode(&sha2::Sha256::digest(cfg.cache.base().as_bytes())[..12])));
    let upload_lock = RepoLock::acquire(&cache_lock, cfg.policy.lock_timeout)?;
    let facts: CacheFacts =
        upload_and_verify(nix, &cfg.cache, &req.system, &cfg.signing_key_file, &cfg.public_key, log)?;
    drop(upload_lock);
    log.note(&format!(
        "cache {} has all {} path(s) of {} signed by {}",
        cfg.cache.base(),
        facts.closure_paths,
        req.system,
        cfg.public_key.name()
    ));
    let manifest = Manifest {
        host: req.host.to_string(),
        branch: req.host.branch(),
        commit: req.commit.to_string(),
        system: req.system.clone(),
        nar_hash: facts.nar_hash.clone(),
        nar_size: facts.nar_size,
        closure_size: facts.closure_size,
        closure_paths: facts.closure_paths,
        cache: cfg.cache.base().to_owned(),
        created_at: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs(),
        build: req.build.clone(),
    };
    let signed = SignedManifest::sign(&manifest, &cfg.signing_key)?;
    let document = signed.to_document();

    log.step(Step::Branch, &format!("{} in {} (waiting for its lock)", req.host.branch(), cfg.repo));
    let _lock = RepoLock::acquire(mirror.lock_path(), cfg.policy.lock_timeout)?;
    let policy = BranchPolicy { force: req.force, ..cfg.policy.clone() };
    let (movement, push_attempts) = advance(mirror, &req.host, &req.commit, &document, &policy, log)?;
    let changed = movement.changed();
    let published = if changed {
        log.step(
            Step::Publish,
            &format!("{} manifest file(s){}", manifest_files(cfg, &req.host).len(), sink_text(sink)),
        );
        publish(cfg, &req.host, &signed, &document, sink, log)?
    } else {
        // The branch did not move, but a previous run may have moved it and then failed
        // to write the manifests: republish the one the branch tip carries.
        log.step(Step::Publish, "only where the branch tip's manifest is missing or stale");
        repair(cfg, mirror, &req.host, &movement, &req.commit, sink, log)?
    };
    Ok(PromoteOutcome {
        host: req.host.clone(),
        branch: req.host.branch(),
        commit: req.commit.clone(),
        movement,
        push_attempts,
        uploaded: facts.uploaded,
        manifest: changed.then_some(signed),
        published,
    })
}

fn sink_text(sink: Option<&dyn ManifestSink>) -> &'static str {
    if sink.is_some() { " and the server" } else { "" }
}

/// The manifest files of a host: next to a `file://` cache, and in the manifest directory.
fn manifest_files(cfg: &ChannelConfig, host: &HostName) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(cache_dir) = cfg.cache.file_path() {
        dirs.push(cache_dir.join("fleetgate").join("hosts"));
    }
    dirs.extend(cfg.manifest_dir.clone());
    dirs.into_iter().map(|d| d.join(format!("{host}.json"))).collect()
}

/// Writes the manifest to every file and the sink; returns the files written.
fn publish(
    cfg: &ChannelConfig,
    host: &HostName,
    signed: &SignedManifest,
    document: &[u8],
    sink: Option<&dyn ManifestSink>,
    log: Log<'_>,
) -> Result<Vec<PathBuf>, ChannelError> {
    let mut published = Vec::new();
    for file in manifest_files(cfg, host) {
        write_atomic(&file, document)?;
        log.note(&format!("manifest written to {}", file.display()));
        published.push(file);
    }
    if let Some(sink) = sink {
        sink.publish(host, signed)?;
    }
    Ok(published)
}

/// For a promotion that left the branch alone: reads the signed manifest attached to the
/// branch tip (the git note pushed together with the branch) and rewrites every file and
/// sink entry that does not hold it. Returns the files rewritten.
fn repair(
    cfg: &ChannelConfig,
    mirror: &Mirror,
    host: &HostName,
    movement: &Movement,
    commit: &CommitId,
    sink: Option<&dyn ManifestSink>,
    log: Log<'_>,
) -> Result<Vec<PathBuf>, ChannelError> {
    let branch = host.branch();
    let tip = match movement {
        Movement::AlreadyContained { tip } => tip.as_str(),
        _ => commit.as_str(),
    };
    let Some(notes) = mirror.rev(&tracking_notes(&host.notes_ref()))? else {
        log.note(&format!("{branch}: no manifest notes to republish"));
        return Ok(Vec::new());
    };
    let Some(note) = mirror.note(&notes, tip)? else {
        log.note(&format!("{branch}: its tip {tip} carries no manifest note, nothing to republish"));
        return Ok(Vec::new());
    };
    let signed = SignedManifest::parse(&note)?;
    match signed.verify(&cfg.public_key) {
        Ok(m) if m.host == host.as_str() && m.commit == tip => {}
        Ok(m) => {
            log.note(&format!(
                "{branch}: the note on {tip} is a manifest for {} at {}, not republished",
                m.host, m.commit
            ));
            return Ok(Vec::new());
        }
        Err(e) => {
            log.note(&format!("{branch}: the note on {tip} is not republished: {}", e.chain()));
            return Ok(Vec::new());
        }
    }
    let document = signed.to_document();
    let mut published = Vec::new();
    for file in manifest_files(cfg, host) {
        let held = fleetgate_nix::read_small_file(&file, crate::manifest::MAX_DOCUMENT).ok();
        if held.as_deref() == Some(document.as_slice()) {
            continue;
        }
        write_atomic(&file, &document)?;
        log.note(&format!("manifest of {tip} republished to {}", file.display()));
        published.push(file);
    }
    if let Some(sink) = sink
        && sink.current(host).as_deref() != Some(document.as_slice())
    {
        sink.publish(host, &signed)?;
        log.note(&format!("manifest of {tip} republished to the server"));
    }
    Ok(published)
}

/// Writes a file by writing a temporary sibling and renaming it over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ChannelError> {
    let dir = path.parent().ok_or_else(|| ChannelError::Config(format!("{} has no parent", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| ChannelError::io("creating", dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ChannelError::io("writing", path, e)
    })
}
