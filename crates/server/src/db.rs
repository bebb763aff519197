//! The server's SQLite database: latest manifest per host, and host reports.
//!
//! Reports are bounded ([`Retention`]): each host keeps its newest
//! [`Retention::per_host`] reports (100), and reports older than [`Retention::max_age`]
//! (30 days) are deleted — except each host's newest, which the fleet status shows.
//! Only hosts with a token can report, so the table holds at most
//! `hosts × per_host` rows.
use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::Serialize;

use fleetgate_channel::error::ChannelError;

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

/// An open database.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
    retention: Retention,
}

/// A host's last report.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Report {
    /// When it arrived (Unix seconds).
    pub received_at: i64,
    /// `ok`, `failed`, `rolled-back`, … (the agent's words).
    pub status: String,
    /// The commit it runs.
    pub commit: Option<String>,
    /// The system it runs.
    pub system: Option<String>,
    /// Free text.
    pub message: Option<String>,
}

fn sql_err(e: rusqlite::Error) -> ChannelError {
    ChannelError::Database(e.to_string())
}

impl Db {
    /// Opens (and creates) the database, with the default [`Retention`].
    pub fn open(path: &Path) -> Result<Self, ChannelError> {
        Self::open_with(path, Retention::default())
    }

    /// Opens (and creates) the database.
    pub fn open_with(path: &Path, retention: Retention) -> Result<Self, ChannelError> {
        let conn = Connection::open(path).map_err(sql_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA busy_timeout = 5000;
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
             CREATE INDEX IF NOT EXISTS reports_by_host ON reports (host, id);",
        )
        .map_err(sql_err)?;
        Ok(Self { conn, retention })
    }

    /// Stores a host's manifest document.
    pub fn put_manifest(
        &self,
        host: &str,
        document: &[u8],
        commit: &str,
        system: &str,
        now: i64,
    ) -> Result<(), ChannelError> {
        self.conn
            .execute(
                "INSERT INTO manifests (host, document, commit_id, system, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (host) DO UPDATE SET document = ?2, commit_id = ?3,
                     system = ?4, updated_at = ?5",
                params![host, document, commit, system, now],
            )
            .map_err(sql_err)?;
        Ok(())
    }

    /// All manifests: host → document.
    pub fn manifests(&self) -> Result<Vec<(String, Vec<u8>)>, ChannelError> {
        let mut st = self.conn.prepare("SELECT host, document FROM manifests ORDER BY host").map_err(sql_err)?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql_err)?;
        rows.collect::<Result<_, _>>().map_err(sql_err)
    }

    /// Appends a report, then drops what the [`Retention`] no longer keeps.
    pub fn add_report(&self, host: &str, r: &Report) -> Result<(), ChannelError> {
        self.conn
            .execute(
                "INSERT INTO reports (host, received_at, status, commit_id, system, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![host, r.received_at, r.status, r.commit, r.system, r.message],
            )
            .map_err(sql_err)?;
        self.conn
            .execute(
                "DELETE FROM reports WHERE host = ?1 AND id NOT IN
                     (SELECT id FROM reports WHERE host = ?1 ORDER BY id DESC LIMIT ?2)",
                params![host, self.retention.per_host],
            )
            .map_err(sql_err)?;
        self.conn
            .execute(
                "DELETE FROM reports WHERE received_at < ?1
                     AND id NOT IN (SELECT MAX(id) FROM reports GROUP BY host)",
                params![r.received_at.saturating_sub(self.retention.max_age_secs)],
            )
            .map_err(sql_err)?;
        Ok(())
    }

    /// How many reports of a host are stored.
    pub fn report_count(&self, host: &str) -> Result<u64, ChannelError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM reports WHERE host = ?1", params![host], |r| r.get(0))
            .map_err(sql_err)
    }

    /// The latest report of a host.
    pub fn last_report(&self, host: &str) -> Result<Option<Report>, ChannelError> {
        self.conn
            .query_row(
                "SELECT received_at, status, commit_id, system, message FROM reports
                 WHERE host = ?1 ORDER BY id DESC LIMIT 1",
                params![host],
                |r| {
                    Ok(Report {
                        received_at: r.get(0)?,
                        status: r.get(1)?,
                        commit: r.get(2)?,
                        system: r.get(3)?,
                        message: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(sql_err)
    }

    /// Every host that has a report.
    pub fn reporting_hosts(&self) -> Result<Vec<String>, ChannelError> {
        let mut st = self.conn.prepare("SELECT DISTINCT host FROM reports").map_err(sql_err)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(sql_err)?;
        rows.collect::<Result<_, _>>().map_err(sql_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(at: i64, status: &str) -> Report {
        Report { received_at: at, status: status.into(), commit: None, system: None, message: None }
    }

    #[test]
    fn reports_are_capped_per_host_and_old_ones_expire_but_each_hosts_newest_stays() {
        let db = Db::open_with(Path::new(":memory:"), Retention { per_host: 3, max_age_secs: 100 }).unwrap();
        db.add_report("quiet", &report(1_000, "ok")).unwrap();
        db.add_report("quiet", &report(1_010, "last words")).unwrap();
        for i in 0..10 {
            db.add_report("web1", &report(1_050 + i, &format!("r{i}"))).unwrap();
        }
        assert_eq!(db.report_count("web1").unwrap(), 3);
        assert_eq!(db.last_report("web1").unwrap().unwrap().status, "r9");
        // Much later: quiet's old reports expire, its newest one stays.
        db.add_report("web1", &report(5_000, "later")).unwrap();
        assert_eq!(db.report_count("quiet").unwrap(), 1);
        assert_eq!(db.last_report("quiet").unwrap().unwrap().status, "last words");
        assert_eq!(db.report_count("web1").unwrap(), 1);
        assert_eq!(db.last_report("web1").unwrap().unwrap().status, "later");
    }

    #[test]
    fn the_default_keeps_a_hundred_reports_for_thirty_days() {
        assert_eq!(Retention::default(), Retention { per_host: 100, max_age_secs: 2_592_000 });
    }
}
