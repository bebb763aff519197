//! The status API, `/metrics` and the dashboard's pages over real HTTP: reports of both
//! versions folded into the status model, read access by token and per-host scope, ETags,
//! and two services sharing one real PostgreSQL database.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetgate_channel::secret::Secret;
use fleetgate_server::tokens::HostTokens;
use fleetgate_server::{ReadTokens, RunningServer, ServerConfig, StoreConfig, start};
use serde_json::{Value, json};

#[path = "../../channel/tests/common/postgres.rs"]
mod cluster;

const WEB1: &str = "web1-report-token-0123456789";
const WEB2: &str = "web2-report-token-0123456789";
const OPS: &str = "ops-read-token-0123456789";
const TEAM: &str = "team-db-read-token-0123456789";
const SYS_OLD: &str = "/nix/store/0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a-nixos-system-web1";
const SYS_NEW: &str = "/nix/store/1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b-nixos-system-web1";

fn config(store: StoreConfig) -> ServerConfig {
    ServerConfig::new(
        store,
        HostTokens::parse(&Secret::new(&format!("web1 {WEB1}\nweb2 {WEB2}\n"))).unwrap(),
        ReadTokens::parse(&Secret::new(&format!("ops {OPS}\nteam {TEAM} db*\n"))).unwrap(),
    )
}

struct Client {
    agent: ureq::Agent,
    base: String,
}

struct Answer {
    code: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

impl Client {
    fn new(server: &RunningServer) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self { agent, base: format!("http://{}", server.addr()) }
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut r = self.agent.get(&format!("{}{path}", self.base));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        answer(r.call().unwrap())
    }

    fn read(&self, path: &str, token: &str) -> Answer {
        self.get(path, &[("Authorization", &format!("Bearer {token}"))])
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut r = self.agent.post(&format!("{}{path}", self.base));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        answer(r.send(body).unwrap())
    }

    fn report(&self, host: &str, token: &str, body: &Value) -> u16 {
        let auth = format!("Bearer {token}");
        self.post(&format!("/v1/hosts/{host}/report"), &[("Authorization", &auth)], &body.to_string()).code
    }
}

fn answer(mut resp: ureq::http::Response<ureq::Body>) -> Answer {
    let headers =
        resp.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
    Answer { code: resp.status().as_u16(), headers, body: resp.body_mut().read_to_string().unwrap() }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A version-2 report as the agent will send it: web1 refused its new system (the seed
/// incident: no virtio drivers in the initrd), still runs and boots the old one.
fn blocked_report() -> Value {
    json!({
        "v": 2, "agent_version": "0.1.0", "time": now(),
        "desired": {"commit": "c".repeat(40), "system": SYS_NEW, "since": now() - 30},
        "current": SYS_OLD, "booted": SYS_OLD,
        "default": {"entry": "nixos-generation-1.conf", "generation": 1, "system": SYS_OLD},
        "boot_debt": [], "pending_reboot": null,
        "result": {"outcome": "blocked", "at": now(), "system": SYS_NEW, "commit": "c".repeat(40),
                   "message": "the new initrd cannot find the root disk",
                   "findings": [{"id": "initrd.missing-modules", "severity": "error",
                                 "message": "the initrd lacks virtio_blk, which the root disk needs",
                                 "evidence": ["root /dev/vda2 via virtio_blk"],
                                 "fix": "add virtio_blk to boot.initrd.availableKernelModules"}]},
        "generations": [{"number": 1, "system": SYS_OLD, "booted": true, "default": true, "failed": false, "created_at": null}]
    })
}

/// Polls `check` until it holds (bounded: replicas agree within about a second).
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50)); // pace the polls
    }
}

#[test]
fn reports_of_both_versions_become_the_status_model_for_readers_with_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(config(StoreConfig::Sqlite(tmp.path().join("s.sqlite"))), Arc::new(|_: &str| {})).unwrap();
    let c = Client::new(&server);
    assert_eq!(c.report("web1", WEB1, &blocked_report()), 204);
    assert_eq!(c.report("web2", WEB2, &json!({"status": "ok", "system": SYS_OLD})), 204);
    // Bounds: an unknown version and an oversized finding list are refused.
    let mut bad = blocked_report();
    bad["v"] = 9.into();
    assert_eq!(c.report("web1", WEB1, &bad), 400);
    let mut bad = blocked_report();
    bad["result"]["findings"] = Value::Array(vec![bad["result"]["findings"][0].clone(); 40]);
    assert_eq!(c.report("web1", WEB1, &bad), 400);
    assert_eq!(c.report("web2", WEB1, &blocked_report()), 401, "web1's token cannot report for web2");

    let all = c.read("/v1/status", OPS);
    assert_eq!(all.code, 200, "{}", all.body);
    let doc = all.json();
    assert_eq!(doc["summary"]["hosts"], 2);
    assert_eq!(doc["summary"]["states"]["blocked"], 1);
    assert_eq!(doc["hosts"][0]["host"], "web1", "most urgent first");
    assert_eq!(doc["hosts"][0]["state"], "blocked");
    assert_eq!(doc["hosts"][0]["agent_version"], "0.1.0");
    assert_eq!(doc["hosts"][1]["state"], "unknown", "web2 has no desired system");
    // Unchanged: 304.
    let etag = all.header("etag").unwrap().to_owned();
    let again = c.get("/v1/status", &[("Authorization", &format!("Bearer {OPS}")), ("If-None-Match", &etag)]);
    assert_eq!(again.code, 304);
    // Filters.
    let blocked = c.read("/v1/status?state=blocked", OPS).json();
    assert_eq!((blocked["matching"].as_u64(), blocked["hosts"].as_array().unwrap().len()), (Some(1), 1));
    assert_eq!(c.read("/v1/status?q=web2", OPS).json()["hosts"][0]["host"], "web2");
    assert_eq!(c.read("/v1/status?state=nonsense", OPS).code, 400);

    // One host, with its findings and last reports.
    let web1 = c.read("/v1/status/web1", OPS).json();
    assert_eq!(web1["host"]["last_result"]["findings"][0]["id"], "initrd.missing-modules");
    assert_eq!(web1["reports"][0]["version"], 2);
    assert_eq!(web1["reports"][0]["status"], "blocked");

    // Scopes: a host token reads only its host; a scoped read token only its globs.
    assert_eq!(c.read("/v1/status/web1", WEB1).code, 200);
    assert_eq!(c.read("/v1/status/web2", WEB1).code, 404);
    let mine = c.read("/v1/status", WEB1).json();
    assert_eq!(mine["summary"]["hosts"], 1);
    assert_eq!(mine["hosts"].as_array().unwrap().len(), 1);
    assert_eq!(c.read("/v1/status", TEAM).json()["summary"]["hosts"], 0);
    assert_eq!(c.read("/v1/hosts", WEB2).json()["hosts"].as_array().unwrap().len(), 1);
    assert_eq!(c.get("/v1/status", &[]).code, 401);
    assert_eq!(c.read("/v1/status", "not-a-token-0000000000").code, 401);

    // Metrics: a fleet-wide reader only.
    let metrics = c.read("/metrics", OPS);
    assert_eq!(metrics.code, 200);
    assert!(metrics.body.contains("fleetgate_hosts{state=\"blocked\"} 1\n"), "{}", metrics.body);
    assert!(metrics.body.contains("fleetgate_boot_debt_generations 0\n"));
    assert_eq!(c.read("/metrics", WEB1).code, 403);
    assert_eq!(c.get("/metrics", &[]).code, 401);
}

#[test]
fn the_dashboard_needs_a_log_in_and_is_served_from_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(config(StoreConfig::Sqlite(tmp.path().join("s.sqlite"))), Arc::new(|_: &str| {})).unwrap();
    let c = Client::new(&server);
    let first = c.get("/", &[]);
    assert_eq!((first.code, first.header("location")), (303, Some("/login")));
    let wrong = c.post("/login", &[("Content-Type", "application/x-www-form-urlencoded")], "token=nope");
    assert_eq!(wrong.code, 401);
    assert!(wrong.body.contains("may not read anything"));
    let ok = c.post("/login", &[("Content-Type", "application/x-www-form-urlencoded")], &format!("token={OPS}"));
    assert_eq!((ok.code, ok.header("location")), (303, Some("/")));
    let cookie = ok.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
    assert!(ok.header("set-cookie").unwrap().contains("HttpOnly") && !cookie.contains(OPS), "{cookie}");
    let page = c.get("/", &[("Cookie", &cookie)]);
    assert_eq!(page.code, 200);
    assert!(page.header("content-security-policy").unwrap().contains("script-src 'self'"));
    assert!(page.body.contains("/assets/app.js"));
    assert_eq!(c.get("/v1/status", &[("Cookie", &cookie)]).code, 200, "the page's own requests carry the cookie");
    assert_eq!(c.get("/assets/app.js", &[]).code, 200);
    assert_eq!(c.get("/assets/nope.js", &[]).code, 404);
    let out = c.post("/logout", &[("Cookie", &cookie)], "");
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
}

#[test]
fn postgres_two_services_sharing_one_database_see_each_others_reports() {
    let pg = cluster::Postgres::start("fleetgate", "replica-test-password-01");
    pg.psql("postgres", &["--command", "CREATE DATABASE fleetgate"]);
    let conninfo = pg.keyword_value("fleetgate", Some("replica-test-password-01"));
    let a = start(config(StoreConfig::Postgres(conninfo.clone())), Arc::new(|_: &str| {})).unwrap();
    let b = start(config(StoreConfig::Postgres(conninfo)), Arc::new(|_: &str| {})).unwrap();
    let (ca, cb) = (Client::new(&a), Client::new(&b));
    assert_eq!(ca.report("web1", WEB1, &blocked_report()), 204);
    eventually("b sees a's report", || cb.read("/v1/status/web1", OPS).json()["host"]["state"] == "blocked");
    assert_eq!(cb.report("web2", WEB2, &json!({"status": "ok", "system": SYS_OLD})), 204);
    eventually("a sees b's report", || ca.read("/v1/status", OPS).json()["summary"]["hosts"] == 2);
    let metrics = ca.read("/metrics", OPS).body;
    assert!(metrics.contains("fleetgate_hosts{state=\"blocked\"} 1\n"), "{metrics}");
}
