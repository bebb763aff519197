//! The fleet in memory: every host's merged status, kept in step with the database and
//! settled (state word derived) for the current second.
//!
//! Reads (`/v1/status`, the dashboard, `/metrics`) never scan the database: before
//! answering, a request asks the store for the host rows changed since the cache last
//! looked (`changed_since`: host names and sequence numbers from an index; then
//! `host_rows` for the hosts whose number moved) — at most once per [`SYNC_INTERVAL`]. With
//! PostgreSQL, where sequence numbers are handed out before commit, the cache re-reads
//! the numbers handed out in the last [`REREAD_WINDOW`] (a transaction that commits late
//! with a smaller number is not missed; re-applying a row is harmless). Several `serve`
//! processes sharing one database therefore agree within about a second.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fleetgate_channel::ChannelError;
use fleetgate_status::fleet::{Summary, glob_match, summarize};
use fleetgate_status::{DesiredSource, HostStatus, State, Thresholds};

use crate::auth::Viewer;
use crate::store::{HostRow, Store};

/// The most often a request makes the cache ask the database for changes.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(200);
/// How far back (in time) sequence numbers are re-read where they are not commit-ordered.
pub const REREAD_WINDOW: Duration = Duration::from_secs(10);
/// Hosts in one page of `/v1/status` by default, and at most.
pub const PAGE: usize = 200;
/// The largest page.
pub const MAX_PAGE: usize = 1000;

/// Which hosts a request wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these states (empty: all).
    pub states: Vec<State>,
    /// Host names matching this glob (`*`, `?`) — or containing it, without wildcards.
    pub query: Option<String>,
    /// Skip this many.
    pub offset: usize,
    /// At most this many ([`PAGE`] by default, [`MAX_PAGE`] at most).
    pub limit: usize,
    /// Hosts with their generations and findings (a page leaves them out: the fleet
    /// table does not show them, and they are most of a host's bytes).
    pub full: bool,
}

impl Filter {
    fn matches(&self, h: &HostStatus) -> bool {
        (self.states.is_empty() || self.states.contains(&h.state))
            && self
                .query
                .as_deref()
                .is_none_or(|q| if q.contains(['*', '?']) { glob_match(q, &h.host) } else { h.host.contains(q) })
    }
}

/// One page of the fleet, as a viewer may see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FleetPage {
    /// Document version ([`fleetgate_status::fleet::FORMAT`]).
    pub format: u32,
    /// When the states were derived.
    pub generated_at: i64,
    /// Over every host the viewer may see (not only this page).
    pub summary: Summary,
    /// Hosts matching the filter.
    pub matching: usize,
    /// The page: most urgent state first, then by name.
    pub hosts: Vec<HostStatus>,
}

#[derive(Debug, Default)]
struct Inner {
    hosts: BTreeMap<String, HostStatus>,
    /// Highest sequence number seen.
    seq: i64,
    /// Each host's sequence number as applied.
    seqs: std::collections::HashMap<String, i64>,
    /// Bumped whenever the settled fleet changes (rows applied, or a new second).
    version: u64,
    /// Rows changed since the order and summary were made.
    stale_order: bool,
    /// (when, highest sequence number then), for the re-read window.
    marks: VecDeque<(Instant, i64)>,
    last_sync: Option<Instant>,
    settled_at: Option<i64>,
    /// Hosts in page order (state, name), rebuilt when settled.
    order: Vec<String>,
    summary: Summary,
}

/// The fleet in memory.
#[derive(Debug, Default)]
pub struct FleetCache {
    inner: Mutex<Inner>,
}

impl FleetCache {
    /// A cache that knows `hosts` (the configured ones: shown even before any report).
    #[must_use]
    pub fn new(hosts: impl IntoIterator<Item = String>) -> FleetCache {
        let hosts = hosts.into_iter().map(|h| (h.clone(), HostStatus::new(&h))).collect();
        FleetCache { inner: Mutex::new(Inner { hosts, ..Inner::default() }) }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, ChannelError> {
        self.inner.lock().map_err(|_| ChannelError::Internal("fleet cache lock poisoned".into()))
    }

    /// Brings the cache up to date with the store (at most every [`SYNC_INTERVAL`]; always
    /// with `force`) and settles the hosts' states for `now`. Blocks on the store, but
    /// never while holding the cache (readers are not held up by a slow database).
    /// Returns the manifests (host, commit, system) of the host rows that changed.
    ///
    /// # Errors
    /// The store's.
    pub fn refresh(
        &self,
        store: &dyn Store,
        now: i64,
        t: Thresholds,
        force: bool,
    ) -> Result<Vec<(String, String, String)>, ChannelError> {
        let (from, known) = {
            let mut inner = self.lock()?;
            let due = force || inner.last_sync.is_none_or(|at| at.elapsed() >= SYNC_INTERVAL);
            if !due {
                settle(&mut inner, now, t);
                return Ok(Vec::new());
            }
            let instant = Instant::now();
            while inner.marks.len() > 1 && inner.marks[1].0 + REREAD_WINDOW <= instant {
                inner.marks.pop_front();
            }
            let seq = inner.seq;
            inner.marks.push_back((instant, seq));
            inner.last_sync = Some(instant);
            let from = if store.seq_commit_ordered() { seq } else { inner.marks.front().map_or(0, |m| m.1).min(seq) };
            (from, inner.seqs.clone())
        };
        // Cheap (host, seq) pairs first; whole rows only for what this cache lacks.
        let moved = store.changed_since(from)?;
        let wanted: Vec<String> =
            moved.iter().filter(|(host, seq)| known.get(host) != Some(seq)).map(|(host, _)| host.clone()).collect();
        let rows = if wanted.is_empty() { Vec::new() } else { store.host_rows(&wanted)? };
        let mut inner = self.lock()?;
        if let Some(max) = moved.iter().map(|(_, seq)| *seq).max() {
            inner.seq = inner.seq.max(max);
        }
        let mut manifests = Vec::new();
        for row in rows {
            if let Some(d) = row.status.desired.as_ref().filter(|d| d.source == DesiredSource::Manifest) {
                manifests.push((row.status.host.clone(), d.commit.clone().unwrap_or_default(), d.system.clone()));
            }
            apply(&mut inner, row, now, t);
        }
        settle(&mut inner, now, t);
        Ok(manifests)
    }

    /// Applies a row this process just wrote (its readers see it at once; other
    /// processes read it from the store).
    ///
    /// # Errors
    /// A poisoned lock.
    pub fn apply_local(&self, row: HostRow, now: i64, t: Thresholds) -> Result<(), ChannelError> {
        apply(&mut *self.lock()?, row, now, t);
        Ok(())
    }

    /// Makes the next [`FleetCache::refresh`] read the store whatever the interval (this
    /// process just wrote to it: its own readers see the write at once).
    pub fn invalidate(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.last_sync = None;
        }
    }

    /// The page `filter` asks for, of the hosts `viewer` may see.
    ///
    /// # Errors
    /// A poisoned lock.
    pub fn page(&self, viewer: &Viewer, filter: &Filter) -> Result<FleetPage, ChannelError> {
        let mut inner = self.lock()?;
        reorder(&mut inner);
        let limit = if filter.limit == 0 { PAGE } else { filter.limit.min(MAX_PAGE) };
        let visible = |h: &&HostStatus| viewer.can_read(&h.host);
        let summary = if viewer.sees_all() {
            inner.summary.clone()
        } else {
            let mine: Vec<&HostStatus> = inner.hosts.values().filter(visible).collect();
            summarize(&mine)
        };
        let ordered = inner.order.iter().filter_map(|name| inner.hosts.get(name)).filter(visible);
        let mut matching = 0;
        let mut hosts = Vec::new();
        for h in ordered.filter(|h| filter.matches(h)) {
            if matching >= filter.offset && hosts.len() < limit {
                let mut h = h.clone();
                if !filter.full {
                    h.generations.clear();
                    if let Some(r) = h.last_result.as_mut() {
                        r.findings.clear();
                    }
                }
                hosts.push(h);
            }
            matching += 1;
        }
        Ok(FleetPage {
            format: fleetgate_status::fleet::FORMAT,
            generated_at: inner.settled_at.unwrap_or(0),
            summary,
            matching,
            hosts,
        })
    }

    /// Changes whenever the settled fleet may have changed (for memoised answers).
    ///
    /// # Errors
    /// A poisoned lock.
    pub fn version(&self) -> Result<u64, ChannelError> {
        Ok(self.lock()?.version)
    }

    /// The names of the hosts `viewer` may see, sorted.
    ///
    /// # Errors
    /// A poisoned lock.
    pub fn names(&self, viewer: &Viewer) -> Result<Vec<String>, ChannelError> {
        Ok(self.lock()?.hosts.keys().filter(|h| viewer.can_read(h)).cloned().collect())
    }

    /// One host, if it is known.
    ///
    /// # Errors
    /// A poisoned lock.
    pub fn host(&self, host: &str) -> Result<Option<HostStatus>, ChannelError> {
        Ok(self.lock()?.hosts.get(host).cloned())
    }

    /// The summary over every host.
    ///
    /// # Errors
    /// A poisoned lock.
    pub fn summary(&self) -> Result<Summary, ChannelError> {
        let mut inner = self.lock()?;
        reorder(&mut inner);
        Ok(inner.summary.clone())
    }
}

/// Puts a row in the cache unless it already has that row or a newer one; settles it.
fn apply(inner: &mut Inner, row: HostRow, now: i64, t: Thresholds) {
    let host = row.status.host.clone();
    if inner.seqs.get(&host).is_some_and(|seq| *seq >= row.seq) {
        return;
    }
    let mut status = row.status;
    fleetgate_status::state::settle(&mut status, now, t);
    inner.seqs.insert(host.clone(), row.seq);
    inner.hosts.insert(host, status);
    inner.stale_order = true;
    inner.version += 1;
}

/// Settles every host when the second changed (states move with time: `stale`).
fn settle(inner: &mut Inner, now: i64, t: Thresholds) {
    if inner.settled_at != Some(now) {
        for h in inner.hosts.values_mut() {
            fleetgate_status::state::settle(h, now, t);
        }
        inner.settled_at = Some(now);
        inner.stale_order = true;
        inner.version += 1;
    }
}

/// Rebuilds the page order and the summary if rows changed since (on read: a burst of
/// reports costs one rebuild, not one each).
fn reorder(inner: &mut Inner) {
    if !inner.stale_order {
        return;
    }
    let mut order: Vec<(State, &str)> = inner.hosts.values().map(|h| (h.state, h.host.as_str())).collect();
    order.sort_unstable();
    let order: Vec<String> = order.into_iter().map(|(_, name)| name.to_owned()).collect();
    let all: Vec<&HostStatus> = inner.hosts.values().collect();
    inner.summary = summarize(&all);
    inner.order = order;
    inner.stale_order = false;
}
