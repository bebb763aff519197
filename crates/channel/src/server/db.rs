//! The server's SQLite database: latest manifest per host, and host reports.
use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::Serialize;

use crate::error::ChannelError;

/// An open database.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
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
    /// Opens (and creates) the database.
    pub fn open(path: &Path) -> Result<Self, ChannelError> {
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
        Ok(Self { conn })
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

    /// Appends a report.
    pub fn add_report(&self, host: &str, r: &Report) -> Result<(), ChannelError> {
        self.conn
            .execute(
                "INSERT INTO reports (host, received_at, status, commit_id, system, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![host, r.received_at, r.status, r.commit, r.system, r.message],
            )
            .map_err(sql_err)?;
        Ok(())
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
