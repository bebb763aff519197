//! Benchmark for `bench/status/run` (loopback only, bounded loops): a fleet of 10,000
//! hosts, with SQLite and with PostgreSQL, same load, same run.
//!
//! 1. **Ingestion**: 10,000 agents (one host token each) POST version-2 reports,
//!    `--rounds` each, from `--threads` client threads with keep-alive: requests/s and
//!    latency, then the rows kept (bounded by the retention).
//! 2. **Reading**: `GET /v1/status` (the fleet page's data: the summary over 10,000 hosts
//!    and the first page of 200, most urgent first), `GET /v1/status?state=blocked`,
//!    `GET /v1/status/<host>`, and `GET /` (the fleet page itself), `--requests` each
//!    from `--threads` threads — p50/p99. Peer, same run: `python3 -m http.server` serving
//!    the very bytes of the `/v1/status` answer as a static file. `/v1/status` is read
//!    twice: on a quiet fleet, and while another round of reports arrives. For reference, a few
//!    requests of version 1's `GET /v1/hosts` (one query per host) are timed too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetgate_channel::secret::Secret;
use fleetgate_server::tokens::HostTokens;
use fleetgate_server::{ReadTokens, ServerConfig, StoreConfig, start};
use serde_json::json;

#[path = "../../channel/tests/common/postgres.rs"]
mod cluster;
#[path = "support/static_peer.rs"]
mod static_peer;

const READ: &str = "bench-read-token-0123456789";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn arg_str(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn token(h: usize) -> String {
    format!("host-{h}-report-token-0123456789")
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn store_path(h: usize, round: usize) -> String {
    // 32 characters of Nix's base-32 alphabet, different per host and round.
    let alphabet = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut n = (h * 7919 + round * 104_729) as u64;
    let hash: String = (0..32)
        .map(|_| {
            let c = alphabet[(n % 32) as usize] as char;
            n = n / 32 + 7;
            c
        })
        .collect();
    format!("/nix/store/{hash}-nixos-system-host-{h}")
}

/// An agent's report: every 50th host blocked with a finding, every 7th with a pending
/// reboot, every 5th with boot debt.
fn report(h: usize, round: usize) -> String {
    let sys = store_path(h, round);
    let old = store_path(h, round + 1000);
    let blocked = h % 50 == 0;
    let current = if blocked { &old } else { &sys };
    json!({
        "v": 2, "agent_version": "0.1.0", "time": now(),
        "desired": {"commit": format!("{:040x}", h + round), "system": sys, "since": now() - 60},
        "current": current, "booted": if h % 5 == 0 { &old } else { current },
        "default": {"entry": format!("nixos-generation-{}.conf", round + 2), "generation": round + 2, "system": current},
        "boot_debt": if h % 5 == 0 { json!([{"generation": round + 2, "system": current, "made_default_at": null}]) } else { json!([]) },
        "pending_reboot": if h % 7 == 0 { json!({"reasons": ["kernel"], "detail": null}) } else { json!(null) },
        "result": {"outcome": if blocked { "blocked" } else { "applied" }, "at": now(), "system": sys,
                   "message": "bench", "findings": if blocked { json!([{"id": "initrd.missing-modules", "severity": "error",
                   "message": "the initrd lacks virtio_blk", "evidence": ["/dev/vda2"], "fix": "add virtio_blk"}]) } else { json!([]) }},
        "generations": [{"number": round + 1, "system": old, "booted": true, "default": true, "failed": false, "created_at": null},
                        {"number": round + 2, "system": current, "booted": h % 5 != 0, "default": true, "failed": false, "created_at": null}]
    })
    .to_string()
}

struct Load {
    rps: f64,
    p50: f64,
    p99: f64,
    total: usize,
    errors: usize,
}

/// Runs `n` requests (`request(i)` → status) on `threads` threads; latencies in ms.
fn load(n: usize, threads: usize, request: impl Fn(&ureq::Agent, usize) -> u16 + Sync) -> Load {
    let start = Instant::now();
    let request = &request;
    let results: Vec<(Vec<f64>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(120)))
                        .build()
                        .into();
                    let (mut lat, mut errors) = (Vec::new(), 0);
                    for i in (t..n).step_by(threads) {
                        let t0 = Instant::now();
                        let code = request(&agent, i);
                        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                        if !(200..400).contains(&code) {
                            errors += 1;
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut all: Vec<f64> = results.iter().flat_map(|(l, _)| l.iter().copied()).collect();
    all.sort_by(f64::total_cmp);
    Load {
        rps: all.len() as f64 / secs,
        p50: pct(&all, 0.5),
        p99: pct(&all, 0.99),
        total: all.len(),
        errors: results.iter().map(|(_, e)| e).sum(),
    }
}

fn get(agent: &ureq::Agent, url: &str, auth: bool) -> u16 {
    let mut r = agent.get(url);
    if auth {
        r = r.header("Authorization", &format!("Bearer {READ}"));
    }
    match r.call() {
        Ok(mut resp) => {
            let _ = resp.body_mut().with_config().limit(64 << 20).read_to_vec();
            resp.status().as_u16()
        }
        Err(_) => 0,
    }
}

fn print(backend: &str, what: &str, l: &Load) {
    println!(
        "{backend} {what} requests={} errors={} rps={:.0} p50_ms={:.2} p99_ms={:.2}",
        l.total, l.errors, l.rps, l.p50, l.p99
    );
}

fn bench(backend: &str, store: StoreConfig, hosts: usize, rounds: usize, threads: usize, requests: usize) {
    let tokens: String = (0..hosts).map(|h| format!("host-{h} {}\n", token(h))).collect();
    let config = ServerConfig::new(
        store.clone(),
        HostTokens::parse(&Secret::new(&tokens)).unwrap(),
        ReadTokens::parse(&Secret::new(&format!("bench {READ}\n"))).unwrap(),
    );
    let server = start(config, Arc::new(|_: &str| {})).unwrap();
    let base = format!("http://{}", server.addr());

    let ingest = load(hosts * rounds, threads, |agent, i| {
        let (h, round) = (i % hosts, i / hosts);
        match agent
            .post(&format!("{base}/v1/hosts/host-{h}/report"))
            .header("Authorization", &format!("Bearer {}", token(h)))
            .send(&report(h, round))
        {
            Ok(resp) => resp.status().as_u16(),
            Err(_) => 0,
        }
    });
    print(backend, &format!("ingest agents={hosts} rounds={rounds} threads={threads}"), &ingest);

    let status_url = format!("{base}/v1/status");
    let fleet = load(requests, threads, |a, _| get(a, &status_url, true));
    print(backend, "GET /v1/status (summary of 10k + first page of 200)", &fleet);
    // The same while agents keep reporting (another round from half the threads): the
    // fleet changes between most reads, so answers are rendered afresh.
    let (fleet_busy, ingest_busy) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            load(hosts, (threads / 2).max(1), |agent, h| {
                match agent
                    .post(&format!("{base}/v1/hosts/host-{h}/report"))
                    .header("Authorization", &format!("Bearer {}", token(h)))
                    .send(&report(h, rounds))
                {
                    Ok(resp) => resp.status().as_u16(),
                    Err(_) => 0,
                }
            })
        });
        let reads = load(requests, (threads / 2).max(1), |a, _| get(a, &status_url, true));
        (reads, writer.join().unwrap())
    });
    print(backend, "GET /v1/status while agents report", &fleet_busy);
    print(backend, "ingest while the status is read", &ingest_busy);
    let blocked_url = format!("{base}/v1/status?state=blocked");
    let blocked = load(requests, threads, |a, _| get(a, &blocked_url, true));
    print(backend, "GET /v1/status?state=blocked", &blocked);
    let host = load(requests, threads, |a, i| get(a, &format!("{base}/v1/status/host-{}", (i * 37) % hosts), true));
    print(backend, "GET /v1/status/<host>", &host);
    let page_url = format!("{base}/");
    let page = load(requests, threads, |a, _| get(a, &page_url, true));
    print(backend, "GET / (fleet page)", &page);
    let v1_url = format!("{base}/v1/hosts");
    let v1 = load(threads.min(4) * 2, threads.min(4), |a, _| get(a, &v1_url, true));
    print(backend, "GET /v1/hosts (version 1, reference)", &v1);

    // Peer: the same bytes as a static file.
    let tmp = tempfile::tempdir().unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let body = agent
        .get(&status_url)
        .header("Authorization", &format!("Bearer {READ}"))
        .call()
        .unwrap()
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    std::fs::write(tmp.path().join("status.json"), &body).unwrap();
    let (mut py, port) = static_peer::start(tmp.path());
    let peer_url = format!("http://127.0.0.1:{port}/status.json");
    let peer = load(requests, threads, |a, _| get(a, &peer_url, false));
    print(backend, &format!("peer python3 http.server, the same {} bytes", body.len()), &peer);
    println!(
        "{backend} ratios p99_status_vs_peer={:.2} rps_status_vs_peer={:.2}",
        fleet.p99 / peer.p99,
        fleet.rps / peer.rps
    );
    let _ = py.kill();
    let _ = py.wait();
    drop(server);
    let kept = match &store {
        StoreConfig::Sqlite(path) => {
            use fleetgate_server::store::Store as _;
            let db = fleetgate_server::store::sqlite::SqliteStore::open(path).unwrap();
            (db.report_count("host-1").unwrap(), db.hosts_since(0).unwrap().len())
        }
        StoreConfig::Postgres(conninfo) => {
            use fleetgate_server::store::Store as _;
            let db = fleetgate_server::store::postgres::PostgresStore::open(conninfo, Default::default()).unwrap();
            (db.report_count("host-1").unwrap(), db.hosts_since(0).unwrap().len())
        }
    };
    println!("{backend} kept reports_per_host={} host_rows={}", kept.0, kept.1);
}

fn main() {
    let hosts = arg("--hosts", 10_000);
    let rounds = arg("--rounds", 2);
    let threads = arg("--threads", 16);
    let requests = arg("--requests", 2_000);
    let backend = arg_str("--backend", "all");
    if backend == "all" || backend == "sqlite" {
        let tmp = tempfile::tempdir().unwrap();
        bench("sqlite", StoreConfig::Sqlite(tmp.path().join("serve.sqlite")), hosts, rounds, threads, requests);
    }
    if backend == "all" || backend == "postgres" {
        let pg = cluster::Postgres::start("fleetgate", "bench-password-0123456789");
        pg.psql("postgres", &["--command", "CREATE DATABASE fleetgate"]);
        let conninfo = pg.keyword_value("fleetgate", Some("bench-password-0123456789"));
        bench("postgres", StoreConfig::Postgres(conninfo), hosts, rounds, threads, requests);
    }
}
