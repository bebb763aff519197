//! The HTTP service on loopback: GitHub-style HMAC hook driving real promotions,
//! manifests with ETag/If-None-Match, per-host report tokens, fleet status.
#![allow(clippy::unwrap_used)]
mod common;

use std::sync::{Arc, Mutex};

use common::Env;
use fleetgate_channel::SignedManifest;
use fleetgate_channel::secret::Secret;
use fleetgate_channel::server::github;
use fleetgate_channel::server::tokens::HostTokens;
use fleetgate_channel::server::{ServerConfig, start};
use fleetgate_nix::PublicKey;

const HOOK_SECRET: &str = "hook-secret-do-not-log-0123456789";
const HOST_TOKEN: &str = "report-token-web1-abcdefghijklmnop";

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
        let mut r = self
            .agent
            .post(&format!("{}/hooks/github", self.base))
            .header("Content-Type", "application/json");
        if let Some(s) = sig {
            r = r.header("X-Hub-Signature-256", &s);
        }
        let mut resp = r.send(body).unwrap();
        (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap())
    }

    fn signed_hook(&self, body: &str) -> (u16, String) {
        self.hook(body, Some(github::sign(HOOK_SECRET.as_bytes(), body.as_bytes())))
    }

    fn get(&self, path: &str, etag: Option<&str>) -> (u16, Option<String>, Vec<u8>) {
        let mut r = self.agent.get(&format!("{}{path}", self.base));
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
            db: env.root().join("serve.sqlite"),
            hook_secret: Some(Secret::new(HOOK_SECRET)),
            host_tokens: HostTokens::parse(&Secret::new(&format!("web1 {HOST_TOKEN}\n"))).unwrap(),
            channel: Some((env.nix.clone(), env.config())),
        },
        Arc::new(move |l: &str| sink.lock().unwrap().push(l.to_owned())),
    )
    .unwrap();
    let http = Http::new(server.addr());

    // Nothing promoted yet.
    assert_eq!(http.get("/v1/hosts/web1/manifest", None).0, 404);

    // Bad requests change nothing.
    let refs = env.remote_refs();
    let good = serde_json::json!({ "host": "web1", "commit": c1, "system": sys, "build": "https://ci/run/1" }).to_string();
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
    assert_eq!(env.remote_refs(), refs);
    assert_eq!(http.get("/v1/hosts/web1/manifest", None).0, 404);

    // A signed request promotes.
    let (code, body) = http.signed_hook(&good);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"kind\":\"created\""), "{body}");
    assert_eq!(env.branch("web1").as_deref(), Some(c1.as_str()));

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

    let (code, _, status) = http.get("/v1/hosts", None);
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    let web1 = &status["hosts"][0];
    assert_eq!(web1["host"], "web1");
    assert_eq!(web1["manifest"]["commit"], c1.as_str());
    assert_eq!(web1["report"]["status"], "ok");
    assert_eq!(web1["in_sync"], true);

    // State survives a restart (SQLite), and secrets never reached the log.
    drop(server);
    let server = start(
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            db: env.root().join("serve.sqlite"),
            hook_secret: None,
            host_tokens: HostTokens::default(),
            channel: None,
        },
        Arc::new(|_: &str| {}),
    )
    .unwrap();
    let http = Http::new(server.addr());
    let (code, etag3, _) = http.get("/v1/hosts/web1/manifest", None);
    assert_eq!((code, etag3.as_deref()), (200, Some(etag.as_str())));
    assert_eq!(http.hook(&good, None).0, 404, "hook disabled without a secret");
    let logs = server_log.lock().unwrap().join("\n");
    assert!(logs.contains("bad X-Hub-Signature-256"), "{logs}");
    assert!(!logs.contains(HOOK_SECRET) && !logs.contains(HOST_TOKEN));
}
