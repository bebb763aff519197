//! The HTTP service on loopback: GitHub-style HMAC hook driving real promotions,
//! manifests with ETag/If-None-Match, per-host report tokens, fleet status.
#![allow(clippy::unwrap_used)]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Env;
use fleetgate_channel::SignedManifest;
use fleetgate_channel::git::Mirror;
use fleetgate_channel::lock::RepoLock;
use fleetgate_channel::secret::Secret;
use fleetgate_nix::PublicKey;
use fleetgate_server::github;
use fleetgate_server::store::Store as _;
use fleetgate_server::tokens::HostTokens;
use fleetgate_server::{ReadTokens, ServerConfig, start};

const HOOK_SECRET: &str = "hook-secret-do-not-log-0123456789";
const HOST_TOKEN: &str = "report-token-web1-abcdefghijklmnop";
const READ_TOKEN: &str = "read-token-ops-abcdefghijklmnop";

fn read_tokens() -> ReadTokens {
    ReadTokens::parse(&Secret::new(&format!("ops {READ_TOKEN}\n"))).unwrap()
}

struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    fn new(addr: std::net::SocketAddr) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(60)))
            .build()
            .into();
        Self { agent, base: format!("http://{addr}") }
    }

    fn hook(&self, body: &str, sig: Option<String>) -> (u16, String) {
        self.hook_delivery(body, sig, None)
    }

    fn hook_delivery(&self, body: &str, sig: Option<String>, delivery: Option<&str>) -> (u16, String) {
        let mut r = self.agent.post(&format!("{}/hooks/github", self.base)).header("Content-Type", "application/json");
        if let Some(s) = sig {
            r = r.header("X-Hub-Signature-256", &s);
        }
        if let Some(d) = delivery {
            r = r.header("X-GitHub-Delivery", d);
        }
        let mut resp = r.send(body).unwrap();
        (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap())
    }

    fn signed_hook(&self, body: &str) -> (u16, String) {
        self.hook(body, Some(github::sign(HOOK_SECRET.as_bytes(), body.as_bytes())))
    }

    /// A signed hook with a delivery id: the 202 answer as JSON.
    fn delivery(&self, body: &str, delivery: &str) -> serde_json::Value {
        let sig = github::sign(HOOK_SECRET.as_bytes(), body.as_bytes());
        let (code, text) = self.hook_delivery(body, Some(sig), Some(delivery));
        assert_eq!(code, 202, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    fn job(&self, id: &str) -> serde_json::Value {
        let (code, _, body) = self.get(&format!("/v1/jobs/{id}"), None);
        assert_eq!(code, 200);
        serde_json::from_slice(&body).unwrap()
    }

    /// Polls a job until `done` says so (bounded).
    fn wait_job(&self, id: &str, done: impl Fn(&str) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let job = self.job(id);
            if done(job["state"].as_str().unwrap()) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} stuck: {job}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn get(&self, path: &str, etag: Option<&str>) -> (u16, Option<String>, Vec<u8>) {
        self.get_as(path, etag, None)
    }

    /// A GET with a bearer token.
    fn get_as(&self, path: &str, etag: Option<&str>, token: Option<&str>) -> (u16, Option<String>, Vec<u8>) {
        let mut r = self.agent.get(&format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.header("Authorization", &format!("Bearer {t}"));
        }
        if let Some(e) = etag {
            r = r.header("If-None-Match", e);
        }
        let mut resp = r.call().unwrap();
        let tag = resp.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
        (resp.status().as_u16(), tag, resp.body_mut().read_to_vec().unwrap())
    }

    fn report(&self, host: &str, token: &str, body: &str) -> u16 {
        self.agent
            .post(&format!("{}/v1/hosts/{host}/report", self.base))
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap()
            .status()
            .as_u16()
    }
}

/// A service without hook or promotions, on a free loopback port.
fn plain_config(db: std::path::PathBuf, host_tokens: HostTokens) -> ServerConfig {
    ServerConfig::new(db.into(), host_tokens, read_tokens())
}

#[test]
fn hook_manifest_etag_report_and_status() {
    let env = Env::new();
    let c1 = env.commit("c1");
    let sys = env.system("serve", None);
    let server_log = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = server_log.clone();
    let server = start(
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: env.root().join("serve.sqlite").into(),
            read_tokens: read_tokens(),
            thresholds: Default::default(),
            hook_secret: Some(Secret::new(HOOK_SECRET)),
            host_tokens: HostTokens::parse(&Secret::new(&format!("web1 {HOST_TOKEN}\n"))).unwrap(),
            channel: Some((env.nix.clone(), env.config())),
            max_promotions: 2,
            limits: Default::default(),
        },
        Arc::new(move |l: &str| sink.lock().unwrap().push(l.to_owned())),
    )
    .unwrap();
    let http = Http::new(server.addr());

    // Nothing promoted yet.
    assert_eq!(http.get("/v1/hosts/web1/manifest", None).0, 404);

    // Bad requests change nothing.
    let refs = env.remote_refs();
    let good =
        serde_json::json!({ "host": "web1", "commit": c1, "system": sys, "build": "https://ci/run/1" }).to_string();
    assert_eq!(http.hook(&good, None).0, 401);
    assert_eq!(http.hook(&good, Some(github::sign(b"wrong secret", good.as_bytes()))).0, 401);
    let tampered = good.replace("web1", "web2");
    assert_eq!(http.hook(&tampered, Some(github::sign(HOOK_SECRET.as_bytes(), good.as_bytes()))).0, 401);
    let (code, body) = http.signed_hook("{\"host\": \"web1\",");
    assert_eq!(code, 400);
    assert!(body.contains("malformed JSON"), "{body}");
    let (code, body) = http.signed_hook(&good.replace("\"web1\"", "\"--upload-pack=x\""));
    assert_eq!(code, 400);
    assert!(body.contains("invalid host name"), "{body}");
    let (code, body) = http.signed_hook(&good.replace(&c1, "HEAD~1"));
    assert_eq!(code, 400);
    assert!(body.contains("invalid commit id"), "{body}");
    // A bad build reference is the client's fault, like a bad host: 400, not 502.
    for build in ["https://ci/run/1\u{7}".to_owned(), "b".repeat(1025)] {
        let body = serde_json::json!({ "host": "web1", "commit": c1, "system": sys, "build": build }).to_string();
        let (code, text) = http.signed_hook(&body);
        assert_eq!(code, 400, "{text}");
        assert!(text.contains("invalid build reference"), "{text}");
    }
    assert_eq!(env.remote_refs(), refs);
    assert_eq!(http.get("/v1/hosts/web1/manifest", None).0, 404);

    // A signed request is accepted at once and promotes in the background. The test
    // holds the repository's lock, like a long promotion in progress: the answer still
    // comes straight away (GitHub gives up after 10 s), and the job waits.
    let cfg = env.config();
    let mirror = Mirror::new(&cfg.state_dir, &cfg.repo, cfg.git.clone()).unwrap();
    std::fs::create_dir_all(mirror.lock_path().parent().unwrap()).unwrap();
    let held = RepoLock::acquire(mirror.lock_path(), Duration::from_secs(5)).unwrap();
    let asked = Instant::now();
    let accepted = http.delivery(&good, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert!(asked.elapsed() < Duration::from_secs(5), "{:?}", asked.elapsed());
    let id = accepted["id"].as_str().unwrap().to_owned();
    assert_eq!(accepted["duplicate"], false);
    assert_eq!(accepted["status_url"], format!("/v1/jobs/{id}"));
    assert_eq!(accepted["host"], "web1");
    http.wait_job(&id, |s| s == "running");
    // GitHub redelivers the same delivery: the same job, not a second promotion.
    let again = http.delivery(&good, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert_eq!((again["id"].as_str(), again["duplicate"].as_bool()), (Some(id.as_str()), Some(true)));
    assert_eq!(env.branch("web1"), None, "still waiting for the lock");
    drop(held);
    let job = http.wait_job(&id, |s| s != "queued" && s != "running");
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["outcome"]["movement"]["kind"], "created", "{job}");
    assert_eq!(env.branch("web1").as_deref(), Some(c1.as_str()));
    // Even after it finished, the delivery is not promoted again.
    let again = http.delivery(&good, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert_eq!(again["id"].as_str(), Some(id.as_str()));
    assert_eq!(again["state"], "succeeded");
    let started = server_log.lock().unwrap().iter().filter(|l| l.contains("promoting web1")).count();
    assert_eq!(started, 1);

    // A job that fails says why, with the status a synchronous answer would have had.
    let unknown = good.replace(&c1, &"ab".repeat(20));
    let failing = http.delivery(&unknown, "delivery-2");
    let job = http.wait_job(failing["id"].as_str().unwrap(), |s| s != "queued" && s != "running");
    assert_eq!((job["state"].as_str(), job["status"].as_u64()), (Some("failed"), Some(422)), "{job}");
    assert!(job["error"].as_str().unwrap().contains("is not in"), "{job}");
    assert_eq!(http.get("/v1/jobs/0123456789abcdef0123456789abcdef", None).0, 404);
    let sig = github::sign(HOOK_SECRET.as_bytes(), good.as_bytes());
    assert_eq!(http.hook_delivery(&good, Some(sig), Some("a b")).0, 400);

    // The manifest, its ETag, and a 304 for an agent that already has it.
    let (code, etag, doc) = http.get("/v1/hosts/web1/manifest", None);
    assert_eq!(code, 200);
    let etag = etag.unwrap();
    let pk = PublicKey::from_file(&env.pk).unwrap();
    let m = SignedManifest::parse(&doc).unwrap().verify(&pk).unwrap();
    assert_eq!((m.commit.as_str(), m.system.as_str()), (c1.as_str(), sys.as_str()));
    assert_eq!(m.build.as_deref(), Some("https://ci/run/1"));
    let (code, etag2, body) = http.get("/v1/hosts/web1/manifest", Some(&etag));
    assert_eq!((code, etag2.as_deref(), body.len()), (304, Some(etag.as_str()), 0));
    assert_eq!(http.get("/v1/hosts/web1/manifest", Some("\"stale\"")).0, 200);
    assert_eq!(http.get("/v1/hosts/..%2Fx/manifest", None).0, 400);

    // Reports need the host's own token.
    let rep = format!(r#"{{"status":"ok","commit":"{c1}","system":"{sys}"}}"#);
    assert_eq!(http.report("web1", "wrong-token-0000000000", &rep), 401);
    assert_eq!(http.report("web2", HOST_TOKEN, &rep), 401);
    assert_eq!(http.report("web1", HOST_TOKEN, "{not json"), 400);
    assert_eq!(http.report("web1", HOST_TOKEN, r#"{"status":"ok","commit":"abc"}"#), 400);
    assert_eq!(http.report("web1", HOST_TOKEN, &rep), 204);

    // Reading needs a token: a read token, or the host's own one for itself.
    assert_eq!(http.get("/v1/hosts", None).0, 401);
    assert_eq!(http.get_as("/v1/hosts", None, Some("wrong-token-0000000000")).0, 401);
    let (code, _, status) = http.get_as("/v1/hosts", None, Some(READ_TOKEN));
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    let web1 = &status["hosts"][0];
    assert_eq!(web1["host"], "web1");
    assert_eq!(web1["manifest"]["commit"], c1.as_str());
    assert_eq!(web1["report"]["status"], "ok");
    assert_eq!(web1["in_sync"], true);

    // State survives a restart (SQLite), and secrets never reached the log.
    drop(server);
    let server =
        start(plain_config(env.root().join("serve.sqlite"), HostTokens::default()), Arc::new(|_: &str| {})).unwrap();
    let http = Http::new(server.addr());
    let (code, etag3, _) = http.get("/v1/hosts/web1/manifest", None);
    assert_eq!((code, etag3.as_deref()), (200, Some(etag.as_str())));
    assert_eq!(http.hook(&good, None).0, 404, "hook disabled without a secret");
    let logs = server_log.lock().unwrap().join("\n");
    assert!(logs.contains("bad X-Hub-Signature-256"), "{logs}");
    assert!(!logs.contains(HOOK_SECRET) && !logs.contains(HOST_TOKEN));
}

#[test]
fn reports_are_kept_a_hundred_per_host() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("serve.sqlite");
    let tokens = HostTokens::parse(&Secret::new(&format!("web1 {HOST_TOKEN}\n"))).unwrap();
    let server = start(plain_config(db.clone(), tokens), Arc::new(|_: &str| {})).unwrap();
    let http = Http::new(server.addr());
    for i in 0..130 {
        assert_eq!(http.report("web1", HOST_TOKEN, &format!(r#"{{"status":"ok","message":"report {i}"}}"#)), 204);
    }
    drop(server);
    let stored = fleetgate_server::store::sqlite::SqliteStore::open(&db).unwrap();
    assert_eq!(stored.report_count("web1").unwrap(), 100);
    assert_eq!(stored.reports("web1", 1).unwrap()[0].message.as_deref(), Some("report 129"));
}
