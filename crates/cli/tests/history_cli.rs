//! `fleetgate history` through the real binary, on a history written by the
//! deploy library itself: the run list, one run, one host across runs — as
//! plain lines (stdout is not a terminal here) and as one JSON document — and
//! the errors for a database that is missing, not SQLite, or not fleetgate's.
//! The terminal tables are snapshot-tested in `history_render`'s unit tests.

use std::path::{Path, PathBuf};

use fleetgate_check::{Finding, Severity};
use fleetgate_deploy::events::{Phase, PhaseRecord};
use fleetgate_deploy::history::History;
use fleetgate_deploy::{Action, HostReport, Outcome, RunReport, Standing};

mod support;
use support::{Run, fleetgate, run};

const CANARY_RUN: &str = "1717240000-0a1b2c-4242";
const RESUME_RUN: &str = "1717245000-0d0e0f-4243";
const SYS: &str = "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-nixos-system-web1-25.05";
const OLD_SYS: &str = "/nix/store/1xmr8jicvzszfzpz46g37mlpvbzjl2wp-nixos-system-web1-24.11";

fn phase(phase: Phase, start_ms: u64, duration_ms: u64, ok: bool, detail: &str) -> PhaseRecord {
    PhaseRecord { phase, start_ms, duration_ms, ok, detail: detail.to_owned() }
}

/// A canary run: web1 switched live; web2's verified reboot never came back,
/// it was power-cycled onto the previous generation; db1 was skipped. Then a
/// `--resume` run killed after web2 deployed (db1 never recorded).
fn write_history(dir: &Path) -> PathBuf {
    let path = dir.join("history.sqlite");
    let mut h = History::open(&path).expect("open");
    let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    h.start_run(CANARY_RUN, "/srv/fleet", "canary", &names(&["web1", "web2", "db1"]), 1_717_240_000).expect("start");

    let mut web1 = HostReport::untouched("web1", Outcome::Deployed, "switched live, healthy, confirmed");
    web1.action = Some(Action::Switch);
    (web1.previous_system, web1.new_system, web1.running_system) =
        (Some(OLD_SYS.into()), Some(SYS.into()), Some(SYS.into()));
    web1.phases = vec![
        phase(Phase::Lock, 1_200, 90, true, "run=1717240000-0a1b2c-4242"),
        phase(Phase::Facts, 1_290, 410, true, ""),
        phase(Phase::Plan, 1_700, 230, true, "switch"),
        phase(Phase::Copy, 1_930, 12_400, true, "copied 40.1 MiB (12 paths)"),
        phase(Phase::Activate, 14_330, 3_100, true, ""),
        phase(Phase::Health, 17_430, 1_020, true, "sshd.service active"),
        phase(Phase::Confirm, 18_450, 310, true, ""),
    ];
    web1.findings = vec![Finding::new(
        "switch.restarts",
        Severity::Info,
        "3 units restart: nginx.service, sshd.service, systemd-journald.service",
    )];
    h.record_host(CANARY_RUN, &web1, 1).expect("record");

    let web2_sys = SYS.replace("web1", "web2");
    let mut web2 = HostReport::untouched(
        "web2",
        Outcome::Failed,
        "the host did not come back within 300 s from booting the new generation (hung in stage 1?); it was \
         power-cycled and came back on the previous generation; the previous generation is the default again. \
         Nothing is left to repair by hand.",
    );
    web2.action = Some(Action::Boot);
    web2.rolled_back = true;
    web2.standing = Standing::KnownGood;
    (web2.new_system, web2.running_system) = (Some(web2_sys), Some(OLD_SYS.replace("web1", "web2")));
    web2.phases = vec![
        phase(Phase::Lock, 900, 80, true, ""),
        phase(Phase::Facts, 980, 500, true, ""),
        phase(Phase::Plan, 1_480, 250, true, "boot: dbus implementation changed"),
        phase(Phase::Copy, 1_730, 9_000, true, "copied 38.2 MiB (11 paths)"),
        phase(Phase::Activate, 10_730, 2_000, true, ""),
        phase(Phase::Reboot, 12_730, 400, true, "bootctl set-oneshot nixos-generation-42.conf"),
        phase(Phase::WaitBoot, 13_130, 300_000, false, "no new boot_id within 300 s"),
        phase(Phase::PowerCycle, 313_130, 45_000, true, "provider-cli server reset web2"),
        phase(Phase::Rollback, 358_130, 1_500, true, "back on the previous generation"),
    ];
    web2.findings = vec![Finding::new(
        "switch.dbus-implementation-changed",
        Severity::Warning,
        "dbus changes from dbus to dbus-broker: NixOS refuses to switch that live; a verified reboot applies it",
    )];
    h.record_host(CANARY_RUN, &web2, 2).expect("record");
    h.record_host(CANARY_RUN, &HostReport::untouched("db1", Outcome::Skipped, "the canary web2 failed"), 3)
        .expect("record");
    h.finish_run(&RunReport {
        format: 1,
        run_id: CANARY_RUN.into(),
        flake: "/srv/fleet".into(),
        strategy: "canary".into(),
        started_at: 1_717_240_000,
        duration_ms: 361_900,
        hosts: Vec::new(),
        exit_code: 1,
    })
    .expect("finish");

    h.start_run(RESUME_RUN, "/srv/fleet", "canary", &names(&["web2", "db1"]), 1_717_245_000).expect("start");
    let mut web2 =
        HostReport::untouched("web2", Outcome::Deployed, "booted the new generation, healthy; it is the default");
    web2.action = Some(Action::Boot);
    web2.running_system = Some(SYS.replace("web1", "web2"));
    web2.phases = vec![phase(Phase::Lock, 300, 70, true, ""), phase(Phase::WaitBoot, 370, 41_000, true, "")];
    h.record_host(RESUME_RUN, &web2, 4).expect("record");
    path
}

fn history(db: &Path, args: &[&str]) -> Run {
    history_in(Path::new("."), db, args)
}

/// `fleetgate history --history DB ARGS…` run in `dir` (a relative `db` keeps
/// messages free of temporary paths that miette could wrap).
fn history_in(dir: &Path, db: &Path, args: &[&str]) -> Run {
    run(fleetgate().current_dir(dir).arg("history").arg("--history").arg(db).args(args))
}

fn ok(db: &Path, args: &[&str]) -> String {
    let run = history(db, args);
    assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    run.stdout
}

#[test]
fn plain_lines_when_stdout_is_not_a_terminal() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = write_history(tmp.path());
    insta::assert_snapshot!("plain_runs", ok(&db, &[]));
    insta::assert_snapshot!("plain_run", ok(&db, &["1717240"]));
    insta::assert_snapshot!("plain_host", ok(&db, &["--host", "web2"]));
    assert_eq!(ok(&db, &["--limit", "1"]).lines().count(), 1);
    let last = ok(&db, &["last", "--host", "db1"]);
    assert_eq!(
        last,
        "1717245000-0d0e0f-4243 started=2024-06-01T12:30:00Z duration_ms=- exit=- strategy=canary hosts=web2,db1 \
         deployed=1 unrecorded=1 flake=/srv/fleet\n\
         db1 outcome=unrecorded message=the run ended before this host was recorded\n"
    );
}

#[test]
fn json_is_one_document() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = write_history(tmp.path());
    for args in [&["--json"][..], &["--json", "last"], &["--json", "--host", "web2", "--limit", "1"]] {
        let out = ok(&db, args);
        let _: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}\n{out}"));
    }
    insta::assert_snapshot!("json_runs", ok(&db, &["--json", "--limit", "1"]));
    insta::assert_snapshot!("json_run", ok(&db, &["--json", CANARY_RUN, "--host", "web2"]));
    insta::assert_snapshot!("json_host", ok(&db, &["--json", "--host", "web1"]));
}

#[test]
fn errors_say_what_to_do() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_history(tmp.path());
    std::fs::write(tmp.path().join("notes.txt"), "not a database, but long enough to be read as one: ".repeat(20))
        .expect("write");
    let conn = rusqlite::Connection::open(tmp.path().join("places.sqlite")).expect("create");
    conn.execute_batch("CREATE TABLE moz_places (url TEXT);").expect("schema");
    drop(conn);
    let cases: [(&str, &str, &[&str]); 5] = [
        ("missing", "nothing.sqlite", &[]),
        ("garbage", "notes.txt", &[]),
        ("foreign", "places.sqlite", &[]),
        ("no_such_run", "history.sqlite", &["42"]),
        ("ambiguous_run", "history.sqlite", &["1717"]),
    ];
    for (name, file, args) in cases {
        let run = history_in(tmp.path(), Path::new(file), args);
        assert_eq!((run.code, run.stdout.as_str()), (2, ""), "{name}");
        insta::assert_snapshot!(format!("error_{name}"), run.stderr);
    }
}

#[test]
fn a_terminal_gets_a_table_as_wide_as_it_is() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = write_history(tmp.path());
    // `script` (util-linux) gives the command a pseudo-terminal as stdout; `stty` sets its width.
    let table = |columns: u16| -> Vec<String> {
        let command = format!(
            "stty cols {columns} rows 40; {} history --history {}",
            env!("CARGO_BIN_EXE_fleetgate"),
            db.display()
        );
        let out = run(std::process::Command::new("script").args(["-qec", &command, "/dev/null"]).env("TERM", "dumb"));
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout.lines().map(|l| l.trim_end_matches('\r').to_owned()).collect()
    };
    let header = "RUN                     STARTED (UTC)     TOOK   EXIT  HOSTS";
    let newest = "1717245000-0d0e0f-4243  2024-06-01 12:30  -      -     1 deployed, 1 unrecorded";
    assert_eq!(
        table(80),
        [header, newest, "1717240000-0a1b2c-4242  2024-06-01 11:06  6m01s  1     1 deployed, 1 failed, 1 …"]
    );
    assert_eq!(
        table(120),
        [header, newest, "1717240000-0a1b2c-4242  2024-06-01 11:06  6m01s  1     1 deployed, 1 failed, 1 skipped"]
    );
    assert_eq!(table(40).len(), 3, "never narrower than 80 columns");
}
