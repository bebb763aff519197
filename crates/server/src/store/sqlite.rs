//! The SQLite back end: one file (WAL), one connection behind a mutex.
use std::path::Path;
use std::sync::Mutex;

use fleetgate_channel::ChannelError;
use fleetgate_status::report::{AgentReport, ReportV1};
use rusqlite::{Connection, OptionalExtension as _, Transaction, params};

use super::migrations::{self, Dialect, LATEST};
use super::{HostRow, Report, Retention, SWEEP_INTERVAL, Store, db_err, merged, status_json, with_manifest};

/// A SQLite database.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    retention: Retention,
}

impl SqliteStore {
    /// Opens (creating or upgrading) the database, with the default [`Retention`].
    ///
    /// # Errors
    /// [`ChannelError::Database`].
    pub fn open(path: &Path) -> Result<Self, ChannelError> {
        Self::open_with(path, Retention::default())
    }

    /// Opens (creating or upgrading) the database.
    ///
    /// # Errors
    /// [`ChannelError::Database`].
    pub fn open_with(path: &Path, retention: Retention) -> Result<Self, ChannelError> {
        let mut conn = Connection::open(path).map_err(db_err)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;").map_err(db_err)?;
        migrate(&mut conn)?;
        Ok(Self { conn: Mutex::new(conn), retention })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, ChannelError> {
        self.conn.lock().map_err(|_| ChannelError::Database("lock poisoned".into()))
    }
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool, ChannelError> {
    conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1", [name], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n > 0)
    .map_err(db_err)
}

fn migrate(conn: &mut Connection) -> Result<(), ChannelError> {
    let tx = conn.transaction().map_err(db_err)?;
    let versioned = table_exists(&tx, "schema_migrations")?;
    let legacy = !versioned && table_exists(&tx, "manifests")?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(db_err)?;
    if legacy {
        tx.execute("INSERT INTO schema_migrations VALUES (1, strftime('%s','now'))", []).map_err(db_err)?;
    }
    let at: u32 =
        tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0)).map_err(db_err)?;
    if at > LATEST {
        return Err(ChannelError::Database(migrations::too_new(at)));
    }
    for version in at + 1..=LATEST {
        tx.execute_batch(migrations::sql(version, Dialect::Sqlite)).map_err(db_err)?;
        if version == 2 {
            backfill(&tx)?;
        }
        tx.execute("INSERT INTO schema_migrations VALUES (?1, strftime('%s','now'))", [version]).map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

/// Migration 2's host rows, from the manifests and each host's newest report.
fn backfill(tx: &Transaction<'_>) -> Result<(), ChannelError> {
    let mut hosts: Vec<String> = {
        let mut st =
            tx.prepare("SELECT host FROM manifests UNION SELECT DISTINCT host FROM reports").map_err(db_err)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)?
    };
    hosts.sort();
    for (seq, host) in (1_i64..).zip(hosts) {
        let manifest = tx
            .query_row("SELECT commit_id, system, updated_at FROM manifests WHERE host = ?1", [&host], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(db_err)?;
        let report = tx
            .query_row(
                "SELECT status, commit_id, system, message, received_at FROM reports WHERE host = ?1
                 ORDER BY id DESC LIMIT 1",
                [&host],
                |r| {
                    Ok((
                        ReportV1 { status: r.get(0)?, commit: r.get(1)?, system: r.get(2)?, message: r.get(3)? },
                        r.get(4)?,
                    ))
                },
            )
            .optional()
            .map_err(db_err)?;
        let status = migrations::backfill(&host, manifest, report);
        let updated = status.last_seen.unwrap_or(0);
        tx.execute("INSERT INTO hosts VALUES (?1, ?2, ?3, ?4)", params![host, seq, status_json(&status)?, updated])
            .map_err(db_err)?;
    }
    Ok(())
}

/// Writes a host row with the next sequence number (the caller holds the write lock);
/// returns that number.
fn write_host(tx: &Transaction<'_>, host: &str, status: &str, now: i64) -> Result<i64, ChannelError> {
    tx.query_row(
        "INSERT INTO hosts (host, seq, status, updated_at)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM hosts), ?2, ?3)
         ON CONFLICT (host) DO UPDATE SET seq = excluded.seq, status = excluded.status, updated_at = excluded.updated_at
         RETURNING seq",
        params![host, status, now],
        |r| r.get(0),
    )
    .map_err(db_err)
}

fn host_status(tx: &Transaction<'_>, host: &str) -> Result<Option<String>, ChannelError> {
    tx.query_row("SELECT status FROM hosts WHERE host = ?1", [host], |r| r.get(0)).optional().map_err(db_err)
}

impl Store for SqliteStore {
    fn put_manifest(
        &self,
        host: &str,
        document: &[u8],
        commit: &str,
        system: &str,
        created_at: i64,
        now: i64,
    ) -> Result<(), ChannelError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(db_err)?;
        tx.execute(
            "INSERT INTO manifests (host, document, commit_id, system, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (host) DO UPDATE SET document = ?2, commit_id = ?3, system = ?4, updated_at = ?5",
            params![host, document, commit, system, now],
        )
        .map_err(db_err)?;
        let status = with_manifest(host, host_status(&tx, host)?.as_deref(), commit, system, created_at, now);
        write_host(&tx, host, &status_json(&status)?, now)?;
        tx.commit().map_err(db_err)
    }

    fn manifests(&self) -> Result<Vec<(String, Vec<u8>)>, ChannelError> {
        let conn = self.lock()?;
        let mut st = conn.prepare("SELECT host, document FROM manifests ORDER BY host").map_err(db_err)?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)
    }

    fn manifest(&self, host: &str) -> Result<Option<Vec<u8>>, ChannelError> {
        let conn = self.lock()?;
        conn.query_row("SELECT document FROM manifests WHERE host = ?1", [host], |r| r.get(0))
            .optional()
            .map_err(db_err)
    }

    fn add_report(
        &self,
        host: &str,
        report: &AgentReport,
        document: &str,
        received_at: i64,
    ) -> Result<HostRow, ChannelError> {
        let r = Report::of(report, received_at);
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(db_err)?;
        tx.execute(
            "INSERT INTO reports (host, received_at, status, commit_id, system, message, version, document)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                host,
                received_at,
                r.status,
                r.commit,
                r.system,
                r.message,
                r.version,
                (r.version >= 2).then_some(document)
            ],
        )
        .map_err(db_err)?;
        let status = merged(host, host_status(&tx, host)?.as_deref(), report, received_at);
        let seq = write_host(&tx, host, &status_json(&status)?, received_at)?;
        let oldest = received_at.saturating_sub(self.retention.max_age_secs);
        tx.execute(
            "DELETE FROM reports WHERE host = ?1 AND id NOT IN
                 (SELECT id FROM reports WHERE host = ?1 ORDER BY id DESC LIMIT ?2)",
            params![host, self.retention.per_host],
        )
        .map_err(db_err)?;
        tx.execute(
            "DELETE FROM reports WHERE host = ?1 AND received_at < ?2
                 AND id <> (SELECT MAX(id) FROM reports WHERE host = ?1)",
            params![host, oldest],
        )
        .map_err(db_err)?;
        let last_sweep: i64 = tx
            .query_row("SELECT value FROM store_meta WHERE key = 'last_sweep'", [], |r| r.get(0))
            .optional()
            .map_err(db_err)?
            .unwrap_or(i64::MIN);
        if received_at.saturating_sub(last_sweep) >= SWEEP_INTERVAL {
            tx.execute(
                "DELETE FROM reports WHERE received_at < ?1
                     AND id NOT IN (SELECT MAX(id) FROM reports GROUP BY host)",
                params![oldest],
            )
            .map_err(db_err)?;
            tx.execute(
                "INSERT INTO store_meta VALUES ('last_sweep', ?1) ON CONFLICT (key) DO UPDATE SET value = ?1",
                [received_at],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(HostRow { seq, status })
    }

    fn reports(&self, host: &str, limit: u32) -> Result<Vec<Report>, ChannelError> {
        let conn = self.lock()?;
        let mut st = conn
            .prepare(
                "SELECT received_at, version, status, commit_id, system, message FROM reports
                 WHERE host = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(db_err)?;
        let rows = st
            .query_map(params![host, limit], |r| {
                Ok(Report {
                    received_at: r.get(0)?,
                    version: r.get(1)?,
                    status: r.get(2)?,
                    commit: r.get(3)?,
                    system: r.get(4)?,
                    message: r.get(5)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)
    }

    fn report_count(&self, host: &str) -> Result<u64, ChannelError> {
        let conn = self.lock()?;
        conn.query_row("SELECT COUNT(*) FROM reports WHERE host = ?1", [host], |r| r.get(0)).map_err(db_err)
    }

    fn hosts_since(&self, after: i64) -> Result<Vec<HostRow>, ChannelError> {
        let conn = self.lock()?;
        let mut st = conn.prepare("SELECT seq, status FROM hosts WHERE seq > ?1 ORDER BY seq").map_err(db_err)?;
        let rows = st.query_map([after], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, text) = row.map_err(db_err)?;
            let status = serde_json::from_str(&text).map_err(db_err)?;
            out.push(HostRow { seq, status });
        }
        Ok(out)
    }

    fn changed_since(&self, after: i64) -> Result<Vec<(String, i64)>, ChannelError> {
        let conn = self.lock()?;
        let mut st = conn.prepare("SELECT host, seq FROM hosts WHERE seq > ?1 ORDER BY seq").map_err(db_err)?;
        let rows = st.query_map([after], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)
    }

    fn host_rows(&self, hosts: &[String]) -> Result<Vec<HostRow>, ChannelError> {
        let conn = self.lock()?;
        let mut out = Vec::new();
        for chunk in hosts.chunks(super::ROWS_PER_QUERY) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut st =
                conn.prepare(&format!("SELECT seq, status FROM hosts WHERE host IN ({marks})")).map_err(db_err)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(chunk), |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .map_err(db_err)?;
            for row in rows {
                let (seq, text) = row.map_err(db_err)?;
                out.push(HostRow { seq, status: serde_json::from_str(&text).map_err(db_err)? });
            }
        }
        Ok(out)
    }

    fn schema_version(&self) -> Result<u32, ChannelError> {
        let conn = self.lock()?;
        conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| r.get(0)).map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests;

    fn memory(retention: Retention) -> SqliteStore {
        SqliteStore::open_with(Path::new(":memory:"), retention).unwrap()
    }

    #[test]
    fn reports_are_capped_per_host_and_old_ones_expire_but_each_hosts_newest_stays() {
        let db = memory(Retention { per_host: 3, max_age_secs: 100 });
        tests::reports_are_capped_per_host_and_old_ones_expire_but_each_hosts_newest_stays(&db);
    }

    #[test]
    fn host_rows_follow_reports_and_manifests() {
        tests::host_rows_follow_reports_and_manifests(&memory(Retention::default()));
    }

    #[test]
    fn the_default_keeps_a_hundred_reports_for_thirty_days() {
        assert_eq!(Retention::default(), Retention { per_host: 100, max_age_secs: 2_592_000 });
    }

    #[test]
    fn a_database_of_the_unversioned_schema_is_upgraded_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        let sys = "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-nixos-system-web1";
        {
            // Exactly what channel serve made before schema versions.
            let old = Connection::open(&path).unwrap();
            old.execute_batch(migrations::V1_SQLITE).unwrap();
            old.execute("INSERT INTO manifests VALUES ('web1', x'7b7d', ?1, ?2, 100)", params!["a".repeat(40), sys])
                .unwrap();
            old.execute(
                "INSERT INTO reports (host, received_at, status, system, message) VALUES ('web1', 150, 'ok', ?1, NULL)",
                [sys],
            )
            .unwrap();
            old.execute("INSERT INTO reports (host, received_at, status) VALUES ('db1', 160, 'failed')", []).unwrap();
        }
        let db = SqliteStore::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), LATEST);
        let rows = db.hosts_since(0).unwrap();
        let web1 = rows.iter().find(|r| r.status.host == "web1").unwrap();
        assert_eq!(web1.status.current.as_deref(), Some(sys));
        assert_eq!(web1.status.desired.as_ref().unwrap().system, sys);
        assert!(rows.iter().any(|r| r.status.host == "db1"));
        assert_eq!(db.reports("web1", 10).unwrap()[0].version, 1);
        // Opening again changes nothing.
        drop(db);
        let db = SqliteStore::open(&path).unwrap();
        assert_eq!(db.hosts_since(0).unwrap().len(), 2);
    }

    #[test]
    fn a_database_newer_than_this_fleetgate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.sqlite");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path).unwrap().execute("INSERT INTO schema_migrations VALUES (99, 0)", []).unwrap();
        let err = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }
}
