//! The deploy history, in SQLite: runs, per-host results, phases with
//! timings, findings, and per host the last generation that booted healthy.
//! Default place: `$XDG_STATE_HOME/fleetgate/history.sqlite`
//! (`~/.local/state/fleetgate/history.sqlite`).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::DeployError;
use crate::report::{HostReport, Outcome, RunReport};

/// The history database.
pub struct History {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY,
  flake TEXT NOT NULL,
  strategy TEXT NOT NULL,
  hosts TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  duration_ms INTEGER,
  exit_code INTEGER
);
CREATE TABLE IF NOT EXISTS host_results (
  run_id TEXT NOT NULL REFERENCES runs(id),
  host TEXT NOT NULL,
  outcome TEXT NOT NULL,
  standing TEXT NOT NULL,
  action TEXT,
  previous_system TEXT,
  new_system TEXT,
  running_system TEXT,
  rolled_back INTEGER NOT NULL,
  message TEXT NOT NULL,
  PRIMARY KEY (run_id, host)
);
CREATE TABLE IF NOT EXISTS phases (
  run_id TEXT NOT NULL,
  host TEXT NOT NULL,
  seq INTEGER NOT NULL,
  phase TEXT NOT NULL,
  start_ms INTEGER NOT NULL,
  duration_ms INTEGER NOT NULL,
  ok INTEGER NOT NULL,
  detail TEXT NOT NULL,
  PRIMARY KEY (run_id, host, seq)
);
CREATE TABLE IF NOT EXISTS findings (
  run_id TEXT NOT NULL,
  host TEXT NOT NULL,
  id TEXT NOT NULL,
  severity TEXT NOT NULL,
  message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS last_good (
  host TEXT PRIMARY KEY,
  system TEXT NOT NULL,
  run_id TEXT NOT NULL,
  recorded_at INTEGER NOT NULL
);
";

/// The default database path.
#[must_use]
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("fleetgate/history.sqlite")
}

/// The hosts of the last run that need another try, and its flake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// The run.
    pub run_id: String,
    /// Its flake.
    pub flake: String,
    /// Hosts that did not end deployed or up to date.
    pub hosts: Vec<String>,
}

impl History {
    /// Opens (creating) the database at `path`.
    ///
    /// # Errors
    /// [`DeployError::StateDir`], [`DeployError::History`].
    pub fn open(path: &Path) -> Result<History, DeployError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| DeployError::StateDir { path: dir.to_owned(), source })?;
        }
        let err = |source| DeployError::History { path: path.to_owned(), source };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(History { conn, path: path.to_owned() })
    }

    fn err(&self, source: rusqlite::Error) -> DeployError {
        DeployError::History { path: self.path.clone(), source }
    }

    /// Where the database is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the start of a run.
    ///
    /// # Errors
    /// [`DeployError::History`].
    pub fn start_run(
        &self,
        run_id: &str,
        flake: &str,
        strategy: &str,
        hosts: &[String],
        started_at: u64,
    ) -> Result<(), DeployError> {
        self.conn
            .execute(
                "INSERT INTO runs (id, flake, strategy, hosts, started_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, flake, strategy, hosts.join(" "), i64::try_from(started_at).unwrap_or(i64::MAX)],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records one host's result (with phases and findings, and its last
    /// good generation when it booted one).
    ///
    /// # Errors
    /// [`DeployError::History`].
    pub fn record_host(&mut self, run_id: &str, h: &HostReport, now: u64) -> Result<(), DeployError> {
        let tx = self.conn.transaction().map_err(|e| DeployError::History { path: self.path.clone(), source: e })?;
        let result = (|| {
            tx.execute(
                "INSERT OR REPLACE INTO host_results VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    run_id,
                    h.host,
                    h.outcome.as_str(),
                    serde_json::to_value(h.standing)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    h.action.map(crate::plan::Action::as_str),
                    h.previous_system,
                    h.new_system,
                    h.running_system,
                    h.rolled_back,
                    h.message
                ],
            )?;
            for (seq, p) in h.phases.iter().enumerate() {
                tx.execute(
                    "INSERT OR REPLACE INTO phases VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        run_id,
                        h.host,
                        i64::try_from(seq).unwrap_or(i64::MAX),
                        p.phase.as_str(),
                        i64::try_from(p.start_ms).unwrap_or(i64::MAX),
                        i64::try_from(p.duration_ms).unwrap_or(i64::MAX),
                        p.ok,
                        p.detail
                    ],
                )?;
            }
            for f in &h.findings {
                tx.execute(
                    "INSERT INTO findings VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![run_id, h.host, f.id, f.severity.as_str(), f.message],
                )?;
            }
            if let Some(system) = &h.booted_healthy {
                tx.execute(
                    "INSERT OR REPLACE INTO last_good VALUES (?1, ?2, ?3, ?4)",
                    params![h.host, system, run_id, i64::try_from(now).unwrap_or(i64::MAX)],
                )?;
            }
            Ok(())
        })();
        result.and_then(|()| tx.commit()).map_err(|e| self.err(e))
    }

    /// Records the end of a run.
    ///
    /// # Errors
    /// [`DeployError::History`].
    pub fn finish_run(&self, report: &RunReport) -> Result<(), DeployError> {
        self.conn
            .execute(
                "UPDATE runs SET duration_ms = ?2, exit_code = ?3 WHERE id = ?1",
                params![report.run_id, i64::try_from(report.duration_ms).unwrap_or(i64::MAX), report.exit_code],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The last run's hosts that did not end well (failed, unreachable,
    /// blocked, skipped, or never recorded because the run was killed).
    ///
    /// # Errors
    /// [`DeployError::History`], [`DeployError::NothingToResume`].
    pub fn unfinished(&self) -> Result<Unfinished, DeployError> {
        let last: Option<(String, String, String)> = self
            .conn
            .query_row("SELECT id, flake, hosts FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(|e| self.err(e))?;
        let Some((run_id, flake, hosts)) = last else {
            return Err(DeployError::NothingToResume { path: self.path.clone() });
        };
        let mut stmt =
            self.conn.prepare("SELECT host, outcome FROM host_results WHERE run_id = ?1").map_err(|e| self.err(e))?;
        let done: Vec<(String, String)> = stmt
            .query_map([&run_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))?;
        let ok = |h: &str| {
            done.iter().any(|(host, outcome)| {
                host == h && (outcome == Outcome::Deployed.as_str() || outcome == Outcome::UpToDate.as_str())
            })
        };
        Ok(Unfinished {
            hosts: hosts.split_whitespace().filter(|h| !ok(h)).map(str::to_owned).collect(),
            run_id,
            flake,
        })
    }

    /// The last generation that booted healthy on `host`.
    ///
    /// # Errors
    /// [`DeployError::History`].
    pub fn last_good(&self, host: &str) -> Result<Option<String>, DeployError> {
        self.conn
            .query_row("SELECT system FROM last_good WHERE host = ?1", [host], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{HostReport, Outcome};

    #[test]
    fn resume_finds_the_hosts_that_did_not_end_well() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut h = History::open(&dir.path().join("a/b/history.sqlite")).expect("open");
        assert!(matches!(h.unfinished(), Err(DeployError::NothingToResume { .. })));
        let hosts = vec!["web1".to_owned(), "web2".to_owned(), "db1".to_owned()];
        h.start_run("r1", ".", "all", &hosts, 10).expect("start");
        let mut ok = HostReport::untouched("web1", Outcome::Deployed, "fine");
        ok.booted_healthy = Some("/nix/store/x-sys".into());
        h.record_host("r1", &ok, 11).expect("record");
        h.record_host("r1", &HostReport::untouched("web2", Outcome::Unreachable, "down"), 11).expect("record");
        // db1 never recorded (killed run): also unfinished.
        let u = h.unfinished().expect("unfinished");
        assert_eq!((u.run_id.as_str(), u.hosts.as_slice()), ("r1", ["web2".to_owned(), "db1".to_owned()].as_slice()));
        assert_eq!(h.last_good("web1").expect("q").as_deref(), Some("/nix/store/x-sys"));
        assert_eq!(h.last_good("web2").expect("q"), None);
    }
}
