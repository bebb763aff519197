//! The agent's report, as `report::build` makes it from its state and its view
//! of the host, sent by its own HTTP sink to the real server
//! (`fleetgate-server` on SQLite, over loopback): the server's validation
//! takes it, and `/v1/status/<host>` shows what it said. Hostile text in the
//! state (control characters, oversized messages, a short commit) is bounded
//! or dropped by the agent, never a report the server refuses.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use fleetgate_agent::accept::Seen;
use fleetgate_agent::config::{AgentConfig, ConfigFile, Flags};
use fleetgate_agent::host::View;
use fleetgate_agent::http::Client;
use fleetgate_agent::queue::{Delivery, HttpSink, Sink};
use fleetgate_agent::report::{self, Outcome, RebootReason, ResultExt};
use fleetgate_agent::state::{AgentState, PendingReboot};
use fleetgate_apply::machine::HostState;
use fleetgate_apply::remote::BootDefault;
use fleetgate_channel::secret::Secret;
use fleetgate_facts::{Finding, Severity};
use fleetgate_server::tokens::HostTokens;
use fleetgate_server::{ReadTokens, ServerConfig, StoreConfig, start};

const TOKEN: &str = "web1-report-token-0123456789";
const OPS: &str = "ops-read-token-0123456789";

fn sys(n: u8) -> String {
    format!("/nix/store/{}-nixos-system-web1-r{n}", format!("{n}").repeat(32))
}

fn config(server: &str) -> AgentConfig {
    let text = format!(
        "host = \"web1\"\nserver = \"{server}\"\ntrusted_keys = [\"k-1:fjYcuZjQVdZgKGeDy4UPE6TZkOtzYO0yGbMmrsf7aMc=\"]\ncaches = [\"http://c\"]\n"
    );
    AgentConfig::resolve(ConfigFile::parse(&text).unwrap(), Flags::default()).unwrap()
}

/// A host on r1 (booted r0), r2 the default and never booted, r3 desired
/// and waiting for a reboot; the last result full of hostile text.
fn world(commit: &str) -> (AgentState, View) {
    let manifest = fleetgate_agent::fake::manifest(&sys(3), commit, 1_000);
    let noisy = Finding::new("initrd.missing-modules\u{7}", Severity::Error, "a\u{1b}[31m".repeat(2000))
        .with_evidence((0..40).map(|i| format!("line {i}\nwith a newline and {}", "x".repeat(900))))
        .with_fix("x".repeat(5000));
    let mut state = AgentState {
        desired: Some(Seen { manifest, digest: "d".into(), signed_by: "k-1".into() }),
        pending_reboot: Some(PendingReboot {
            system: sys(3),
            why: "outside the reboot window 01:00-05:00\nsecond line".into(),
            reasons: vec![RebootReason::Kernel, RebootReason::Initrd],
            since: 1_100,
            under: None,
        }),
        last_result: Some(
            report::result(Outcome::Skipped, 1_100, Some(&sys(3)), Some(commit), "m\u{0}".repeat(3000))
                .with_findings(&vec![noisy; 40]),
        ),
        reset: Some("the state file was corrupt; moved aside".into()),
        ..AgentState::default()
    };
    state.mark_bad(&sys(2), None, "rolled back", 900);
    let view = View {
        state: HostState {
            current: sys(1),
            booted: sys(0),
            profile: sys(2),
            profile_generation: Some(3),
            boot_id: "b".into(),
        },
        default: Some(BootDefault { entry: "nixos-generation-3.conf".into(), system: Some(sys(2)) }),
        generations: vec![(1, sys(0)), (2, sys(1)), (3, sys(2))],
    };
    (state, view)
}

#[test]
fn the_agents_report_is_taken_by_the_server_and_shown_in_its_status() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(
        ServerConfig::new(
            StoreConfig::Sqlite(tmp.path().join("s.sqlite")),
            HostTokens::parse(&Secret::new(&format!("web1 {TOKEN}\n"))).unwrap(),
            ReadTokens::parse(&Secret::new(&format!("ops {OPS}\n"))).unwrap(),
        ),
        Arc::new(|_: &str| {}),
    )
    .unwrap();
    let base = format!("http://{}", server.addr());
    let client = Client::new(Duration::from_secs(30));
    let commit = "ab".repeat(20);
    let (state, view) = world(&commit);
    let cfg = config(&base);
    let now = 1_000 + 30 * 24 * 3600; // the manifest is stale by then
    let built = report::build(&cfg, &state, Some(&view), now);

    let mut sink = HttpSink::new(format!("{base}/v1/hosts/web1/report"), Some(TOKEN.into()), client.clone());
    assert_eq!(sink.send(&built), Delivery::Delivered);

    let mut answer = ureq::get(&format!("{base}/v1/status/web1"))
        .header("Authorization", &format!("Bearer {OPS}"))
        .call()
        .unwrap_or_else(|e| panic!("GET /v1/status/web1: {e}"));
    let doc: serde_json::Value = serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap();
    let host = &doc["host"];
    assert_eq!(host["current"], sys(1).as_str());
    assert_eq!(host["booted"], sys(0).as_str());
    assert_eq!(host["desired"]["system"], sys(3).as_str());
    assert_eq!(host["desired"]["commit"], commit.as_str());
    assert_eq!(host["default"]["generation"], 3);
    let debt: Vec<u64> =
        host["boot_debt"].as_array().unwrap().iter().map(|g| g["generation"].as_u64().unwrap()).collect();
    assert_eq!(debt, [2, 3], "booted generation 1, the default is 3");
    assert_eq!(host["pending_reboot"]["reasons"], serde_json::json!(["kernel", "initrd"]));
    assert_eq!(host["pending_reboot"]["detail"], "outside the reboot window 01:00-05:00 second line");
    assert_eq!(host["agent_version"], env!("CARGO_PKG_VERSION"));
    let result = &host["last_result"];
    assert_eq!(result["outcome"], "skipped");
    let ids: Vec<&str> = result["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(ids[..3], ["agent.state-reset", "manifest.stale", "initrd.missing-modules"]);
    assert_eq!(ids.len(), report::MAX_FINDINGS);
    let timeline = host["generations"].as_array().unwrap();
    assert_eq!(timeline.len(), 3, "{host}");
    assert_eq!((timeline[2]["failed"].as_bool(), timeline[2]["default"].as_bool()), (Some(true), Some(true)));
    assert_eq!((timeline[0]["booted"].as_bool(), timeline[0]["default"].as_bool()), (Some(true), None), "not known");
    assert!(result["findings"][2]["fix"].as_str().unwrap().len() <= report::MAX_LINE, "trimmed to the body limit");

    // A commit the schema does not take (short) is left out, not a refused report.
    let (state, view) = world("abc123");
    let short = report::build(&cfg, &state, Some(&view), now);
    assert_eq!(short.desired.as_ref().map(|d| d.commit.clone()), Some(None));
    assert_eq!(sink.send(&short), Delivery::Delivered);

    // The version-1 body an old server gets is read by this one too.
    let v1 = serde_json::to_vec(&report::to_v1(&built)).unwrap();
    let answer = client.post_json(&format!("{base}/v1/hosts/web1/report"), Some(TOKEN), &v1, 1 << 16).unwrap();
    assert!((200..300).contains(&answer.status), "{}", String::from_utf8_lossy(&answer.body));
}

/// A server that reads only version 1 of the report, then (upgraded) both: the bodies it got.
fn v1_server(upgraded_after: usize) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = std::sync::Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let body = String::from_utf8_lossy(&body).into_owned();
            let mut all = seen.lock().unwrap();
            let v2 = body.contains("\"agent_version\"");
            all.push(body);
            let (status, text) = if v2 && all.len() <= upgraded_after {
                ("400 Bad Request", "unknown field `agent_version`")
            } else {
                ("200 OK", "{}")
            };
            drop(all);
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (base, bodies)
}

/// Issue 11, left over: after one refusal of version 2 the agent used to send version 1
/// for the rest of the process; a server upgraded meanwhile never got version 2.
#[test]
fn version_1_after_a_refusal_and_version_2_again_later() {
    let commit = "ab".repeat(20);
    let (state, view) = world(&commit);
    let built = report::build(&config("http://127.0.0.1:1"), &state, Some(&view), 1_000);
    let client = Client::new(Duration::from_secs(10));
    let is_v2 = |b: &String| b.contains("\"agent_version\"");

    // Within the hour: version 1 every time after the refusal.
    let (base, bodies) = v1_server(usize::MAX);
    let mut sink = HttpSink::new(format!("{base}/v1/hosts/web1/report"), None, client.clone());
    assert_eq!(sink.send(&built), Delivery::Delivered);
    assert_eq!(sink.send(&built), Delivery::Delivered);
    let got: Vec<bool> = bodies.lock().unwrap().iter().map(is_v2).collect();
    assert_eq!(got, [true, false, false], "v2 refused, then v1, v1");

    // Past it (zero here): version 2 is tried again, and kept once taken.
    let (base, bodies) = v1_server(1);
    let mut sink =
        HttpSink::new(format!("{base}/v1/hosts/web1/report"), None, client).with_v2_again_after(Duration::ZERO);
    for _ in 0..3 {
        assert_eq!(sink.send(&built), Delivery::Delivered);
    }
    let got: Vec<bool> = bodies.lock().unwrap().iter().map(is_v2).collect();
    assert_eq!(got, [true, false, true, true], "v2 refused, v1; the server upgraded: v2 from then on");
}
