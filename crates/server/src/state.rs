//! Shared server state: the database, the in-memory manifest table, secrets, and the
//! promotion settings.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetgate_nix::Nix;
use sha2::Digest as _;

use tokio::sync::watch;

use crate::ServerConfig;
use crate::connections::Limits;
use crate::db::Db;
use crate::jobs::JobTable;
use crate::log_limit::RateLimitedLine;
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
}

/// Everything handlers share.
pub struct AppState {
    pub(crate) listen: SocketAddr,
    pub(crate) db: Mutex<Db>,
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
        let db = Db::open(&cfg.db)?;
        let mut manifests = HashMap::new();
        for (host, doc) in db.manifests()? {
            manifests.insert(host, Arc::new(CachedManifest { etag: etag_of(&doc), body: doc.into() }));
        }
        Ok(Self {
            listen: cfg.listen,
            db: Mutex::new(db),
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
        {
            let db = self.db.lock().map_err(|_| ChannelError::Database("lock poisoned".into()))?;
            db.put_manifest(host.as_str(), &doc, &inner.commit, &inner.system, now())?;
        }
        let cached = Arc::new(CachedManifest { etag: etag_of(&doc), body: doc.into() });
        if let Ok(mut map) = self.manifests.write() {
            map.insert(host.to_string(), cached);
        }
        Ok(())
    }

    /// The manifest of a host, if any.
    pub fn manifest(&self, host: &str) -> Option<Arc<CachedManifest>> {
        self.manifests.read().ok()?.get(host).cloned()
    }
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
