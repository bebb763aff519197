//! `fleetgate status` through the real binary, against a real server fed version-2
//! reports exactly as the agent will send them (HTTP, each host's own token), and a real
//! deploy history: a converged fleet, a pending reboot, a blocked host, boot debt, an
//! unreachable host. Snapshots hold the plain lines (stdout off a terminal), the exit code
//! and the 80-column table rendered from the `--json` document of the same run.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use fleetgate_channel::secret::Secret;
use fleetgate_server::tokens::HostTokens;
use fleetgate_server::{ReadTokens, RunningServer, ServerConfig, start};
use fleetgate_status::FleetStatus;
use serde_json::{Value, json};

const READ: &str = "ops-read-token-0123456789";
const HOSTS: [&str; 3] = ["web1", "web2", "db1"];
const SYS: [&str; 4] = [
    "/nix/store/0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a-nixos-system-web",
    "/nix/store/1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b-nixos-system-web",
    "/nix/store/2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c-nixos-system-web",
    "/nix/store/3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d-nixos-system-web",
];

fn token(host: &str) -> String {
    format!("{host}-report-token-0123456789")
}

struct World {
    tmp: tempfile::TempDir,
    server: RunningServer,
}

impl World {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let tokens: String = HOSTS.iter().map(|h| format!("{h} {}\n", token(h))).collect();
        let config = ServerConfig::new(
            tmp.path().join("serve.sqlite").into(),
            HostTokens::parse(&Secret::new(&tokens)).unwrap(),
            ReadTokens::parse(&Secret::new(&format!("ops {READ}\n"))).unwrap(),
        );
        let server = start(config, Arc::new(|_: &str| {})).unwrap();
        std::fs::write(tmp.path().join("read-token"), format!("{READ}\n")).unwrap();
        Self { tmp, server }
    }

    /// POSTs a report as host `host`'s agent.
    fn report(&self, host: &str, body: &Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let resp = agent
            .post(&format!("http://{}/v1/hosts/{host}/report", self.server.addr()))
            .header("Authorization", &format!("Bearer {}", token(host)))
            .send(&body.to_string())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204, "{host}: {body}");
    }

    /// Runs `fleetgate status --server … ARGS`; returns (exit code, stdout).
    fn status(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .arg("status")
            .args(["--server", &format!("http://{}", self.server.addr())])
            .arg("--token-file")
            .arg(self.tmp.path().join("read-token"))
            .args(args)
            // No user state: the default history is looked for (and not found) here.
            .env("XDG_STATE_HOME", self.tmp.path())
            .output()
            .unwrap();
        assert!(out.stderr.is_empty() || out.status.code() == Some(2), "{}", String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap())
    }

    /// Plain lines, exit code and the table of the same fleet, times redacted.
    fn snapshot(&self, args: &[&str]) -> String {
        let (code, plain) = self.status(args);
        let json_args: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
        let (json_code, doc) = self.status(&json_args);
        assert_eq!(code, json_code, "the exit code does not depend on --json");
        let fleet: FleetStatus = serde_json::from_str(&doc).unwrap();
        let table = fleetgate_status::render::table(&fleet);
        for line in table.lines() {
            assert!(line.chars().count() <= 80 || line.contains("host(s)"), "wider than 80 columns: {line:?}");
        }
        redact(&format!("exit code: {code}\n--- plain\n{plain}--- table\n{table}"))
    }
}

/// Times since a report arrived vary by a second between runs.
fn redact(text: &str) -> String {
    let seen = regex::Regex::new(r"seen=\d+s").unwrap();
    let secs = regex::Regex::new(r"\b\d+ s\b").unwrap();
    secs.replace_all(&seen.replace_all(text, "seen=[T]s"), "[T]").into_owned()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A version-2 report: desired `desired`, running `current`, booted `booted`, default
/// `default` (generation numbers index [`SYS`]).
fn report(desired: usize, current: usize, booted: usize, default: usize) -> Value {
    let generations: Vec<Value> = (0..=desired.max(default))
        .map(|n| json!({"number": n + 1, "system": SYS[n], "booted": n <= booted, "default": n <= default, "failed": false, "created_at": null}))
        .collect();
    json!({
        "v": 2, "agent_version": "0.1.0", "time": now(),
        "desired": {"commit": "c".repeat(40), "system": SYS[desired], "since": now() - 60},
        "current": SYS[current], "booted": SYS[booted],
        "default": {"entry": format!("nixos-generation-{}.conf", default + 1), "generation": default + 1, "system": SYS[default]},
        "boot_debt": [], "pending_reboot": null,
        "result": {"outcome": "applied", "at": now(), "system": SYS[desired], "commit": "c".repeat(40), "message": "switched live", "findings": []},
        "generations": generations
    })
}

#[test]
fn status_converged_fleet() {
    let w = World::new();
    for h in HOSTS {
        w.report(h, &report(1, 1, 1, 1));
    }
    let text = w.snapshot(&[]);
    assert!(text.starts_with("exit code: 0\n"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn status_pending_reboot() {
    let w = World::new();
    w.report("web1", &report(1, 1, 1, 1));
    // A live switch changed the kernel: runs and boots next the new system, booted the old.
    let mut r = report(2, 2, 1, 2);
    r["pending_reboot"] = json!({"reasons": ["kernel", "initrd"], "detail": "outside the reboot window 02:00-04:00"});
    w.report("web2", &r);
    let text = w.snapshot(&[]);
    assert!(text.starts_with("exit code: 3\n") && text.contains("reboot=kernel,initrd"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn status_blocked_host() {
    let w = World::new();
    w.report("web1", &report(1, 1, 1, 1));
    let mut r = report(2, 1, 1, 1);
    r["result"] = json!({
        "outcome": "blocked", "at": now(), "system": SYS[2], "commit": "c".repeat(40),
        "message": "the new initrd cannot find the root disk; nothing applied",
        "findings": [{"id": "initrd.missing-modules", "severity": "error",
                      "message": "the initrd lacks virtio_blk, virtio_pci: the root disk /dev/vda2 needs them",
                      "evidence": ["/dev/vda2 → virtio_blk → virtio_pci"],
                      "fix": "add them to boot.initrd.availableKernelModules (or fix hardware.facter.reportPath)"}]
    });
    w.report("db1", &r);
    let text = w.snapshot(&[]);
    assert!(text.starts_with("exit code: 1\n") && text.contains("initrd.missing-modules"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn status_boot_debt() {
    let w = World::new();
    // Three live switches since the last boot: generations 2-4 were made default and
    // never booted (the kernel and initrd did not change, so no reboot is asked for).
    let mut r = report(3, 3, 0, 3);
    r["boot_debt"] = json!([
        {"generation": 2, "system": SYS[1], "made_default_at": null},
        {"generation": 3, "system": SYS[2], "made_default_at": null},
        {"generation": 4, "system": SYS[3], "made_default_at": null}
    ]);
    w.report("web1", &r);
    w.report("web2", &report(3, 3, 3, 3));
    let text = w.snapshot(&["--on", "web*"]);
    assert!(text.contains("debt=3") && text.contains("boot debt 3 generation(s) on 1 host(s)"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn status_unreachable_host() {
    let w = World::new();
    w.report("web1", &report(1, 1, 1, 1));
    // db1 is known only from the deploy history: its last deploy could not reach it.
    let history = w.tmp.path().join("history.sqlite");
    record_unreachable(&history, "db1");
    let text = w.snapshot(&["--history", history.to_str().unwrap()]);
    assert!(text.contains("host=db1 state=unreachable"), "{text}");
    insta::assert_snapshot!(text);
}

fn record_unreachable(path: &Path, host: &str) {
    use fleetgate_deploy::history::History;
    use fleetgate_deploy::{HostReport, Outcome};
    let mut h = History::open(path).unwrap();
    let at = u64::try_from(now() - 120).unwrap();
    h.start_run("r1", ".", "all", &[host.to_owned()], at).unwrap();
    let mut r = HostReport::untouched(host, Outcome::Unreachable, "ssh: connect to host db1 port 22: No route to host");
    r.new_system = Some(SYS[1].to_owned());
    h.record_host("r1", &r, at).unwrap();
}

#[test]
fn status_without_any_source_says_what_to_give_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["status", "--json"])
        .env("XDG_STATE_HOME", tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["exit_code"], 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `fleetgate status --json ARGS` without a server or history: (exit code, the one JSON
/// document stdout holds, stderr).
fn status_json_failure(args: &[&str]) -> (i32, Value, String) {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["status", "--json"])
        .args(args)
        .env("XDG_STATE_HOME", tmp.path())
        .env_remove("FLEETGATE_SERVER")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    // Exactly one document: parsing the whole of stdout fails on a second one.
    let doc: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout:?}"));
    (out.status.code().unwrap_or(-1), doc, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn status_json_errors_are_one_document_with_their_cause_and_help() {
    // A command error carries its cause chain (not only the outermost message)…
    let (code, doc, stderr) =
        status_json_failure(&["--server", "http://127.0.0.1:9", "--token-file", "/nonexistent/t"]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(doc["result"], "failed");
    assert_eq!(doc["exit_code"], 2);
    let error = doc["error"].as_str().unwrap();
    assert!(error.starts_with("cannot read the token file /nonexistent/t: "), "{doc}");
    assert!(error.len() > "cannot read the token file /nonexistent/t: ".len(), "the cause is named: {doc}");
    // …and its help, saying what to do next.
    let (code, doc, _) = status_json_failure(&["--server", "http://127.0.0.1:9"]);
    assert_eq!(code, 2);
    assert_eq!(doc["help"], "--token-file FILE", "{doc}");
    let (code, doc, _) = status_json_failure(&["--live"]);
    assert_eq!(code, 2);
    assert_eq!(doc["help"], "fleetgate status FLAKE --live", "{doc}");
    // A usage error is one document too.
    let (code, doc, stderr) = status_json_failure(&["--watch", "soon"]);
    assert_eq!(code, 2);
    assert_eq!(doc["exit_code"], 2);
    assert!(doc["error"].as_str().unwrap().contains("invalid value 'soon' for '--watch"), "{doc}");
    assert!(stderr.contains("soon"), "{stderr}");
}

#[test]
fn status_watch_redraws_until_ctrl_c_and_then_exits_0() {
    use std::io::BufRead as _;
    let w = World::new();
    w.report("web1", &report(1, 1, 1, 1));
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["status", "--watch", "1", "--json", "--server", &format!("http://{}", w.server.addr())])
        .arg("--token-file")
        .arg(w.tmp.path().join("read-token"))
        .env("XDG_STATE_HOME", w.tmp.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // Two documents: it redraws (each read blocks until the binary prints, bounded by the
    // binary's own one-second interval).
    for _ in 0..2 {
        let doc: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(doc["summary"]["hosts"], 3);
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "--watch did not end on SIGINT");
        std::thread::sleep(std::time::Duration::from_millis(20)); // pace the exit checks
    };
    assert_eq!(status.code(), Some(0), "ended by Ctrl-C, not killed by it");
}
