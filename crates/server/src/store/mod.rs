//! The service's state: the latest manifest per host, host reports, and per host the
//! merged status model (`fleetgate-status`'s [`HostStatus`], without its time-dependent
//! state word).
//!
//! Two back ends behind one trait, [`Store`]:
//! - SQLite ([`sqlite`], the default: one file, one process);
//! - PostgreSQL ([`postgres`], for several `serve` processes behind a load balancer
//!   sharing one database).
//!
//! Both have versioned schema migrations ([`migrations`]): a database made by an older
//! fleetgate is upgraded when the service opens it, inside a transaction.
//!
//! Reports are bounded ([`Retention`]): each host keeps its newest
//! [`Retention::per_host`] reports (100), and reports older than
//! [`Retention::max_age_secs`] (30 days) are deleted — except each host's newest. A
//! report prunes its own host at once; the whole table is swept at most once an hour.
//! Only hosts with a token can report, so the table holds at most `hosts × per_host` rows.
//!
//! Every host row carries a sequence number, bumped at each change: a replica's
//! in-memory fleet ([`crate::fleet_cache`]) reads only rows changed since it last looked.
pub mod migrations;
pub mod postgres;
pub mod sqlite;

use fleetgate_channel::ChannelError;
use fleetgate_status::HostStatus;
use fleetgate_status::report::AgentReport;
use serde::Serialize;

/// How many reports are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Newest reports kept per host.
    pub per_host: u32,
    /// Reports older than this are deleted (each host's newest excepted), in seconds.
    pub max_age_secs: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Self { per_host: 100, max_age_secs: 30 * 24 * 3600 }
    }
}

/// Seconds between two sweeps of old reports over the whole table.
pub const SWEEP_INTERVAL: i64 = 3600;

/// A stored report.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Report {
    /// When it arrived (Unix seconds).
    pub received_at: i64,
    /// Its schema version (1 or 2).
    pub version: u32,
    /// The outcome word (v2: the result's outcome, or `none`; v1: the agent's status).
    pub status: String,
    /// The commit it runs (v1) or its result is about (v2).
    pub commit: Option<String>,
    /// The system it runs.
    pub system: Option<String>,
    /// Free text.
    pub message: Option<String>,
}

impl Report {
    /// The columns kept for a report (the v2 document is stored whole besides them).
    #[must_use]
    pub fn of(report: &AgentReport, received_at: i64) -> Report {
        match report {
            AgentReport::V1(r) => Report {
                received_at,
                version: 1,
                status: r.status.clone(),
                commit: r.commit.clone(),
                system: r.system.clone(),
                message: r.message.clone(),
            },
            AgentReport::V2(r) => Report {
                received_at,
                version: 2,
                status: r.result.as_ref().map_or("none", |x| x.outcome.as_str()).to_owned(),
                commit: r.result.as_ref().and_then(|x| x.commit.clone()),
                system: r.current.clone(),
                message: r.result.as_ref().and_then(|x| x.message.clone()),
            },
        }
    }
}

/// A host row: its sequence number and merged status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRow {
    /// Bumped at every change of the row.
    pub seq: i64,
    /// The merged status (state not settled).
    pub status: HostStatus,
}

/// What the service keeps. Calls block (run them off the async workers).
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a host's manifest document, and sets its desired system.
    ///
    /// # Errors
    /// [`ChannelError::Database`].
    fn put_manifest(
        &self,
        host: &str,
        document: &[u8],
        commit: &str,
        system: &str,
        created_at: i64,
        now: i64,
    ) -> Result<(), ChannelError>;

    /// All manifests: host → document.
    ///
    /// # Errors
    /// [`ChannelError::Database`].
    fn manifests(&self) -> Result<Vec<(String, Vec<u8>)>, ChannelError>;

    /// One host's manifest document.
    ///
    /// # Errors
    /// [`ChannelError::Database`].
    fn manifest(&self, host: &str) -> Result<Option<Vec<u8>>, ChannelError>;

    /// Appends a report (validated; `document` is the body as received), folds it into
    /// the host's status, then drops what the [`Retention`] no longer keeps. Returns the
    /// host's new row.
    ///
    /// # Errors
    /// [`ChannelError::Database`].
    fn add_report(
        &self,
        host: &str,
        report: &AgentReport,
        document: &str,
        received_at: i64,
    ) -> Result<HostRow, ChannelError>;

    /// The newest reports of a host, newest first (at most `limit`).
    ///
    /// # Errors
    /// [`ChannelError::Database`].
    fn reports(&self, host: &str, limit: u32) -> Result<Vec<Report>, ChannelError>;

    /// How many reports of a host are stored.
    ///
    /// # Errors
    /// [`ChannelError::Database`].
    fn report_count(&self, host: &str) -> Result<u64, ChannelError>;

    /// Host rows changed after sequence number `after`, in sequence order.
    ///
    /// # Errors
    /// [`ChannelError::Database`].
    fn hosts_since(&self, after: i64) -> Result<Vec<HostRow>, ChannelError>;

    /// The hosts whose rows changed after sequence number `after`, with their sequence
    /// numbers (no statuses: cheap to re-read).
    ///
    /// # Errors
    /// [`ChannelError::Database`].
    fn changed_since(&self, after: i64) -> Result<Vec<(String, i64)>, ChannelError>;

    /// The rows of these hosts (those that exist).
    ///
    /// # Errors
    /// [`ChannelError::Database`].
    fn host_rows(&self, hosts: &[String]) -> Result<Vec<HostRow>, ChannelError>;

    /// True if sequence numbers become visible in order (a single writer, as SQLite);
    /// false if a smaller number may commit after a larger one was read (PostgreSQL).
    fn seq_commit_ordered(&self) -> bool {
        true
    }

    /// The schema version the database is at.
    ///
    /// # Errors
    /// [`ChannelError::Database`].
    fn schema_version(&self) -> Result<u32, ChannelError>;
}

/// Where the state is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// A SQLite file (`:memory:` for a throwaway one).
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL connection string (`postgresql://…` or `host=… dbname=…`).
    Postgres(String),
}

impl StoreConfig {
    /// Opens (creating or upgrading) the store.
    ///
    /// # Errors
    /// [`ChannelError::Database`].
    pub fn open(&self, retention: Retention) -> Result<Box<dyn Store>, ChannelError> {
        Ok(match self {
            StoreConfig::Sqlite(path) => Box::new(sqlite::SqliteStore::open_with(path, retention)?),
            StoreConfig::Postgres(conninfo) => Box::new(postgres::PostgresStore::open(conninfo, retention)?),
        })
    }
}

impl From<std::path::PathBuf> for StoreConfig {
    fn from(path: std::path::PathBuf) -> Self {
        StoreConfig::Sqlite(path)
    }
}

/// Hosts per query of [`Store::host_rows`].
pub(crate) const ROWS_PER_QUERY: usize = 500;

/// A store error.
pub(crate) fn db_err(e: impl std::fmt::Display) -> ChannelError {
    ChannelError::Database(e.to_string())
}

/// The host's status after the report: `previous` (or a new one) with `report` folded in.
pub(crate) fn merged(host: &str, previous: Option<&str>, report: &AgentReport, received_at: i64) -> HostStatus {
    let mut status = previous
        .and_then(|text| serde_json::from_str::<HostStatus>(text).ok())
        .unwrap_or_else(|| HostStatus::new(host));
    fleetgate_status::merge::apply_report(&mut status, report, received_at);
    status
}

/// The host's status after a manifest.
pub(crate) fn with_manifest(
    host: &str,
    previous: Option<&str>,
    commit: &str,
    system: &str,
    created_at: i64,
    now: i64,
) -> HostStatus {
    let mut status = previous
        .and_then(|text| serde_json::from_str::<HostStatus>(text).ok())
        .unwrap_or_else(|| HostStatus::new(host));
    fleetgate_status::merge::apply_manifest(&mut status, commit, system, created_at, now);
    status
}

/// The JSON kept for a host's status.
pub(crate) fn status_json(status: &HostStatus) -> Result<String, ChannelError> {
    serde_json::to_string(status).map_err(db_err)
}

#[cfg(test)]
pub(crate) mod tests {
    use fleetgate_status::report::ReportV1;

    use super::*;

    pub(crate) fn report(status: &str) -> AgentReport {
        AgentReport::V1(ReportV1 { status: status.into(), commit: None, system: None, message: None })
    }

    /// The retention contract, for any back end.
    pub(crate) fn reports_are_capped_per_host_and_old_ones_expire_but_each_hosts_newest_stays(db: &dyn Store) {
        db.add_report("quiet", &report("ok"), "{}", 1_000).unwrap();
        db.add_report("quiet", &report("last-words"), "{}", 1_010).unwrap();
        for i in 0..10 {
            db.add_report("web1", &report(&format!("r{i}")), "{}", 1_050 + i).unwrap();
        }
        assert_eq!(db.report_count("web1").unwrap(), 3);
        assert_eq!(db.reports("web1", 1).unwrap()[0].status, "r9");
        // Much later: quiet's old reports expire, its newest one stays.
        db.add_report("web1", &report("later"), "{}", 5_000).unwrap();
        assert_eq!(db.report_count("quiet").unwrap(), 1);
        assert_eq!(db.reports("quiet", 5).unwrap()[0].status, "last-words");
        assert_eq!(db.report_count("web1").unwrap(), 1);
        assert_eq!(db.reports("web1", 5).unwrap()[0].status, "later");
    }

    /// Host rows change with reports and manifests, and are read back by sequence.
    pub(crate) fn host_rows_follow_reports_and_manifests(db: &dyn Store) {
        let sys = "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-nixos-system-web1";
        db.put_manifest("web1", b"{}", &"a".repeat(40), sys, 90, 100).unwrap();
        let rows = db.hosts_since(0).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status.desired.as_ref().map(|d| d.system.as_str()), Some(sys));
        let after = rows[0].seq;
        assert!(db.hosts_since(after).unwrap().is_empty());
        db.add_report("web1", &report("ok"), "{}", 200).unwrap();
        db.add_report("db1", &report("failed"), "{}", 201).unwrap();
        let rows = db.hosts_since(after).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.status.host.as_str()).collect();
        assert_eq!(names, ["web1", "db1"]);
        assert!(rows[0].seq > after && rows[1].seq > rows[0].seq);
        assert_eq!(rows[0].status.last_seen, Some(200));
        assert!(rows[0].status.desired.is_some(), "the report kept the manifest's desired system");
        assert_eq!(db.manifests().unwrap(), [("web1".to_owned(), b"{}".to_vec())]);
        assert_eq!(db.schema_version().unwrap(), migrations::LATEST);
    }
}
