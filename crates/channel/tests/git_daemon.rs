//! Promotion to a repository served by `git daemon` on loopback, with a token file; the
//! token never shows up in any log line, error, state file or manifest.
#![allow(clippy::unwrap_used)]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{Env, KillOnDrop, free_port, wait_for_port};
use fleetgate_channel::secret::{Secret, SecretSource};
use fleetgate_channel::{ChannelConfig, PromoteRequest, promote};

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

/// `git daemon` on loopback serving the test world's repositories (pushes only with
/// `push`; its verbose log in `log`), and a configuration promoting through it with
/// [`TOKEN`].
fn daemon(env: &Env, push: bool, log: Option<&Path>) -> (KillOnDrop, ChannelConfig) {
    let port = free_port();
    let base = env.root().to_owned();
    let mut cmd = Command::new("git");
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["daemon", "--reuseaddr", "--export-all", "--verbose", "--listen=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()));
    if push {
        cmd.arg("--enable=receive-pack");
    }
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
        None => Stdio::null(),
    };
    let child = cmd.arg(&base).stdout(Stdio::null()).stderr(stderr).spawn().unwrap();
    let guard = KillOnDrop(child);
    wait_for_port(port);

    let token_file = env.root().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut cfg = env.config();
    cfg.repo = format!("git://127.0.0.1:{port}/remote.git");
    cfg.git.token = Some(Secret::load("git token", &SecretSource::File(token_file)).unwrap());
    (guard, cfg)
}

#[test]
fn promotion_over_git_daemon_with_a_token_that_never_leaks() {
    let env = Env::new();
    let c1 = env.commit("c1");
    let sys = env.system("daemon", None);
    let (_daemon, cfg) = daemon(&env, true, None);
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

#[test]
fn a_remote_refusing_the_push_fails_at_once_with_a_git_error() {
    let env = Env::new();
    let c1 = env.commit("c1");
    let sys = env.system("daemon-ro", None);
    // Fetching is allowed, pushing is not (receive-pack is off): like a token without
    // write access.
    let daemon_log = env.root().join("daemon.log");
    let (daemon, mut cfg) = daemon(&env, false, Some(&daemon_log));
    cfg.policy.max_attempts = 5;
    let refs = env.remote_refs();
    let log = env.log();
    let req = PromoteRequest::parse("edge1", &c1, &sys, None, false).unwrap();
    let e = promote(&env.nix, &cfg, &req, &log).unwrap_err();
    assert!(matches!(e, fleetgate_channel::ChannelError::Git(_)), "{e:?}");
    let text = e.chain();
    assert!(text.contains("git push"), "{text}");
    assert!(text.contains("access denied"), "{text}");
    assert_eq!(env.remote_refs(), refs);
    assert!(!env.all_logs().contains("push attempt"), "{}", env.all_logs());
    drop(daemon);
    let daemon_said = std::fs::read_to_string(&daemon_log).unwrap();
    assert_eq!(daemon_said.matches("'receive-pack': service not enabled").count(), 1, "{daemon_said}");
    let shown = format!("{} {e:?} {text}", env.all_logs());
    assert!(!shown.contains(TOKEN), "token leaked: {shown}");
    assert!(!shown.contains("ZmxlZXRnYXRl"), "base64 of the token leaked");
}
