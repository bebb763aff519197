//! Benchmarks for `bench/channel/run` (loopback only, bounded loops):
//!
//! - `latency`: event → branch + manifest. Real Nix, real git, a file:// cache: the time
//!   of `promote()` for successive commits of one host, against the seed's shell hook
//!   (`nix copy` + `git fetch` + `merge-base` + `git push`) on the same machine.
//! - `poll`: 10,000 simulated agents polling their manifest: `serve` (with and without
//!   `If-None-Match`) against `python3 -m http.server` serving the same documents as
//!   static files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetgate_channel::secret::Secret;
use fleetgate_channel::{ChannelConfig, HostName, Manifest, PromoteRequest, SignedManifest, promote};
use fleetgate_nix::{Nix, SecretKey, StoreUri};

#[path = "support/static_peer.rs"]
mod static_peer;
use fleetgate_server::store::Store as _;
use fleetgate_server::tokens::HostTokens;
use fleetgate_server::{ServerConfig, start};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["-c", "user.name=b", "-c", "user.email=b@b"])
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn latency() {
    let n = arg("--promotions", 10);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let nix = Nix::detect()
        .unwrap()
        .offline()
        .with_option("sandbox", "false")
        .with_env("HOME", root)
        .with_env("XDG_CACHE_HOME", root.join(".cache"));
    let (sk, pk) = (root.join("sk"), root.join("pk"));
    nix.generate_key_pair("bench-1", &sk, &pk).unwrap();
    for r in ["ours.git", "peer.git"] {
        std::fs::create_dir_all(root.join(r)).unwrap();
        git(&root.join(r), &["init", "--bare", "--quiet", "--initial-branch=main"]);
    }
    git(root, &["init", "--quiet", "--initial-branch=main", "work"]);
    let work = root.join("work");
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    let cfg = ChannelConfig::new(
        root.join("ours.git").to_str().unwrap(),
        StoreUri::parse(&format!("file://{}/cache-ours", root.display())).unwrap(),
        &sk,
        &root.join("state"),
    )
    .unwrap();
    let peer_mirror = root.join("peer-mirror.git");
    git(root, &["clone", "--quiet", "--bare", root.join("peer.git").to_str().unwrap(), "peer-mirror.git"]);
    for i in 0..n {
        std::fs::write(work.join("f"), format!("{i}\n")).unwrap();
        git(&work, &["add", "f"]);
        git(&work, &["commit", "--quiet", "-m", &format!("c{i}")]);
        let c = git(&work, &["rev-parse", "HEAD"]);
        for r in ["ours.git", "peer.git"] {
            git(&work, &["push", "--quiet", root.join(r).to_str().unwrap(), "HEAD:refs/heads/main"]);
        }
        let sys = nix
            .legacy("nix-build")
            .args(["--no-out-link", "-E"])
            .arg(format!(
                r#"derivation {{ name = "bench-sys-{i}-{}"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo {i} > $out" ]; }}"#,
                std::process::id()
            ))
            .run()
            .unwrap()
            .stdout_text();
        let req = PromoteRequest::parse("web1", &c, &sys, None, false).unwrap();
        let t = Instant::now();
        promote(&nix, &cfg, &req, &|_: &str| {}).unwrap();
        ours.push(t.elapsed().as_secs_f64() * 1000.0);

        // The seed's hook, same steps and the same real tools (no signature check, no manifest).
        let script = format!(
            "set -e\nnix --extra-experimental-features nix-command --option substituters '' copy --to 'file://{root}/cache-peer?secret-key={sk}' {sys}\n\
             cd {mirror}\ngit fetch --quiet --all\n\
             if git merge-base --is-ancestor {c} nixos-tested-web1 2>/dev/null; then exit 0; fi\n\
             git push --quiet origin {c}:refs/heads/nixos-tested-web1\n",
            root = root.display(),
            sk = sk.display(),
            mirror = peer_mirror.display()
        );
        let t = Instant::now();
        let st = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("HOME", root)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        peer.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ours.sort_by(f64::total_cmp);
    peer.sort_by(f64::total_cmp);
    println!(
        "latency promotions={n} fleetgate_p50_ms={:.1} fleetgate_max_ms={:.1} shell_hook_p50_ms={:.1} shell_hook_max_ms={:.1} ratio_p50={:.2}",
        pct(&ours, 0.5),
        pct(&ours, 1.0),
        pct(&peer, 0.5),
        pct(&peer, 1.0),
        pct(&ours, 0.5) / pct(&peer, 0.5)
    );
}

struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    not_modified: usize,
    total: usize,
}

fn load(base: &str, agents: usize, hosts: usize, rounds: usize, threads: usize, conditional: bool) -> Load {
    let base = Arc::new(base.to_owned());
    let start = Instant::now();
    let per = agents.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let base = base.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .into();
                let ids: Vec<usize> = (t * per..((t + 1) * per).min(agents)).collect();
                let mut etags: Vec<Option<String>> = vec![None; ids.len()];
                let mut lat = Vec::with_capacity(ids.len() * rounds);
                let mut nm = 0;
                for _ in 0..rounds {
                    for (k, id) in ids.iter().enumerate() {
                        let url = format!("{base}/v1/hosts/host-{}/manifest", id % hosts);
                        let mut r = agent.get(&url);
                        if conditional && let Some(e) = &etags[k] {
                            r = r.header("If-None-Match", e);
                        }
                        let t0 = Instant::now();
                        let mut resp = r.call().expect("request");
                        let _ = resp.body_mut().read_to_vec();
                        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                        match resp.status().as_u16() {
                            200 => etags[k] = resp.headers().get("etag").map(|v| v.to_str().unwrap_or("").to_owned()),
                            304 => nm += 1,
                            s => panic!("status {s} for {url}"),
                        }
                    }
                }
                (lat, nm)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut nm = 0;
    for h in handles {
        let (l, n) = h.join().unwrap();
        all.extend(l);
        nm += n;
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Load {
        rps: all.len() as f64 / secs,
        p50_ms: pct(&all, 0.5),
        p99_ms: pct(&all, 0.99),
        not_modified: nm,
        total: all.len(),
    }
}

fn poll() {
    let agents = arg("--agents", 10_000);
    let hosts = arg("--hosts", 10_000).min(agents);
    let rounds = arg("--rounds", 3);
    let threads = arg("--threads", 32);
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::from_seed("bench-1", &[7; 32]).unwrap();
    let static_dir = tmp.path().join("static");
    let db = tmp.path().join("serve.sqlite");
    {
        let server_db = fleetgate_server::store::sqlite::SqliteStore::open(&db).unwrap();
        for h in 0..hosts {
            let host = HostName::parse(&format!("host-{h}")).unwrap();
            let m = Manifest {
                host: host.to_string(),
                branch: host.branch(),
                commit: format!("{h:040x}"),
                system: "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-nixos-system".into(),
                nar_hash: "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=".into(),
                nar_size: 120,
                closure_size: 1_234_567_890,
                closure_paths: 1234,
                cache: "https://cache.example".into(),
                created_at: 1_700_000_000,
                build: Some(format!("https://hydra.example/build/{h}")),
            };
            let doc = SignedManifest::sign(&m, &key).unwrap().to_document();
            server_db.put_manifest(host.as_str(), &doc, &m.commit, &m.system, 1_700_000_000, 0).unwrap();
            let dir = static_dir.join(format!("v1/hosts/{host}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("manifest"), &doc).unwrap();
        }
    }
    let server = start(
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: db.into(),
            read_tokens: Default::default(),
            thresholds: Default::default(),
            hook_secret: Some(Secret::new("unused-secret-0123456789")),
            host_tokens: HostTokens::default(),
            channel: None,
            max_promotions: 1,
            limits: Default::default(),
        },
        Arc::new(|_: &str| {}),
    )
    .unwrap();
    let ours = format!("http://{}", server.addr());
    let (mut py, port) = static_peer::start(&static_dir);
    let peer = format!("http://127.0.0.1:{port}");
    let report = |name: &str, l: &Load| {
        println!(
            "poll {name} agents={agents} hosts={hosts} rounds={rounds} threads={threads} requests={} rps={:.0} p50_ms={:.3} p99_ms={:.3} not_modified={}",
            l.total, l.rps, l.p50_ms, l.p99_ms, l.not_modified
        );
    };
    let a = load(&ours, agents, hosts, rounds, threads, true);
    report("fleetgate-serve-etag", &a);
    let b = load(&ours, agents, hosts, rounds, threads, false);
    report("fleetgate-serve-plain", &b);
    let c = load(&peer, agents, hosts, rounds, threads, false);
    report("python3-http.server", &c);
    println!(
        "poll ratios rps_etag_vs_python={:.2} rps_plain_vs_python={:.2} p99_etag_vs_python={:.2}",
        a.rps / c.rps,
        b.rps / c.rps,
        a.p99_ms / c.p99_ms
    );
    let _ = py.kill();
    let _ = py.wait();
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("latency") => latency(),
        Some("poll") => poll(),
        _ => eprintln!(
            "usage: channel_bench latency [--promotions N] | poll [--agents N] [--hosts N] [--rounds N] [--threads N]"
        ),
    }
}
