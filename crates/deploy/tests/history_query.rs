//! The history read back ([`HistoryReader`]) from what the deploy writes
//! ([`History`]): lists bounded and newest first, runs named by id, prefix or
//! `last`, and every file that is not fleetgate's history refused with the
//! reason — without ever changing the file.

use std::path::{Path, PathBuf};

use fleetgate_deploy::history::History;
use fleetgate_deploy::history_query::{HistoryReadError, HistoryReader};
use fleetgate_deploy::{HostReport, Outcome, RunReport};

const OLD: &str = "1717240000-0a1b2c-4242";
const NEW: &str = "1717245000-0d0e0f-4243";

/// Two runs: the old one finished (web1 deployed, web2 unreachable); the new
/// one was killed after web2 was recorded (db1 never was).
fn write_history(dir: &Path) -> PathBuf {
    let path = dir.join("history.sqlite");
    let mut h = History::open(&path).expect("open");
    let hosts = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    h.start_run(OLD, "/srv/fleet", "all", &hosts(&["web2", "web1"]), 1_717_240_000).expect("start");
    h.record_host(OLD, &HostReport::untouched("web1", Outcome::Deployed, "fine"), 1).expect("record");
    h.record_host(OLD, &HostReport::untouched("web2", Outcome::Unreachable, "ssh: timeout"), 1).expect("record");
    let finished = RunReport {
        format: 1,
        run_id: OLD.into(),
        flake: "/srv/fleet".into(),
        strategy: "all".into(),
        started_at: 1_717_240_000,
        duration_ms: 61_500,
        hosts: Vec::new(),
        exit_code: 1,
    };
    h.finish_run(&finished).expect("finish");
    h.start_run(NEW, "/srv/fleet", "canary", &hosts(&["web2", "db1"]), 1_717_245_000).expect("start");
    h.record_host(NEW, &HostReport::untouched("web2", Outcome::Deployed, "fine"), 2).expect("record");
    path
}

#[test]
fn runs_are_listed_newest_first_with_their_outcomes_and_bounded() {
    let dir = tempfile::tempdir().expect("tmp");
    let reader = HistoryReader::open(&write_history(dir.path())).expect("open");
    let runs = reader.runs(20).expect("runs");
    let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, [NEW, OLD]);
    assert_eq!((runs[0].duration_ms, runs[0].exit_code), (None, None), "killed: never finished");
    assert_eq!((runs[1].duration_ms, runs[1].exit_code), (Some(61_500), Some(1)));
    let counts = |i: usize| runs[i].outcomes.iter().map(|(o, n)| format!("{o}={n}")).collect::<Vec<_>>();
    assert_eq!(counts(0), ["deployed=1", "unrecorded=1"]);
    assert_eq!(counts(1), ["deployed=1", "unreachable=1"]);
    assert_eq!(reader.runs(1).expect("runs").len(), 1);
}

#[test]
fn a_run_is_named_by_id_unique_prefix_or_last() {
    let dir = tempfile::tempdir().expect("tmp");
    let reader = HistoryReader::open(&write_history(dir.path())).expect("open");
    assert_eq!(reader.run(OLD, None).expect("exact").run.run_id, OLD);
    assert_eq!(reader.run("1717240", None).expect("prefix").run.run_id, OLD);
    assert_eq!(reader.run("last", None).expect("last").run.run_id, NEW);
    assert!(matches!(
        reader.run("17172", None),
        Err(HistoryReadError::AmbiguousRun { candidates, .. }) if candidates == [NEW, OLD]
    ));
    assert!(matches!(reader.run("999", None), Err(HistoryReadError::NoSuchRun { .. })));
    // `%` and `_` are no wildcards.
    assert!(matches!(reader.run("%", None), Err(HistoryReadError::NoSuchRun { .. })));

    let old = reader.run(OLD, None).expect("old");
    let hosts: Vec<&str> = old.hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(hosts, ["web2", "web1"], "in the run's selection order");
    assert_eq!(old.hosts[0].message, "ssh: timeout");
    let new = reader.run(NEW, None).expect("new");
    assert_eq!(new.unrecorded, ["db1"]);
    let only = reader.run(NEW, Some("db1")).expect("one host");
    assert!(only.hosts.is_empty());
    assert_eq!(only.unrecorded, ["db1"]);
}

#[test]
fn a_host_across_runs_newest_first() {
    let dir = tempfile::tempdir().expect("tmp");
    let reader = HistoryReader::open(&write_history(dir.path())).expect("open");
    let web2 = reader.host("web2", 20).expect("web2");
    let seen: Vec<(&str, &str)> = web2.iter().map(|(r, h)| (r.run_id.as_str(), h.outcome.as_str())).collect();
    assert_eq!(seen, [(NEW, "deployed"), (OLD, "unreachable")]);
    assert_eq!(reader.host("web2", 1).expect("web2").len(), 1);
    assert!(reader.host("nobody", 20).expect("nobody").is_empty());
}

#[test]
fn reading_changes_nothing_not_even_while_a_deploy_has_it_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = write_history(dir.path());
    let writer = History::open(&path).expect("a deploy holds it open");
    let before = std::fs::read(&path).expect("read");
    let reader = HistoryReader::open(&path).expect("open");
    reader.runs(20).expect("runs");
    reader.run("last", None).expect("run");
    drop(reader);
    assert_eq!(std::fs::read(&path).expect("read"), before);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into())
        .collect();
    names.sort();
    assert_eq!(names, ["history.sqlite"], "no journal, no WAL left by the reader");
    drop(writer);
}

#[test]
fn what_is_not_a_history_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let at = |name: &str| dir.path().join(name);

    assert!(matches!(HistoryReader::open(&at("absent.sqlite")), Err(HistoryReadError::Missing { .. })));
    assert!(!at("absent.sqlite").exists(), "a read creates no database");

    std::fs::create_dir(at("dir")).expect("mkdir");
    assert!(
        matches!(HistoryReader::open(&at("dir")), Err(HistoryReadError::Unreadable { reason, .. }) if reason == "not a regular file")
    );

    // A FIFO would block open(2) until a writer comes: refused before opening.
    let fifo = at("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    assert!(matches!(HistoryReader::open(&fifo), Err(HistoryReadError::Unreadable { .. })));

    std::fs::write(at("notes.txt"), "web1 deployed on Monday\n".repeat(100)).expect("write");
    assert!(matches!(HistoryReader::open(&at("notes.txt")), Err(HistoryReadError::NotADatabase { .. })));

    // A database whose first page was overwritten.
    std::fs::create_dir(at("broken")).expect("mkdir");
    let broken = write_history(&at("broken"));
    let mut bytes = std::fs::read(&broken).expect("read");
    bytes[..100].fill(0x55);
    std::fs::write(&broken, bytes).expect("write");
    assert!(matches!(HistoryReader::open(&broken), Err(HistoryReadError::NotADatabase { .. })));

    std::fs::write(at("empty.sqlite"), "").expect("write");
    let err = HistoryReader::open(&at("empty.sqlite")).err().expect("refused");
    assert!(matches!(&err, HistoryReadError::Foreign { missing, .. } if missing == "the table runs"), "{err}");

    let foreign = at("foreign.sqlite");
    let conn = rusqlite::Connection::open(&foreign).expect("create");
    conn.execute_batch("CREATE TABLE moz_places (url TEXT); CREATE TABLE runs (id TEXT, km REAL);").expect("schema");
    drop(conn);
    let err = HistoryReader::open(&foreign).err().expect("refused");
    assert!(matches!(&err, HistoryReadError::Foreign { missing, .. } if missing == "the column runs.flake"), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{} is a SQLite database but not a fleetgate deploy history: it lacks the column runs.flake",
            foreign.display()
        )
    );
}
