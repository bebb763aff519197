//! Reading the deploy history ([`crate::history`]) back, for `fleetgate
//! history`: the runs newest first, one run with every host's outcome, phases
//! and findings, one host across runs.
//!
//! The database is opened **read-only** (`SQLITE_OPEN_READ_ONLY`): reading
//! never creates, migrates or locks out a deploy that is writing. Before any
//! query the file must be a regular file (a FIFO would block `open(2)`), a
//! SQLite database, and have the tables and columns this module reads —
//! otherwise a [`HistoryReadError`] says which of these it is. Every list is
//! bounded by a `LIMIT`; a writer holding the lock is waited for at most
//! [`BUSY_TIMEOUT`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};
use serde::Serialize;

/// How long a query waits for a deploy that holds the database's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most rows any one list returns, whatever the caller asks.
pub const MAX_LIMIT: usize = 10_000;

/// The tables and columns this module reads; a database without them is not
/// (this version of) fleetgate's history.
const REQUIRED: &[(&str, &[&str])] = &[
    ("runs", &["id", "flake", "strategy", "hosts", "started_at", "duration_ms", "exit_code"]),
    (
        "host_results",
        &[
            "run_id",
            "host",
            "outcome",
            "standing",
            "action",
            "previous_system",
            "new_system",
            "running_system",
            "rolled_back",
            "message",
        ],
    ),
    ("phases", &["run_id", "host", "seq", "phase", "start_ms", "duration_ms", "ok", "detail"]),
    ("findings", &["run_id", "host", "id", "severity", "message"]),
];

/// Why the history cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryReadError {
    /// No file there.
    #[error("there is no deploy history at {}", path.display())]
    Missing {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file cannot be opened or is not a regular file.
    #[error("cannot read the deploy history {}: {reason}", path.display())]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Not a SQLite database: another kind of file, or a corrupt one.
    #[error("{} is not a SQLite database (another kind of file, or a corrupt one)", path.display())]
    NotADatabase {
        /// The path.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A SQLite database, but not fleetgate's history.
    #[error("{} is a SQLite database but not a fleetgate deploy history: it lacks {missing}", path.display())]
    Foreign {
        /// The path.
        path: PathBuf,
        /// The first table or column it lacks (`table runs`, `column runs.flake`).
        missing: String,
    },
    /// A query failed.
    #[error("reading the deploy history {} failed", path.display())]
    Query {
        /// The path.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// No run has that id (or id prefix).
    #[error("the deploy history {} has no run {id:?}", path.display())]
    NoSuchRun {
        /// The path.
        path: PathBuf,
        /// The id asked for.
        id: String,
    },
    /// Several runs start with that prefix.
    #[error("{id:?} names several runs: {}", candidates.join(", "))]
    AmbiguousRun {
        /// The prefix asked for.
        id: String,
        /// Some of the runs it matches.
        candidates: Vec<String>,
    },
}

/// One run, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: String,
    /// The flake it deployed, as recorded.
    pub flake: String,
    /// Its strategy.
    pub strategy: String,
    /// Seconds since the Unix epoch at its start.
    pub started_at: u64,
    /// How long it took; `None` when it never finished (killed, or still running).
    pub duration_ms: Option<u64>,
    /// Its exit code; `None` when it never finished.
    pub exit_code: Option<i32>,
    /// The hosts it selected, in order.
    pub hosts: Vec<String>,
    /// How many of its hosts ended with each outcome (`deployed`, `failed`, …);
    /// hosts never recorded (the run was killed) are counted as `unrecorded`.
    pub outcomes: BTreeMap<String, u64>,
}

/// One phase of a host's deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhaseRow {
    /// The phase (`copy`, `activate`, …).
    pub phase: String,
    /// Milliseconds after the host's start.
    pub start_ms: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// Whether it succeeded.
    pub ok: bool,
    /// What it did or why it failed.
    pub detail: String,
}

/// One finding of a host's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FindingRow {
    /// Its id (`initrd.missing-modules`, …).
    pub id: String,
    /// `error`, `warning` or `info`.
    pub severity: String,
    /// Its message.
    pub message: String,
}

/// One host's result in one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRecord {
    /// The run.
    pub run_id: String,
    /// The host.
    pub host: String,
    /// How it ended (`deployed`, `up-to-date`, `blocked`, `failed`, `unreachable`, `skipped`).
    pub outcome: String,
    /// Where it stood at the end (`known-good`, `unknown`).
    pub standing: String,
    /// What the plan said (`switch`, `boot`, …), when it got that far.
    pub action: Option<String>,
    /// The system it ran before.
    pub previous_system: Option<String>,
    /// The system deployed.
    pub new_system: Option<String>,
    /// The system it ran at the end, as last seen.
    pub running_system: Option<String>,
    /// Whether it was rolled back.
    pub rolled_back: bool,
    /// Why, and what to do next.
    pub message: String,
    /// Its phases with timings, in order.
    pub phases: Vec<PhaseRow>,
    /// Its plan's findings.
    pub findings: Vec<FindingRow>,
}

/// One run with its hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunDetail {
    /// The run.
    pub run: RunSummary,
    /// The recorded hosts, in the run's selection order.
    pub hosts: Vec<HostRecord>,
    /// Selected hosts with no record (the run was killed before they ended).
    pub unrecorded: Vec<String>,
}

/// The deploy history, open read-only.
pub struct HistoryReader {
    conn: Connection,
    path: PathBuf,
}

impl HistoryReader {
    /// Opens the database at `path` read-only and checks that it is
    /// fleetgate's history.
    ///
    /// # Errors
    /// [`HistoryReadError::Missing`], [`Unreadable`](HistoryReadError::Unreadable),
    /// [`NotADatabase`](HistoryReadError::NotADatabase), [`Foreign`](HistoryReadError::Foreign).
    pub fn open(path: &Path) -> Result<HistoryReader, HistoryReadError> {
        let unreadable = |reason: String| HistoryReadError::Unreadable { path: path.to_owned(), reason };
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HistoryReadError::Missing { path: path.to_owned() });
            }
            Err(e) => return Err(unreadable(e.to_string())),
            Ok(m) if !m.is_file() => return Err(unreadable("not a regular file".to_owned())),
            Ok(_) => {}
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| unreadable(e.to_string()))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| unreadable(e.to_string()))?;
        let reader = HistoryReader { conn, path: path.to_owned() };
        reader.check_schema()?;
        Ok(reader)
    }

    /// Where the database is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn query_err(&self, source: rusqlite::Error) -> HistoryReadError {
        HistoryReadError::Query { path: self.path.clone(), source }
    }

    fn check_schema(&self) -> Result<(), HistoryReadError> {
        for (table, columns) in REQUIRED {
            let mut stmt = self.conn.prepare("SELECT name FROM pragma_table_info(?1)").map_err(|e| self.open_err(e))?;
            let have: Vec<String> =
                stmt.query_map([table], |r| r.get(0)).and_then(Iterator::collect).map_err(|e| self.open_err(e))?;
            let missing = if have.is_empty() {
                Some(format!("the table {table}"))
            } else {
                columns.iter().find(|c| !have.iter().any(|h| h == *c)).map(|c| format!("the column {table}.{c}"))
            };
            if let Some(missing) = missing {
                return Err(HistoryReadError::Foreign { path: self.path.clone(), missing });
            }
        }
        Ok(())
    }

    /// The first query tells whether the file is a database at all.
    fn open_err(&self, source: rusqlite::Error) -> HistoryReadError {
        let not_a_database = matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
        );
        if not_a_database {
            HistoryReadError::NotADatabase { path: self.path.clone(), source }
        } else {
            self.query_err(source)
        }
    }

    /// The newest runs first, at most `limit` (capped at [`MAX_LIMIT`]).
    ///
    /// # Errors
    /// [`HistoryReadError::Query`].
    pub fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, HistoryReadError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, flake, strategy, hosts, started_at, duration_ms, exit_code FROM runs \
                 ORDER BY started_at DESC, rowid DESC LIMIT ?1",
            )
            .map_err(|e| self.query_err(e))?;
        let runs: Vec<RunSummary> =
            stmt.query_map([bounded(limit)], run_row).and_then(Iterator::collect).map_err(|e| self.query_err(e))?;
        runs.into_iter().map(|r| self.with_outcomes(r)).collect()
    }

    fn with_outcomes(&self, mut run: RunSummary) -> Result<RunSummary, HistoryReadError> {
        let mut stmt = self
            .conn
            .prepare("SELECT outcome, COUNT(*) FROM host_results WHERE run_id = ?1 GROUP BY outcome")
            .map_err(|e| self.query_err(e))?;
        let counts: Vec<(String, i64)> = stmt
            .query_map([&run.run_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(|e| self.query_err(e))?;
        let recorded: u64 = counts.iter().map(|(_, n)| unsigned(*n)).sum();
        run.outcomes = counts.into_iter().map(|(o, n)| (o, unsigned(n))).collect();
        let selected = u64::try_from(run.hosts.len()).unwrap_or(u64::MAX);
        if selected > recorded {
            run.outcomes.insert("unrecorded".to_owned(), selected - recorded);
        }
        Ok(run)
    }

    /// Finds a run by its id, a unique prefix of it, or `last` (the newest).
    ///
    /// # Errors
    /// [`HistoryReadError::NoSuchRun`], [`AmbiguousRun`](HistoryReadError::AmbiguousRun),
    /// [`Query`](HistoryReadError::Query).
    pub fn find_run(&self, id: &str) -> Result<RunSummary, HistoryReadError> {
        let no_such = || HistoryReadError::NoSuchRun { path: self.path.clone(), id: id.to_owned() };
        if id == "last" {
            return self.runs(1)?.into_iter().next().ok_or_else(no_such);
        }
        let select = "SELECT id, flake, strategy, hosts, started_at, duration_ms, exit_code FROM runs";
        let exact = self
            .conn
            .query_row(&format!("{select} WHERE id = ?1"), [id], run_row)
            .optional()
            .map_err(|e| self.query_err(e))?;
        if let Some(run) = exact {
            return self.with_outcomes(run);
        }
        // A prefix: `substr` rather than LIKE, whose `%` and `_` a run id could hold.
        let mut stmt = self
            .conn
            .prepare(&format!("{select} WHERE substr(id, 1, length(?1)) = ?1 ORDER BY started_at DESC LIMIT 6"))
            .map_err(|e| self.query_err(e))?;
        let mut found: Vec<RunSummary> =
            stmt.query_map([id], run_row).and_then(Iterator::collect).map_err(|e| self.query_err(e))?;
        match found.len() {
            0 => Err(no_such()),
            1 => self.with_outcomes(found.remove(0)),
            _ => Err(HistoryReadError::AmbiguousRun {
                id: id.to_owned(),
                candidates: found.into_iter().map(|r| r.run_id).collect(),
            }),
        }
    }

    /// One run with its hosts (only `host`'s record when given).
    ///
    /// # Errors
    /// As [`find_run`](Self::find_run).
    pub fn run(&self, id: &str, host: Option<&str>) -> Result<RunDetail, HistoryReadError> {
        let run = self.find_run(id)?;
        let mut records = self.records("WHERE r.run_id = ?1", params![run.run_id], MAX_LIMIT)?;
        let order = |h: &str| run.hosts.iter().position(|s| s == h).unwrap_or(usize::MAX);
        records.sort_by_key(|r| order(&r.host));
        let mut unrecorded: Vec<String> =
            run.hosts.iter().filter(|h| !records.iter().any(|r| &r.host == *h)).cloned().collect();
        if let Some(host) = host {
            records.retain(|r| r.host == host);
            unrecorded.retain(|h| h == host);
        }
        Ok(RunDetail { run, hosts: records, unrecorded })
    }

    /// `host`'s records across runs, newest first, at most `limit`.
    ///
    /// # Errors
    /// [`HistoryReadError::Query`].
    pub fn host(&self, host: &str, limit: usize) -> Result<Vec<(RunSummary, HostRecord)>, HistoryReadError> {
        let records = self.records("WHERE r.host = ?1", params![host], limit)?;
        records
            .into_iter()
            .map(|record| Ok((self.find_run(&record.run_id)?, record)))
            .collect::<Result<Vec<_>, HistoryReadError>>()
    }

    fn records(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
        limit: usize,
    ) -> Result<Vec<HostRecord>, HistoryReadError> {
        let sql = format!(
            "SELECT r.run_id, r.host, r.outcome, r.standing, r.action, r.previous_system, r.new_system, \
             r.running_system, r.rolled_back, r.message FROM host_results r JOIN runs ON runs.id = r.run_id \
             {filter} ORDER BY runs.started_at DESC, runs.rowid DESC, r.host LIMIT {}",
            bounded(limit)
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.query_err(e))?;
        let mut records: Vec<HostRecord> = stmt
            .query_map(args, |r| {
                Ok(HostRecord {
                    run_id: r.get(0)?,
                    host: r.get(1)?,
                    outcome: r.get(2)?,
                    standing: r.get(3)?,
                    action: r.get(4)?,
                    previous_system: r.get(5)?,
                    new_system: r.get(6)?,
                    running_system: r.get(7)?,
                    rolled_back: r.get(8)?,
                    message: r.get(9)?,
                    phases: Vec::new(),
                    findings: Vec::new(),
                })
            })
            .and_then(Iterator::collect)
            .map_err(|e| self.query_err(e))?;
        for record in &mut records {
            self.fill(record)?;
        }
        Ok(records)
    }

    fn fill(&self, record: &mut HostRecord) -> Result<(), HistoryReadError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT phase, start_ms, duration_ms, ok, detail FROM phases WHERE run_id = ?1 AND host = ?2 \
                 ORDER BY seq LIMIT ?3",
            )
            .map_err(|e| self.query_err(e))?;
        record.phases = stmt
            .query_map(params![record.run_id, record.host, bounded(MAX_LIMIT)], |r| {
                Ok(PhaseRow {
                    phase: r.get(0)?,
                    start_ms: unsigned(r.get(1)?),
                    duration_ms: unsigned(r.get(2)?),
                    ok: r.get(3)?,
                    detail: r.get(4)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(|e| self.query_err(e))?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, severity, message FROM findings WHERE run_id = ?1 AND host = ?2 ORDER BY rowid LIMIT ?3",
            )
            .map_err(|e| self.query_err(e))?;
        record.findings = stmt
            .query_map(params![record.run_id, record.host, bounded(MAX_LIMIT)], |r| {
                Ok(FindingRow { id: r.get(0)?, severity: r.get(1)?, message: r.get(2)? })
            })
            .and_then(Iterator::collect)
            .map_err(|e| self.query_err(e))?;
        Ok(())
    }
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunSummary> {
    let hosts: String = r.get(3)?;
    Ok(RunSummary {
        run_id: r.get(0)?,
        flake: r.get(1)?,
        strategy: r.get(2)?,
        hosts: hosts.split_whitespace().map(str::to_owned).collect(),
        started_at: unsigned(r.get(4)?),
        duration_ms: r.get::<_, Option<i64>>(5)?.map(unsigned),
        exit_code: r.get::<_, Option<i64>>(6)?.map(|c| i32::try_from(c).unwrap_or(i32::MAX)),
        outcomes: BTreeMap::new(),
    })
}

fn bounded(limit: usize) -> i64 {
    i64::try_from(limit.min(MAX_LIMIT)).unwrap_or(0)
}

fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
