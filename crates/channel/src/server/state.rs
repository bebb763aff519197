//! Shared server state: the database, the in-memory manifest table, secrets, and the
//! promotion settings.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use fleetgate_nix::Nix;
use sha2::Digest as _;

use super::ServerConfig;
use super::db::Db;
use super::jobs::JobTable;
use super::tokens::HostTokens;
use crate::error::ChannelError;
use crate::host::HostName;
use crate::manifest::SignedManifest;
use crate::promote::{ChannelConfig, ManifestSink};
use crate::secret::Secret;

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
    pub(crate) log: Arc<dyn Fn(&str) + Send + Sync>,
    pub(crate) jobs: Mutex<JobTable>,
    pub(crate) promotions: Arc<tokio::sync::Semaphore>,
}

/// Unfinished hook jobs admitted at once (queued + running).
pub const MAX_PENDING_JOBS: usize = 64;

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
    pub fn open(cfg: ServerConfig, log: Arc<dyn Fn(&str) + Send + Sync>) -> Result<Self, ChannelError> {
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
        })
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
