//! Promotion to a repository served by `git daemon` on loopback, with a token file; the
//! token never shows up in any log line, error, state file or manifest.
#![allow(clippy::unwrap_used)]
mod common;

use std::process::{Command, Stdio};

use common::{Env, KillOnDrop, free_port, wait_for_port};
use fleetgate_channel::secret::{Secret, SecretSource};
use fleetgate_channel::{PromoteRequest, promote};

const TOKEN: &str = "ghp_fleetgateTESTtoken0123456789abcdef";

fn grep_tree(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p);
                }
            }
        }
    }
    hits
}

#[test]
fn promotion_over_git_daemon_with_a_token_that_never_leaks() {
    let env = Env::new();
    let c1 = env.commit("c1");
    let sys = env.system("daemon", None);
    let port = free_port();
    let base = env.root().to_owned();
    let daemon = Command::new("git")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--enable=receive-pack",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", base.display()),
        ])
        .arg(&base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = KillOnDrop(daemon);
    wait_for_port(port);

    let token_file = env.root().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut cfg = env.config();
    cfg.repo = format!("git://127.0.0.1:{port}/remote.git");
    cfg.git.token = Some(Secret::load("git token", &SecretSource::File(token_file)).unwrap());
    let log = env.log();
    let req = PromoteRequest::parse("edge1", &c1, &sys, None, false).unwrap();
    let out = promote(&env.nix, &cfg, &req, &log).unwrap();
    assert_eq!(env.branch("edge1").as_deref(), Some(c1.as_str()));

    // A failing promotion's error must not carry it either.
    let mut bad = cfg.clone();
    bad.repo = format!("git://127.0.0.1:{}/absent.git", free_port());
    let e = promote(&env.nix, &bad, &req, &log).unwrap_err();
    assert!(matches!(e, fleetgate_channel::ChannelError::Git(_)), "{e:?}");

    let shown = format!("{} {out:?} {e} {e:?} {cfg:?}", env.all_logs());
    assert!(!shown.contains(TOKEN), "token leaked: {shown}");
    assert!(!shown.contains("ZmxlZXRnYXRl"), "base64 of the token leaked");
    assert!(env.all_logs().contains("edge1"), "the log is not empty");
    let state = env.root().join("state");
    assert!(grep_tree(&state, TOKEN.as_bytes()).is_empty());
    assert!(grep_tree(&env.cache, TOKEN.as_bytes()).is_empty());
    assert!(grep_tree(&env.remote, TOKEN.as_bytes()).is_empty());
}

/// The full error text, sources included.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[test]
fn a_remote_refusing_the_push_fails_at_once_with_a_git_error() {
    let env = Env::new();
    let c1 = env.commit("c1");
    let sys = env.system("daemon-ro", None);
    let port = free_port();
    let base = env.root().to_owned();
    let daemon_log = env.root().join("daemon.log");
    // Fetching is allowed, pushing is not (receive-pack is off): like a token without
    // write access.
    let daemon = Command::new("git")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--verbose",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", base.display()),
        ])
        .arg(&base)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&daemon_log).unwrap())
        .spawn()
        .unwrap();
    let _daemon = KillOnDrop(daemon);
    wait_for_port(port);

    let token_file = env.root().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut cfg = env.config();
    cfg.repo = format!("git://127.0.0.1:{port}/remote.git");
    cfg.git.token = Some(Secret::load("git token", &SecretSource::File(token_file)).unwrap());
    cfg.policy.max_attempts = 5;
    let refs = env.remote_refs();
    let log = env.log();
    let req = PromoteRequest::parse("edge1", &c1, &sys, None, false).unwrap();
    let e = promote(&env.nix, &cfg, &req, &log).unwrap_err();
    assert!(matches!(e, fleetgate_channel::ChannelError::Git(_)), "{e:?}");
    let text = chain(&e);
    assert!(text.contains("git push"), "{text}");
    assert!(text.contains("access denied"), "{text}");
    assert_eq!(env.remote_refs(), refs);
    assert!(!env.all_logs().contains("push attempt"), "{}", env.all_logs());
    drop(_daemon);
    let daemon_said = std::fs::read_to_string(&daemon_log).unwrap();
    assert_eq!(daemon_said.matches("'receive-pack': service not enabled").count(), 1, "{daemon_said}");
    let shown = format!("{} {e:?} {text}", env.all_logs());
    assert!(!shown.contains(TOKEN), "token leaked: {shown}");
    assert!(!shown.contains("ZmxlZXRnYXRl"), "base64 of the token leaked");
}
