//! `fleetgate channel` as CI runs it: exit codes (0 done, 1 promotion failed, 2 bad
//! input or configuration) and `--json` output, with real Nix, a real cache and real git.
#![allow(clippy::unwrap_used)]
mod common;

use std::process::ExitCode;

use clap::Parser as _;
use common::Env;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    channel: fleetgate_channel::cli::ChannelArgs,
}

/// Runs the CLI in-process; returns the exit code and what it printed on stdout.
fn run(args: &[&str]) -> (ExitCode, String) {
    let cli = Cli::try_parse_from(std::iter::once("fleetgate-channel").chain(args.iter().copied())).unwrap();
    let mut out = Vec::new();
    let code = fleetgate_channel::cli::run_with_output(cli.channel, &mut out);
    (code, String::from_utf8(out).unwrap())
}

fn json(text: &str) -> serde_json::Value {
    assert_eq!(text.lines().count(), 1, "one JSON document per run: {text}");
    serde_json::from_str(text).unwrap()
}

#[test]
fn promote_exit_codes_and_json() {
    let env = Env::new();
    let c1 = env.commit("c1");
    let sys = env.system("cli", None);
    let base = |host: &str, commit: &str| -> Vec<String> {
        ["promote", "--json", "--host", host, "--commit", commit, "--system", &sys]
            .iter()
            .map(|s| (*s).to_owned())
            .chain(env.channel_args())
            .collect()
    };
    let call = |args: Vec<String>| run(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let (code, out) = call(base("web1", &c1));
    assert_eq!(code, ExitCode::SUCCESS, "{out}");
    let v = json(&out);
    assert_eq!(v["result"], "promoted");
    assert_eq!(v["host"], "web1");
    assert_eq!(v["commit"], c1.as_str());
    assert_eq!(v["movement"]["kind"], "created");
    assert_eq!(v["published"][0], env.manifest_file("web1").to_str().unwrap());
    assert_eq!(env.branch("web1").as_deref(), Some(c1.as_str()));

    let (code, out) = call(base("web1", &c1));
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(json(&out)["movement"]["kind"], "already_at");

    // Bad input: 2, nothing attempted.
    let refs = env.remote_refs();
    let (code, out) = call(base("web1/../x", &c1));
    assert_eq!(code, ExitCode::from(2));
    let v = json(&out);
    assert_eq!((v["result"].as_str(), v["exit_code"].as_u64()), (Some("failed"), Some(2)));
    assert!(v["error"].as_str().unwrap().contains("invalid host name"), "{v}");
    // Configuration error: 2.
    let mut no_cache = base("web1", &c1);
    let at = no_cache.iter().position(|a| a == "--cache").unwrap();
    no_cache.drain(at..at + 2);
    let (code, out) = call(no_cache);
    assert_eq!(code, ExitCode::from(2));
    assert!(json(&out)["error"].as_str().unwrap().contains("--cache is required"), "{out}");
    // A promotion that fails: 1.
    let (code, out) = call(base("web1", &"ab".repeat(20)));
    assert_eq!(code, ExitCode::FAILURE);
    let v = json(&out);
    assert_eq!(v["exit_code"], 1);
    assert!(v["error"].as_str().unwrap().contains("is not in"), "{v}");
    assert_eq!(env.remote_refs(), refs);

    // Without --json: one human line.
    let mut human = base("web1", &c1);
    human.retain(|a| a != "--json");
    let (code, out) = call(human);
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(out.trim(), format!("nixos-tested-web1: already at {c1}, unchanged"));
}

#[test]
fn a_relative_repository_path_is_taken_from_the_current_directory() {
    let env = Env::new();
    let c1 = env.commit("c1");
    let sys = env.system("relative", None);
    let cache = format!("file://{}", env.cache.display());
    let args = [
        "promote",
        "--json",
        "--host",
        "web1",
        "--commit",
        &c1,
        "--system",
        &sys,
        "--repo",
        "remote.git",
        "--cache",
        &cache,
        "--signing-key",
        "cache.sk",
        "--state-dir",
        "state",
        "--nix-option",
        "substituters=",
    ];
    let run = common::channel_bin(env.root(), &args, &[("HOME", env.root().to_str().unwrap())]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.json()["movement"]["kind"], "created");
    assert_eq!(env.branch("web1").as_deref(), Some(c1.as_str()));
}

#[test]
fn off_a_terminal_each_step_is_a_plain_line_and_stdout_holds_only_the_json() {
    let env = Env::new();
    let c1 = env.commit("c1");
    let sys = env.system("progress", None);
    let mut args: Vec<String> = ["promote", "--json", "--host", "web1", "--commit", &c1, "--system", &sys]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(env.channel_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = common::channel_bin(env.root(), &args, &[("HOME", env.root().to_str().unwrap())]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.json()["result"], "promoted");
    let times = regex::Regex::new(r"\[ *[0-9]+\.[0-9]s\]").unwrap();
    let took = regex::Regex::new(r"in [0-9]+\.[0-9] s").unwrap();
    let stderr = run.stderr.replace(&c1, "[C1]").replace(&sys, "[SYSTEM]");
    let stderr = took
        .replace_all(&times.replace_all(&stderr, "[T]"), "in [T] s")
        .replace(env.root().to_str().unwrap(), "[ROOT]");
    insta::assert_snapshot!(stderr);
}
