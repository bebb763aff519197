//! `serve` on SIGTERM/SIGINT while a promotion runs: a running promotion may finish
//! (within `--shutdown-timeout`), queued ones are dropped, and the process always ends.
//! The test holds the repository's lock, as a long promotion would, so that the job is
//! "running" for as long as the test wants.
#![allow(clippy::unwrap_used)]
mod common;

use std::time::{Duration, Instant};

use common::{Env, ServeProcess};
use fleetgate_channel::git::Mirror;
use fleetgate_channel::lock::RepoLock;
use fleetgate_server::github;
use rustix::process::Signal;

const SECRET: &str = "shutdown-test-hook-secret-0123456789";

struct World {
    env: Env,
    commit: String,
    system: String,
    agent: ureq::Agent,
}

impl World {
    fn new() -> Self {
        let env = Env::new();
        let commit = env.commit("c1");
        let system = env.system("shutdown", None);
        std::fs::write(env.root().join("secret"), SECRET).unwrap();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self { env, commit, system, agent }
    }

    /// The repository's lock, held.
    fn hold_lock(&self) -> RepoLock {
        let cfg = self.env.config();
        let mirror = Mirror::new(&cfg.state_dir, &cfg.repo, cfg.git.clone()).unwrap();
        RepoLock::acquire(mirror.lock_path(), Duration::from_secs(5)).unwrap()
    }

    fn serve(&self, extra: &[&str]) -> ServeProcess {
        let mut args: Vec<String> = ["--db", "serve.sqlite", "--hook-secret-file", "secret", "--max-promotions", "1"]
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect();
        args.extend(self.env.channel_args());
        ServeProcess::start(self.env.root(), &args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap()
    }

    /// A service whose promotion of web1 is running (held up by the repository lock the
    /// test holds), with `extra` options.
    fn running_promotion(&self, extra: &[&str]) -> (RepoLock, ServeProcess) {
        let held = self.hold_lock();
        let server = self.serve(extra);
        let id = self.hook(&server, "web1");
        self.wait_job(&server, &id, "running");
        (held, server)
    }

    /// Asks for a promotion of `host`; returns the job id.
    fn hook(&self, server: &ServeProcess, host: &str) -> String {
        let body = serde_json::json!({ "host": host, "commit": self.commit, "system": self.system }).to_string();
        let mut resp = self
            .agent
            .post(&format!("http://{}/hooks/github", server.addr))
            .header("X-Hub-Signature-256", &github::sign(SECRET.as_bytes(), body.as_bytes()))
            .send(&body)
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let v: serde_json::Value = resp.body_mut().read_json().unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    /// Waits (bounded) until job `id` is in `state`.
    fn wait_job(&self, server: &ServeProcess, id: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut resp = self.agent.get(&format!("http://{}/v1/jobs/{id}", server.addr)).call().unwrap();
            let v: serde_json::Value = resp.body_mut().read_json().unwrap();
            if v["state"] == state {
                return;
            }
            assert!(Instant::now() < deadline, "job {id} never got {state}: {v}");
            std::thread::sleep(Duration::from_millis(20)); // pace the polling
        }
    }
}

#[test]
fn a_running_promotion_finishes_after_sigterm_and_queued_ones_are_dropped() {
    let w = World::new();
    let (held, mut server) = w.running_promotion(&[]);
    let queued = w.hook(&server, "web2");
    w.wait_job(&server, &queued, "queued");

    server.signal(Signal::TERM);
    let waiting = server.wait_line(Duration::from_secs(60), |l| l.contains("running promotion(s) to finish"));
    assert_eq!(
        waiting.as_deref(),
        Some("fleetgate channel: waiting up to 1m 20s for 1 running promotion(s) to finish"),
        "{}",
        server.log()
    );
    assert!(server.log().contains(&format!("job {queued}: dropped, the service is shutting down")), "{}", server.log());
    assert!(std::net::TcpStream::connect(server.addr).is_err(), "no new connections during shutdown");
    assert_eq!(server.wait_exit(Duration::ZERO), None, "it waits for the promotion");

    drop(held);
    let status = server.wait_exit(Duration::from_secs(120)).expect("exits once the promotion finished");
    assert!(status.success(), "{status}: {}", server.log());
    assert!(server.log().contains("every running promotion finished"), "{}", server.log());
    assert_eq!(w.env.branch("web1").as_deref(), Some(w.commit.as_str()));
    assert_eq!(w.env.branch("web2"), None);
}

#[test]
fn a_promotion_past_the_shutdown_timeout_does_not_keep_the_process_alive() {
    let w = World::new();
    let (_held, mut server) = w.running_promotion(&["--shutdown-timeout", "1"]);
    server.signal(Signal::TERM);
    let status = server.wait_exit(Duration::from_secs(60)).expect("exits after the deadline");
    assert_eq!(status.code(), Some(1), "{}", server.log());
    let log = server.log();
    assert!(
        log.contains("1 promotion(s) still running when the service stopped: --shutdown-timeout (1s) passed"),
        "{log}"
    );
    assert!(log.find("SIGTERM: shutting down") < log.find("waiting up to 1s"), "{log}");
    assert_eq!(w.env.branch("web1"), None);
}

#[test]
fn a_second_signal_stops_waiting_for_running_promotions() {
    let w = World::new();
    let (_held, mut server) = w.running_promotion(&["--shutdown-timeout", "600"]);
    server.signal(Signal::TERM);
    assert!(server.wait_line(Duration::from_secs(60), |l| l.contains("to finish")).is_some(), "{}", server.log());
    server.signal(Signal::INT);
    let status = server.wait_exit(Duration::from_secs(60)).expect("a second signal ends it");
    assert_eq!(status.code(), Some(1), "{}", server.log());
    let log = server.log();
    assert!(log.contains("SIGINT again: not waiting for running promotions"), "{log}");
    assert!(log.contains("1 promotion(s) still running when the service stopped: a second signal came"), "{log}");
}
