//! The `--hydra-db` route of `fleetgate channel hydra-hook` against a real PostgreSQL:
//! a private cluster made by `initdb` (as the unprivileged `postgres` user when the tests
//! run as root), listening only on a Unix socket in a temporary directory (no TCP), with
//! password authentication (scram-sha-256); Hydra's real tables
//! (`tests/fixtures/hydra-db/schema.sql`, copied from Hydra's `src/sql/hydra.sql`) and
//! rows as `hydra-eval-jobset` writes them (`rows.sql`); the real `psql`. Nothing mocked.
//!
//! End-to-end runs go through `fleetgate channel` in a child process (this test binary
//! re-executed to run only [`cli_child`], which calls the same
//! `fleetgate_channel::cli::run` the `fleetgate` binary does), so that its real stdout,
//! stderr and exit code can be checked — and searched for the password.
#![allow(clippy::unwrap_used)]
mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser as _;
use common::Env;
use common::postgres::Postgres;
use fleetgate_channel::ChannelError;
use fleetgate_channel::hydra::event::HydraEvent;
use fleetgate_channel::hydra::hook::{self, DEFAULT_JOB_PATTERN, HookConfig};
use fleetgate_channel::hydra::revision;
use fleetgate_nix::process::Run;

/// The database password. Its marker, `7f3c9e1d`, is the same in every encoding of it
/// (raw, percent-encoded, quoted), so no output may contain the marker at all.
const PASSWORD: &str = "Hyd r@:/'pw-7f3c9e1d";
const PASSWORD_URI: &str = "Hyd%20r%40%3A%2F%27pw-7f3c9e1d";
const MARKER: &str = "7f3c9e1d";
/// The role Hydra's NixOS module creates (and connects as).
const ROLE: &str = "hydra";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hydra-db").join(name)
}

/// The cluster with database `hydra` holding Hydra's tables and the fixture rows
/// (`rev_old`, `rev_new` in the flake URLs); its superuser is `hydra` with [`PASSWORD`].
fn hydra_cluster(rev_old: &str, rev_new: &str) -> Postgres {
    let pg = Postgres::start(ROLE, PASSWORD);
    pg.psql("postgres", &["--command", "CREATE DATABASE hydra"]);
    let schema = fixture("schema.sql");
    let rows = fixture("rows.sql");
    pg.psql(
        "hydra",
        &[
            "--single-transaction",
            "--file",
            schema.to_str().unwrap(),
            "--set",
            &format!("rev_old={rev_old}"),
            "--set",
            &format!("rev_new={rev_new}"),
            "--file",
            rows.to_str().unwrap(),
        ],
    );
    pg
}

/// `postgresql://hydra:<password>@/<db>?host=<socket dir>` (percent-encoded).
fn uri(pg: &Postgres, db: &str) -> String {
    format!("postgresql://{ROLE}:{PASSWORD_URI}@/{db}?host={}", pg.socket_dir.display())
}

/// True while the process exists and is not a zombie waiting to be reaped.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    channel: fleetgate_channel::cli::ChannelArgs,
}

const CHILD_ARGS: &str = "FLEETGATE_HYDRA_DB_TEST_CLI_ARGS";
const CHILD_STDOUT_STARTS: &str = "--- fleetgate channel stdout ---";

/// Not a test of its own: when re-executed by [`fleetgate`] with `CHILD_ARGS` set, this
/// process *is* `fleetgate channel <args>` and exits with its exit code.
#[test]
fn cli_child() {
    let Ok(args) = std::env::var(CHILD_ARGS) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let cli = Cli::try_parse_from(std::iter::once("fleetgate channel".to_owned()).chain(args)).unwrap();
    let mut stdout = std::io::stdout();
    writeln!(stdout, "\n{CHILD_STDOUT_STARTS}").unwrap();
    let code = fleetgate_channel::cli::run(cli.channel);
    stdout.flush().unwrap();
    let code = (0..=u8::MAX).find(|n| ExitCode::from(*n) == code).unwrap();
    std::process::exit(i32::from(code));
}

/// What `fleetgate channel …` did.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> serde_json::Value {
        assert_eq!(self.stdout.lines().count(), 1, "one JSON document: {}", self.stdout);
        serde_json::from_str(&self.stdout).unwrap()
    }

    /// Whether stderr says `text`, however miette wrapped and framed its lines.
    fn stderr_says(&self, text: &str) -> bool {
        let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace() && *c != '│').collect::<String>();
        squash(&self.stderr).contains(&squash(text))
    }

    fn assert_no_password(&self) {
        for (what, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            assert!(!text.contains(MARKER), "the password is in {what}:\n{text}");
        }
    }
}

/// Runs `fleetgate channel <args>` in a child process (bounded by a timeout).
fn fleetgate(env: &Env, args: &[&str], extra_env: &[(&str, &str)]) -> Ran {
    let mut run = Run::new(std::env::current_exe().unwrap())
        .args(["--exact", "cli_child", "--nocapture", "--quiet", "--test-threads=1"])
        .env(CHILD_ARGS, serde_json::to_string(args).unwrap())
        .env("HOME", env.root())
        .env("XDG_CACHE_HOME", env.root().join(".cache"))
        .timeout(Duration::from_secs(300));
    for (k, v) in extra_env {
        run = run.env(k, v);
    }
    let (status, out) = run.run_unchecked().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (_, stdout) = stdout
        .split_once(&format!("{CHILD_STDOUT_STARTS}\n"))
        .unwrap_or_else(|| panic!("the child did not run the CLI: {stdout}"));
    Ran { code: status.code().unwrap(), stdout: stdout.to_owned(), stderr: String::from_utf8(out.stderr).unwrap() }
}

/// A `buildFinished` event for `build` with output `system`, written next to the env.
fn event_file(env: &Env, build: u64, system: &str) -> PathBuf {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("build-finished.json")).unwrap()).unwrap();
    v["build"] = build.into();
    v["outputs"][0]["path"] = system.into();
    v["products"][0]["path"] = system.into();
    let path = env.root().join(format!("event-{build}.json"));
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    HydraEvent::read(&path).unwrap();
    path
}

/// `hydra-hook --json --event … --hydra-db DB` with the channel options of `env`.
fn hook_args(env: &Env, event: &Path, db: &str) -> Vec<String> {
    ["hydra-hook", "--json", "--event", event.to_str().unwrap(), "--hydra-db", db]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(env.channel_args())
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A system path that does not exist: `resolve_commit` finds no configurationRevision in
/// it and must ask the database. (The whole hook refuses such a path before it looks for
/// the commit, so the CLI tests build a system that records no revision instead.)
const ABSENT_SYSTEM: &str = "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-nixos-system-web1-24.05";

#[test]
fn the_hook_promotes_the_commit_of_the_builds_newest_eval_from_hydras_database() {
    let env = Env::new();
    let old = env.commit("eval 10");
    let new = env.commit("eval 12");
    let pg = hydra_cluster(&old, &new);
    // The server has no TCP listener at all.
    assert_eq!(pg.psql("hydra", &["--command", "SHOW listen_addresses"]), "");
    assert_eq!(pg.psql("hydra", &["--command", "SELECT count(*) FROM jobsetevalmembers WHERE build = 4711"]), "2");

    let sys = env.system("hydra-db", None);
    let event = event_file(&env, 4711, &sys);
    let uri = uri(&pg, "hydra");
    let ran = fleetgate(&env, &strs(&hook_args(&env, &event, &uri)), &[]);
    assert_eq!(ran.code, 0, "{}\n{}", ran.stdout, ran.stderr);
    ran.assert_no_password();
    let v = ran.json();
    assert_eq!(v["result"], "promoted", "{v}");
    // Build 4711 is in evals 10 (rev_old) and 12 (rev_new): the newest eval's commit,
    // as Hydra's API route picks the newest of `jobsetevals`.
    assert_eq!(v["commit"], new.as_str(), "{v}");
    assert_eq!(env.branch("web1").as_deref(), Some(new.as_str()));
    assert!(ran.stderr_says(&format!("commit {new} from Hydra's database")), "{}", ran.stderr);
    let manifest = std::fs::read_to_string(env.manifest_file("web1")).unwrap();
    assert!(manifest.contains(&new) && !manifest.contains(MARKER), "{manifest}");

    // `--hydra-db hydra` as in docs/channel.md: a bare database name, the rest (socket
    // directory, role, password) from libpq's environment variables.
    let ran = fleetgate(
        &env,
        &strs(&hook_args(&env, &event, "hydra")),
        &[("PGHOST", pg.socket_dir.to_str().unwrap()), ("PGUSER", ROLE), ("PGPASSWORD", PASSWORD)],
    );
    assert_eq!(ran.code, 0, "{}\n{}", ran.stdout, ran.stderr);
    ran.assert_no_password();
    let v = ran.json();
    assert_eq!((v["result"].as_str(), v["commit"].as_str()), (Some("promoted"), Some(new.as_str())), "{v}");
    assert_eq!(v["movement"]["kind"], "already_at", "{v}");
    assert!(ran.stderr_says("from Hydra's database"), "{}", ran.stderr);
}

#[test]
fn every_libpq_connection_string_form_reaches_the_server_and_unknown_builds_are_clear_errors() {
    let (old, new) = ("1".repeat(40), "2".repeat(40));
    let pg = hydra_cluster(&old, &new);
    let t = Duration::from_secs(30);
    let forms = [
        uri(&pg, "hydra"),
        format!("postgres://{ROLE}@/hydra?host={}&password={PASSWORD_URI}", pg.socket_dir.display()),
        pg.keyword_value("hydra", Some(PASSWORD)),
    ];
    for db in &forms {
        assert_eq!(revision::from_hydra_db(db, 4711, t).unwrap().as_str(), new, "{db}");
        assert_eq!(revision::from_hydra_db(db, 4715, t).unwrap().as_str(), new, "{db}");
    }
    let db = &forms[0];
    let err = |build: u64| {
        let e = revision::from_hydra_db(db, build, t).unwrap_err();
        assert!(!e.contains(MARKER), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        e
    };
    let e = err(4713);
    assert!(e.contains("build 4713") && e.contains("not in Hydra's database"), "{e}");
    let e = err(u64::from(u32::MAX) + 7);
    assert!(e.contains("not in Hydra's database"), "{e}");
    let e = err(4714);
    assert!(e.contains("build 4714") && e.contains("no evaluation"), "{e}");
    let e = err(4712);
    assert!(e.contains("eval 11") && e.contains("no flake URL"), "{e}");
    // A wrong password: the server says so, and neither password is shown.
    let wrong = format!("postgresql://{ROLE}:wrong-{MARKER}@/hydra?host={}", pg.socket_dir.display());
    let e = revision::from_hydra_db(&wrong, 4711, t).unwrap_err();
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(!e.contains(MARKER), "{e}");

    // Through the hook: the database is asked after the system and the API, and its
    // answer (or why there is none) is what the error says.
    let mut cfg = HookConfig::new(DEFAULT_JOB_PATTERN).unwrap();
    cfg.hydra_db = Some(db.clone());
    cfg.timeout = t;
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("build-finished.json")).unwrap()).unwrap();
    let logs = std::sync::Mutex::new(Vec::<String>::new());
    let log = |l: &str| logs.lock().unwrap().push(l.to_owned());
    let event = HydraEvent::parse(v.to_string().as_bytes()).unwrap();
    let c = hook::resolve_commit(&event, ABSENT_SYSTEM, &cfg, &log).unwrap();
    assert_eq!(c.as_str(), new);
    assert_eq!(logs.lock().unwrap().as_slice(), [format!("commit {new} from Hydra's database")]);
    v["build"] = 4713.into();
    let event = HydraEvent::parse(v.to_string().as_bytes()).unwrap();
    let e = hook::resolve_commit(&event, ABSENT_SYSTEM, &cfg, &log).unwrap_err();
    assert!(matches!(e, ChannelError::HydraCommit { build: 4713, .. }), "{e}");
    assert_eq!(e.exit_code(), 1);
    let text = e.chain();
    assert!(text.contains("Hydra database: build 4713 is not in Hydra's database"), "{text}");
    assert!(!text.contains(MARKER), "{text}");
}

#[test]
fn a_build_missing_from_the_database_fails_with_exit_1_and_promotes_nothing() {
    let env = Env::new();
    let old = env.commit("eval 10");
    let new = env.commit("eval 12");
    let pg = hydra_cluster(&old, &new);
    let refs = env.remote_refs();
    let event = event_file(&env, 4713, &env.system("hydra-db-4713", None));
    let uri = uri(&pg, "hydra");
    let ran = fleetgate(&env, &strs(&hook_args(&env, &event, &uri)), &[]);
    // docs/channel.md: 1 = a promotion was attempted and failed.
    assert_eq!(ran.code, 1, "{}\n{}", ran.stdout, ran.stderr);
    ran.assert_no_password();
    let v = ran.json();
    assert_eq!((v["result"].as_str(), v["exit_code"].as_u64()), (Some("failed"), Some(1)), "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("cannot find the commit Hydra built for build 4713"), "{error}");
    assert!(error.contains("Hydra database: build 4713 is not in Hydra's database"), "{error}");
    assert!(ran.stderr_says("build 4713 is not in Hydra's database"), "{}", ran.stderr);
    assert_eq!(env.remote_refs(), refs);
    assert!(!env.cache.exists(), "nothing uploaded");
}

#[test]
fn bad_urls_unreachable_servers_and_wrong_passwords_fail_clearly_without_the_password() {
    let env = Env::new();
    let c = env.commit("eval 12");
    let pg = hydra_cluster(&c, &c);
    let sock = pg.socket_dir.display().to_string();
    // A directory where no server listens.
    let nowhere = tempfile::tempdir().unwrap();
    let nowhere = nowhere.path().display();
    let refs = env.remote_refs();
    let event = event_file(&env, 4711, &env.system("hydra-db-4711", None));
    let cases: [(&str, String, &[&str]); 7] = [
        (
            "no server",
            format!("postgresql://{ROLE}:{PASSWORD_URI}@/hydra?host={nowhere}"),
            &["connection to server", "No such file or directory"],
        ),
        (
            "no server, key=value",
            format!("host={nowhere} user={ROLE} password={MARKER}x dbname=hydra"),
            &["connection to server"],
        ),
        (
            "wrong password",
            format!("postgresql://{ROLE}:wrong{MARKER}@/hydra?host={sock}"),
            &["password authentication failed"],
        ),
        (
            "no such database",
            format!("postgresql://{ROLE}:{PASSWORD_URI}@/nohydra?host={sock}"),
            &["database \"nohydra\" does not exist"],
        ),
        (
            "unknown URI parameter",
            format!("postgresql://{ROLE}:{PASSWORD_URI}@/hydra?host={sock}&colour=blue"),
            &["invalid URI query parameter: \"colour\""],
        ),
        (
            "bad percent-encoding in the password",
            format!("postgresql://{ROLE}:%zz{MARKER}@/hydra?host={sock}"),
            &["--hydra-db", "percent"],
        ),
        ("a password word without =", format!("host={sock} user={ROLE} {MARKER}"), &["--hydra-db", "missing \"=\""]),
    ];
    for (what, db, expected) in &cases {
        let ran = fleetgate(&env, &strs(&hook_args(&env, &event, db)), &[]);
        assert_eq!(ran.code, 1, "{what}: {}\n{}", ran.stdout, ran.stderr);
        ran.assert_no_password();
        let v = ran.json();
        assert_eq!(v["result"], "failed", "{what}: {v}");
        let error = v["error"].as_str().unwrap();
        assert!(error.contains("cannot find the commit Hydra built for build 4711"), "{what}: {error}");
        assert!(error.contains("Hydra database: "), "{what}: {error}");
        for e in *expected {
            assert!(error.contains(e), "{what}: {error:?} should say {e:?}");
            assert!(ran.stderr_says(e), "{what}: stderr should say {e:?}: {}", ran.stderr);
        }
        assert_eq!(env.remote_refs(), refs, "{what}: nothing promoted");
        assert!(!env.cache.exists(), "{what}: nothing uploaded");
    }
}

/// The command lines and environments of the `psql` processes whose command line
/// mentions `needle`.
fn psql_processes(needle: &str) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let dir = e.ok()?.path();
            let cmdline = String::from_utf8_lossy(&std::fs::read(dir.join("cmdline")).ok()?).replace('\0', " ");
            // `psql …`, or `/usr/bin/perl /usr/bin/psql …` while Debian's pg_wrapper runs.
            let is_psql = cmdline.split(' ').take(2).any(|w| w.rsplit('/').next() == Some("psql"));
            (is_psql && cmdline.contains(needle)).then(|| Some((cmdline, std::fs::read(dir.join("environ")).ok()?)))?
        })
        .collect()
}

#[test]
fn a_server_that_never_answers_is_given_up_on_and_the_password_is_never_on_a_command_line() {
    // Something accepts connections on the socket but never says a word.
    let dir = tempfile::tempdir().unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join(".s.PGSQL.5432")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(listener.accept().map(|(stream, _)| stream));
    });
    let db = format!("postgresql://{ROLE}:{PASSWORD_URI}@/hydra?host={}", dir.path().display());
    let worker = std::thread::spawn(move || {
        let started = Instant::now();
        let r = revision::from_hydra_db(&db, 4711, Duration::from_secs(5));
        (r, started.elapsed())
    });
    // psql has connected and waits for the server's answer: look at it now.
    let connection = rx.recv_timeout(Duration::from_secs(20)).expect("psql never connected").unwrap();
    let procs = psql_processes(&dir.path().display().to_string());
    assert_eq!(procs.len(), 1, "{procs:?}");
    let (cmdline, environ) = &procs[0];
    assert!(!cmdline.contains(MARKER), "the password is on psql's command line: {cmdline}");
    assert!(cmdline.contains(&format!("postgresql://{ROLE}@/hydra")), "{cmdline}");
    let pgpassword = format!("PGPASSWORD={PASSWORD}");
    assert!(environ.split(|b| *b == 0).any(|v| v == pgpassword.as_bytes()), "no PGPASSWORD for psql");

    let (r, elapsed) = worker.join().unwrap();
    drop(connection);
    let e = r.unwrap_err();
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    assert!(e.contains("timeout") || e.contains("did not answer"), "{e}");
    assert!(!e.contains(MARKER), "{e}");
}

#[test]
fn the_private_server_is_stopped_and_removed_when_its_guard_drops_even_on_panic() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let pg = hydra_cluster(&"a".repeat(40), &"b".repeat(40));
        let pid = pg.postmaster_pid().unwrap();
        assert!(alive(pid));
        assert!(pg.socket_dir.join(".s.PGSQL.5432").exists());
        seen = Some((pid, pg.tmp.path().to_owned()));
        panic!("a test failing while the server runs");
    }));
    assert!(result.is_err());
    let (pid, dir) = seen.unwrap();
    assert!(!alive(pid), "postmaster {pid} still runs");
    assert!(!dir.exists(), "{} left behind", dir.display());
}
