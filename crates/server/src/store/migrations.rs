//! Versioned schema migrations, for SQLite and PostgreSQL.
//!
//! The database records the versions applied in `schema_migrations(version,
//! applied_at)`. A database from before versioning (`channel serve` of fleetgate 0.1: the
//! `manifests` and `reports` tables, no `schema_migrations`) is at version 1. Opening a
//! database applies every newer migration in one transaction, then [`backfill`]s what a
//! migration cannot express in SQL; a database *newer* than this fleetgate is refused
//! (an older binary must not write into a schema it does not know).
//!
//! | version | what |
//! | --- | --- |
//! | 1 | `manifests` (latest document per host), `reports` (host, time, status, commit, system, message) |
//! | 2 | `reports.version` and `reports.document` (the v2 report as received); `hosts` (per host the merged status model and a change sequence number); `store_meta` (the last sweep of old reports) |
use fleetgate_status::HostStatus;
use fleetgate_status::report::{AgentReport, ReportV1};

/// The newest schema version.
pub const LATEST: u32 = 2;

/// A back end's SQL dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.
    Sqlite,
    /// PostgreSQL 12+.
    Postgres,
}

/// The SQL of migration `version` (2..=[`LATEST`]; version 1 is [`V1_SQLITE`] /
/// [`V1_POSTGRES`]).
#[must_use]
pub fn sql(version: u32, dialect: Dialect) -> &'static str {
    match (version, dialect) {
        (1, Dialect::Sqlite) => V1_SQLITE,
        (1, Dialect::Postgres) => V1_POSTGRES,
        (2, Dialect::Sqlite) => V2_SQLITE,
        (2, Dialect::Postgres) => V2_POSTGRES,
        _ => "",
    }
}

/// Version 1, exactly as `channel serve` created it before schema versions existed.
pub const V1_SQLITE: &str = "
CREATE TABLE IF NOT EXISTS manifests (
    host TEXT PRIMARY KEY,
    document BLOB NOT NULL,
    commit_id TEXT NOT NULL,
    system TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY,
    host TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    commit_id TEXT,
    system TEXT,
    message TEXT
);
CREATE INDEX IF NOT EXISTS reports_by_host ON reports (host, id);
";

const V1_POSTGRES: &str = "
CREATE TABLE IF NOT EXISTS manifests (
    host TEXT PRIMARY KEY,
    document BYTEA NOT NULL,
    commit_id TEXT NOT NULL,
    system TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    id BIGSERIAL PRIMARY KEY,
    host TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    commit_id TEXT,
    system TEXT,
    message TEXT
);
CREATE INDEX IF NOT EXISTS reports_by_host ON reports (host, id);
";

const V2_SQLITE: &str = "
ALTER TABLE reports ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE reports ADD COLUMN document TEXT;
CREATE TABLE hosts (
    host TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX hosts_by_seq ON hosts (seq);
CREATE TABLE store_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

const V2_POSTGRES: &str = "
ALTER TABLE reports ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE reports ADD COLUMN document TEXT;
CREATE SEQUENCE host_seq;
CREATE TABLE hosts (
    host TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    status TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX hosts_by_seq ON hosts (seq);
CREATE TABLE store_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
";

/// What version 2 adds that SQL cannot: a host row for every host that has a manifest
/// or a report, from the manifest row (`commit`, `system`, `updated_at`) and the newest
/// version-1 report (`status`, `commit`, `system`, `message`, `received_at`).
#[must_use]
pub fn backfill(host: &str, manifest: Option<(String, String, i64)>, report: Option<(ReportV1, i64)>) -> HostStatus {
    let mut status = HostStatus::new(host);
    if let Some((commit, system, updated_at)) = manifest {
        fleetgate_status::merge::apply_manifest(&mut status, &commit, &system, updated_at, updated_at);
    }
    if let Some((report, received_at)) = report {
        fleetgate_status::merge::apply_report(&mut status, &AgentReport::V1(report), received_at);
    }
    status
}

/// Why a database cannot be used.
#[must_use]
pub fn too_new(found: u32) -> String {
    format!(
        "the database is at schema version {found}, newer than this fleetgate knows ({LATEST}); run a newer \
         fleetgate, or point --db elsewhere"
    )
}
