//! The dashboard in a real browser (Debian's Chromium through chromedriver, WebDriver):
//! the lab fleet's real state after `fleetgate deploy` (published by `fleetgate status
//! --live --publish`), an agent upgrade arriving while the page is open (live update, no
//! reload) — done and reported by the real `fleetgate agent` running in a lab host
//! (`agent_world`, shared with `agent_lab.rs`) — the seed incident's blocked finding with
//! its fix on the host page, and the scope of a host's token. Screenshots of the fleet page
//! and a host page are written to `target/dashboard/` (docs/status.md shows copies).
//!
//! Where these tests say "as the agent will", they POST a version-2 report through the
//! HTTP API with the host's own token — the schema of `fleetgate_status::report`, the only
//! way `fleetgate agent` (issue 11) talks to the server; only
//! `dashboard_shows_an_upgrade_by_the_real_agent_live` runs the agent itself.
//!
//! Missing Chromium or chromedriver fails these tests, loudly, naming the packages; the
//! browser's processes end with each test ([`webdriver`]'s notes).
#![allow(clippy::unwrap_used)]

#[path = "../agent_world/mod.rs"]
mod agent_world;
mod webdriver;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fleetgate_channel::secret::Secret;
use fleetgate_lab::testing::LabGuard;
use fleetgate_server::tokens::HostTokens;
use fleetgate_server::{ReadTokens, RunningServer, ServerConfig, start};
use serde_json::{Value, json};
use webdriver::Browser;

const READ: &str = "ops-read-token-0123456789";

fn token(host: &str) -> String {
    format!("{host}-report-token-0123456789")
}

fn server(dir: &Path, hosts: &[&str]) -> RunningServer {
    let tokens: String = hosts.iter().map(|h| format!("{h} {}\n", token(h))).collect();
    std::fs::write(dir.join("host-tokens"), &tokens).unwrap();
    let config = ServerConfig::new(
        dir.join("serve.sqlite").into(),
        HostTokens::parse(&Secret::new(&tokens)).unwrap(),
        ReadTokens::parse(&Secret::new(&format!("ops {READ}\n"))).unwrap(),
    );
    start(config, Arc::new(|_: &str| {})).unwrap()
}

/// POSTs a report as `host`'s agent will.
fn agent_report(server: &RunningServer, host: &str, body: &Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = agent
        .post(&format!("http://{}/v1/hosts/{host}/report", server.addr()))
        .header("Authorization", &format!("Bearer {}", token(host)))
        .send(&body.to_string())
        .unwrap();
    let code = resp.status().as_u16();
    assert_eq!(code, 204, "{host}: {}", resp.body_mut().read_to_string().unwrap_or_default());
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn fleetgate(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(args)
        .env("NIX_CONFIG", fleetgate_lab::lab::NIX_CONFIG)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard")
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The attribute `title` of the cell `column` (1-based) of `host`'s row, in the page.
fn cell_title(host: &str, column: usize) -> String {
    format!(
        "const r = document.querySelector('tr[data-host=\"{host}\"]'); return r ? r.children[{column}].title : null"
    )
}

#[test]
fn dashboard_shows_the_lab_fleet_after_deploys_agent_reports_and_the_incident() {
    let lab = LabGuard::up(&["web1=virtio,systemd-boot", "db1=sata,grub"]).expect("lab");
    let first = lab.build(&["web1", "db1"]).expect("build");
    let tmp = tempfile::tempdir().unwrap();
    let server = server(tmp.path(), &["web1", "db1"]);
    let base = format!("http://{}", server.addr());
    let flake = format!("path:{}", lab.fleet_dir().display());
    let history = tmp.path().join("history.sqlite");
    let history_arg = history.to_str().unwrap();
    let tokens_arg = tmp.path().join("host-tokens");
    let tokens_arg = tokens_arg.to_str().unwrap();

    // A real deploy: web1 switches dbus to dbus-broker (a verified reboot), db1 live.
    for h in ["web1", "db1"] {
        lab.edit_host(h, |k| k.revision = 2).expect("edit");
    }
    lab.edit_host("web1", |k| {
        k.switch_inhibitors.insert("dbus-implementation".into(), "broker".into());
    })
    .expect("edit");
    let second = lab.build(&["web1", "db1"]).expect("build");
    let deploy = fleetgate(&["deploy", &flake, "--history", history_arg]);
    assert_eq!(deploy.code, 0, "{}\n{}", deploy.stdout, deploy.stderr);
    // What the lab says, not what fleetgate says.
    for h in ["web1", "db1"] {
        let current = lab.ssh(h, "readlink -f /run/current-system").unwrap();
        assert_eq!(current.trim(), second[h]);
    }
    let publish = fleetgate(&[
        "status",
        &flake,
        "--live",
        "--history",
        history_arg,
        "--publish",
        &base,
        "--host-tokens-file",
        tokens_arg,
    ]);
    assert_eq!(publish.code, 0, "the fleet is converged after the deploy:\n{}\n{}", publish.stdout, publish.stderr);

    let browser = Browser::start();
    browser.log_in(&base, READ);
    browser.wait_until("both hosts in the table", "return document.querySelectorAll('#fleet tbody tr').length === 2");
    for h in ["web1", "db1"] {
        let state =
            browser.eval(&format!("return document.querySelector('tr[data-host=\"{h}\"]').dataset.state"), json!([]));
        assert_eq!(state, "converged", "{h}");
        // The desired column holds the deployed system's path: the lab's real one.
        assert_eq!(browser.eval(&cell_title(h, 2), json!([])), second[h].as_str(), "{h}");
    }
    assert_ne!(first["web1"], second["web1"]);

    // An agent upgrade while the page is open: db1's agent switched live to revision 3 and
    // reports it (v2, db1's token). The page updates without a reload.
    lab.edit_host("db1", |k| k.revision = 3).expect("edit");
    let third = lab.build(&["db1"]).expect("build");
    browser.eval("window.__not_reloaded = true; return true", json!([]));
    let upgraded = json!({
        "v": 2, "agent_version": "0.1.0", "time": now(),
        "desired": {"commit": "a".repeat(40), "system": third["db1"], "since": now() - 30},
        "current": third["db1"], "booted": second["db1"],
        "default": {"entry": "NixOS - Default", "generation": 3, "system": third["db1"]},
        "boot_debt": [{"generation": 3, "system": third["db1"], "made_default_at": now()}],
        "pending_reboot": null,
        "result": {"outcome": "applied", "at": now(), "system": third["db1"], "commit": "a".repeat(40),
                   "message": "switched live; health checks passed", "findings": []},
        "generations": [
            {"number": 1, "system": first["db1"], "booted": true, "default": true, "failed": false, "created_at": null},
            {"number": 2, "system": second["db1"], "booted": true, "default": true, "failed": false, "created_at": null},
            {"number": 3, "system": third["db1"], "booted": false, "default": true, "failed": false, "created_at": now()}
        ]
    });
    agent_report(&server, "db1", &upgraded);
    browser.wait_until(
        "db1's row shows the upgrade",
        &format!("return document.querySelector('tr[data-host=\"db1\"]').children[2].title === {:?}", third["db1"]),
    );
    assert_eq!(browser.eval("return window.__not_reloaded === true", json!([])), true, "no reload");
    assert_eq!(browser.text("#boot-debt b"), "1");

    // The incident (product.md §1): web1's next generation lost its virtio drivers.
    // fleetgate deploy blocks it; the agent's pre-flight would too, and report it with
    // check's findings — as the agent will.
    lab.edit_host("web1", |k| {
        k.revision = 3;
        k.available_kernel_modules.retain(|m| !m.starts_with("virtio"));
    })
    .expect("edit");
    let bad = lab.build(&["web1"]).expect("build");
    let blocked = fleetgate(&["deploy", &format!("{flake}#web1"), "--history", history_arg]);
    assert_eq!(blocked.code, 1, "{}\n{}", blocked.stdout, blocked.stderr);
    let ssh_config = lab.dir().ssh_config().display().to_string();
    let check = fleetgate(&[
        "check",
        "--system",
        &bad["web1"],
        "--target",
        "ssh://web1",
        "--ssh-config",
        &ssh_config,
        "--json",
    ]);
    let check: Value = serde_json::from_str(&check.stdout).unwrap();
    let live = fleetgate(&["status", &flake, "--live", "--history", history_arg, "--on", "web1", "--json"]);
    assert_eq!(live.code, 1, "web1 is blocked: {}", live.stderr);
    let web1: Value = serde_json::from_str(&live.stdout).unwrap();
    let web1 = &web1["hosts"][0];
    let findings: Vec<Value> = check["findings"].as_array().unwrap().iter().take(32).cloned().collect();
    agent_report(
        &server,
        "web1",
        &json!({
            "v": 2, "agent_version": "0.1.0", "time": now(),
            "desired": {"commit": "b".repeat(40), "system": bad["web1"], "since": now() - 10},
            "current": web1["current"], "booted": web1["booted"], "default": web1["default"],
            "boot_debt": web1["boot_debt"], "pending_reboot": null,
            "result": {"outcome": "blocked", "at": now(), "system": bad["web1"], "commit": "b".repeat(40),
                       "message": "the pre-flight check refused the new system; nothing applied", "findings": findings},
            "generations": web1["generations"]
        }),
    );
    browser.wait_until(
        "web1 blocked on the fleet page",
        "const r = document.querySelector('tr[data-host=\"web1\"]'); return r !== null && r.dataset.state === 'blocked'",
    );
    browser.screenshot(&screenshots().join("fleet.png"));
    browser.goto(&format!("{base}/hosts/web1"));
    browser.resize(1280, 1500);
    browser.wait_until(
        "the blocked finding on web1's page",
        "return document.querySelector('[data-finding=\"initrd.missing-modules\"] .fix') !== null",
    );
    let finding = browser.text("[data-finding=\"initrd.missing-modules\"]");
    assert!(finding.contains("virtio"), "{finding}");
    // The timeline: one mark per generation of the host, the booted one filled.
    let marks = browser.eval("return document.querySelectorAll('#timeline svg g[data-generation]').length", json!([]));
    assert_eq!(marks, web1["generations"].as_array().unwrap().len());
    let booted = browser.eval("return document.querySelector('#timeline g[data-booted=\"true\"]') !== null", json!([]));
    assert_eq!(booted, true);
    assert_eq!(browser.text("#host-state"), "blocked");
    browser.screenshot(&screenshots().join("host.png"));
    drop(browser);
    assert!(lab.down().expect("down").is_empty());
}

/// An agent upgrade by the real agent, live: web1 runs `fleetgate agent` (the fixture's
/// service, installed with `fleetgate deploy`) against `channel serve`; the dashboard is
/// open (read token) while CI promotes a new build through serve's hook; web1's agent
/// applies it by itself and reports it, and web1's row changes without a reload. Its
/// host page then shows the commit and the agent's version from that report.
#[test]
fn dashboard_shows_an_upgrade_by_the_real_agent_live() {
    let fleet = agent_world::Fleet::up(&["web1=virtio,systemd-boot"]);
    let gen2 = fleet.install_agents(&[("web1", agent_world::AgentSetup::default())]);
    let base = fleet.server_url();
    let browser = Browser::start();
    browser.log_in(&base, agent_world::READ_TOKEN);
    // The agent's first report: web1 runs the generation that installed it.
    browser.wait_until(
        "web1's agent reports the generation that installed it",
        &format!("{}; return r !== null && r.children[3].title === {:?}", row("web1"), gen2["web1"]),
    );
    browser.eval("window.__not_reloaded = true; return true", json!([]));

    let (commit, gen3) = fleet.release(&["web1"], 3, "revision 3", |_, _| {});
    fleet.promote_via_hook("web1", &commit, &gen3["web1"]);
    // The host's own word first (bounded): the agent applied revision 3 by itself.
    let status = fleet.wait_agent("web1", Duration::from_secs(240), "revision 3 applied", |s| {
        s["report"]["result"]["outcome"] == "applied" && s["report"]["result"]["system"] == gen3["web1"].as_str()
    });
    assert_eq!(fleet.lab.ssh("web1", "readlink -f /run/current-system").unwrap().trim(), gen3["web1"]);
    browser.wait_until(
        "web1's row shows revision 3 as desired and running, converged",
        &format!(
            "{}; return r !== null && r.dataset.state === 'converged' && r.children[2].title === {g:?} \
             && r.children[3].title === {g:?}",
            row("web1"),
            g = gen3["web1"]
        ),
    );
    assert_eq!(browser.eval("return window.__not_reloaded === true", json!([])), true, "no reload");
    assert_eq!(browser.text("tr[data-host=\"web1\"] td:nth-child(2)"), "converged");

    // web1's page: the promoted commit and the version of the agent that reported it.
    browser.click("tr[data-host=\"web1\"] a");
    browser.wait_until("web1's page", "return document.body.dataset.page === 'host'");
    browser.wait_until(
        "web1's page shows the commit and the agent",
        &format!(
            "const d = document.querySelector('[data-truth=\"desired\"]'); \
             const a = document.querySelector('[data-truth=\"agent\"] td'); \
             return d !== null && a !== null && d.textContent.includes({:?}) && a.textContent === {:?}",
            format!("commit {}", &commit[..12]),
            env!("CARGO_PKG_VERSION")
        ),
    );
    assert_eq!(status["report"]["agent_version"], env!("CARGO_PKG_VERSION"), "{status:#}");
    assert_eq!(browser.text("[data-truth=\"current\"] td"), gen3["web1"]);
    drop(browser);
    fleet.down();
}

/// A script line binding `r` to `host`'s row in the fleet table (or null).
fn row(host: &str) -> String {
    format!("const r = document.querySelector('tr[data-host=\"{host}\"]')")
}

#[test]
fn dashboard_a_host_token_sees_only_its_own_host() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server(tmp.path(), &["web1", "web2"]);
    let sys = "/nix/store/0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a-nixos-system-web";
    for h in ["web1", "web2"] {
        agent_report(&server, h, &json!({"status": "ok", "system": sys}));
    }
    let base = format!("http://{}", server.addr());
    let browser = Browser::start();
    browser.log_in(&base, &token("web2"));
    browser.wait_until("web2's row", "return document.querySelector('tr[data-host=\"web2\"]') !== null");
    let rows = browser.eval("return document.querySelectorAll('#fleet tbody tr').length", json!([]));
    assert_eq!(rows, 1, "web2's token shows web2 only");
    browser.goto(&format!("{base}/hosts/web1"));
    browser
        .wait_until("an answer for web1", "return document.getElementById('updated').textContent === 'no such host'");
    assert_eq!(browser.text("#host-name"), "web1");
    assert_eq!(
        browser.eval("return document.querySelectorAll('#truths tr').length", json!([])),
        0,
        "nothing of web1 shown"
    );
    // Logged out, the dashboard asks for a token again.
    browser.goto(&format!("{base}/"));
    browser.click("header form button");
    browser.wait_until("the log-in page", "return document.body.dataset.page === 'login'");
}

/// The browser's processes end when the test's `Browser` is dropped, even when
/// chromedriver died first (a plain kill of chromedriver used to leave Chromium running).
#[test]
fn dashboard_browser_processes_end_with_the_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server(tmp.path(), &["web1"]);
    let browser = Browser::start();
    browser.log_in(&format!("http://{}", server.addr()), READ);
    let dir = browser.dir();
    let running = webdriver::processes_naming(&dir);
    // chromedriver, Chromium's browser process and at least one renderer: the scan sees them.
    assert!(running.len() >= 3, "the browser's processes are found by their directory: {running:?}");
    // chromedriver dies as a crash or a timeout would kill it: the session cannot be ended
    // through it any more, and Chromium, its child, lives on unless its group is ended.
    let killed = Command::new("kill").args(["-KILL", &browser.driver_pid().to_string()]).status().unwrap();
    assert!(killed.success());
    drop(browser);
    assert_eq!(webdriver::processes_naming(&dir), Vec::<u32>::new(), "browser processes left running");
    assert!(!dir.exists(), "the browser's home and profile are removed");
}
