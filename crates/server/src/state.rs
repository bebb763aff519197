//! Shared server state: the store, the in-memory manifest table and fleet, secrets, and
//! the promotion settings.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetgate_nix::Nix;
use sha2::Digest as _;

use tokio::sync::watch;

use crate::ServerConfig;
use crate::auth::ReadTokens;
use crate::connections::Limits;
use crate::fleet_cache::FleetCache;
use crate::jobs::JobTable;
use crate::log_limit::RateLimitedLine;
use crate::store::Store;
use crate::tokens::HostTokens;
use fleetgate_channel::error::ChannelError;
use fleetgate_channel::host::HostName;
use fleetgate_channel::manifest::SignedManifest;
use fleetgate_channel::promote::{ChannelConfig, ManifestSink};
use fleetgate_channel::secret::Secret;

/// A manifest ready to send.
#[derive(Debug)]
pub struct CachedManifest {
    /// Strong ETag, quoted.
    pub etag: String,
    /// The document.
    pub body: axum::body::Bytes,
    /// Its commit and system (to notice another replica's newer manifest).
    pub commit: String,
    /// Its system.
    pub system: String,
}

impl CachedManifest {
    fn of(doc: Vec<u8>) -> Option<CachedManifest> {
        let inner = SignedManifest::parse(&doc).ok()?.unverified().ok()?;
        Some(CachedManifest { etag: etag_of(&doc), commit: inner.commit, system: inner.system, body: doc.into() })
    }
}

/// Everything handlers share.
pub struct AppState {
    pub(crate) listen: SocketAddr,
    pub(crate) store: Box<dyn Store>,
    pub(crate) fleet: FleetCache,
    pub(crate) read_tokens: ReadTokens,
    pub(crate) thresholds: fleetgate_status::Thresholds,
    pub(crate) pages: crate::status_routes::PageMemo,
    pub(crate) manifests: RwLock<HashMap<String, Arc<CachedManifest>>>,
    pub(crate) hook_secret: Option<Secret>,
    pub(crate) host_tokens: HostTokens,
    pub(crate) channel: Option<(Nix, ChannelConfig)>,
    pub(crate) log: Log,
    pub(crate) jobs: Mutex<JobTable>,
    pub(crate) promotions: Arc<tokio::sync::Semaphore>,
    pub(crate) limits: Limits,
    /// Turns true when shutdown begins: queued promotions are dropped.
    stopping: watch::Sender<bool>,
    /// Promotions running now.
    running: watch::Sender<usize>,
    /// Rate limit of the "bad signature" line.
    pub(crate) bad_signatures: RateLimitedLine,
}

/// Where the server's log lines go.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// A running promotion, counted until dropped.
pub(crate) struct RunningJob {
    running: watch::Sender<usize>,
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.running.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Unfinished hook jobs admitted at once (queued + running).
pub const MAX_PENDING_JOBS: usize = 64;

/// At most one "bad signature" log line per minute (with the count of those left out).
pub const BAD_SIGNATURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("listen", &self.listen).finish_non_exhaustive()
    }
}

/// The ETag of a document: the first 128 bits of its SHA-256, quoted.
pub fn etag_of(body: &[u8]) -> String {
    let d = sha2::Sha256::digest(body);
    format!("\"{}\"", hex::encode(&d[..16]))
}

pub(crate) fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl AppState {
    /// Opens the database and loads the manifests into memory.
    pub fn open(cfg: ServerConfig, log: Log) -> Result<Self, ChannelError> {
        if let Some(secret) = &cfg.hook_secret {
            secret.require_strength("webhook secret")?;
        }
        let store = cfg.store.open(crate::store::Retention::default())?;
        let mut manifests = HashMap::new();
        for (host, doc) in store.manifests()? {
            if let Some(m) = CachedManifest::of(doc) {
                manifests.insert(host, Arc::new(m));
            }
        }
        let fleet = FleetCache::new(cfg.host_tokens.hosts().cloned());
        fleet.refresh(store.as_ref(), now(), cfg.thresholds, true)?;
        Ok(Self {
            listen: cfg.listen,
            store,
            fleet,
            read_tokens: cfg.read_tokens,
            thresholds: cfg.thresholds,
            pages: Default::default(),
            manifests: RwLock::new(manifests),
            hook_secret: cfg.hook_secret,
            host_tokens: cfg.host_tokens,
            channel: cfg.channel,
            log,
            jobs: Mutex::new(JobTable::new(MAX_PENDING_JOBS)),
            promotions: Arc::new(tokio::sync::Semaphore::new(cfg.max_promotions.max(1))),
            limits: cfg.limits,
            stopping: watch::channel(false).0,
            running: watch::channel(0).0,
            bad_signatures: RateLimitedLine::new(BAD_SIGNATURE_LOG_INTERVAL),
        })
    }

    /// Shutdown began: queued promotions are dropped, none starts any more.
    pub(crate) fn stop_jobs(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves when shutdown begins.
    pub(crate) async fn stopped(&self) {
        let _ = self.stopping.subscribe().wait_for(|s| *s).await;
    }

    /// Counts a promotion as running, unless shutdown began.
    pub(crate) fn start_job(&self) -> Option<RunningJob> {
        self.running.send_modify(|n| *n += 1);
        let job = RunningJob { running: self.running.clone() };
        // Checked after counting: shutdown either sees this job or this job sees it.
        (!*self.stopping.borrow()).then_some(job)
    }

    /// Promotions running now.
    pub(crate) fn running_jobs(&self) -> usize {
        *self.running.borrow()
    }

    /// Resolves when no promotion runs.
    pub(crate) async fn jobs_finished(&self) {
        let _ = self.running.subscribe().wait_for(|n| *n == 0).await;
    }

    /// Stores a manifest document for a host (database first, then memory).
    pub fn put_manifest(&self, host: &HostName, m: &SignedManifest) -> Result<(), ChannelError> {
        let inner = m.unverified()?;
        let doc = m.to_document();
        let created_at = i64::try_from(inner.created_at).unwrap_or(i64::MAX);
        self.store.put_manifest(host.as_str(), &doc, &inner.commit, &inner.system, created_at, now())?;
        self.fleet.invalidate();
        let cached = Arc::new(CachedManifest {
            etag: etag_of(&doc),
            commit: inner.commit,
            system: inner.system,
            body: doc.into(),
        });
        if let Ok(mut map) = self.manifests.write() {
            map.insert(host.to_string(), cached);
        }
        Ok(())
    }

    /// The manifest of a host, if any.
    pub fn manifest(&self, host: &str) -> Option<Arc<CachedManifest>> {
        self.manifests.read().ok()?.get(host).cloned()
    }

    /// Brings the fleet (and the manifests another replica published) up to date with the
    /// store, for `now`. Blocks on the store.
    pub(crate) fn refresh(&self, force: bool) -> Result<(), ChannelError> {
        let changed = self.fleet.refresh(self.store.as_ref(), now(), self.thresholds, force)?;
        for (host, commit, system) in changed {
            let stale = self.manifest(&host).is_none_or(|m| m.commit != commit || m.system != system);
            if stale
                && let Some(doc) = self.store.manifest(&host)?
                && let Some(m) = CachedManifest::of(doc)
                && let Ok(mut map) = self.manifests.write()
            {
                map.insert(host, Arc::new(m));
            }
        }
        Ok(())
    }
}

/// Runs `work` on a blocking thread (the store may wait on the network or a lock).
pub(crate) async fn blocking<T: Send + 'static>(
    state: Arc<AppState>,
    work: impl FnOnce(&AppState) -> Result<T, ChannelError> + Send + 'static,
) -> Result<T, ChannelError> {
    tokio::task::spawn_blocking(move || work(&state))
        .await
        .map_err(|e| ChannelError::Internal(format!("a blocking task failed: {e}")))?
}

impl ManifestSink for AppState {
    fn publish(&self, host: &HostName, manifest: &SignedManifest) -> Result<(), ChannelError> {
        self.put_manifest(host, manifest)
    }

    fn current(&self, host: &HostName) -> Option<Vec<u8>> {
        // The memory table is only updated after the database write succeeded.
        self.manifest(host.as_str()).map(|m| m.body.to_vec())
    }
}
