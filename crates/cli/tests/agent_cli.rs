//! `fleetgate agent` through the real binary, without a lab: configuration
//! errors (exit 2, one JSON document with `--json`), `suspend`/`resume` and
//! `status`, and a dry run that refuses a manifest signed by a stranger.

use std::path::Path;
use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetgate")).arg("agent").args(args).output().expect("fleetgate runs")
}

fn json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("one JSON document ({e}): {text}\n{}", String::from_utf8_lossy(&out.stderr)))
}

const KEY: &str = "cache.test-1:fjYcuZjQVdZgKGeDy4UPE6TZkOtzYO0yGbMmrsf7aMc=";

fn base(dir: &Path, manifest: &str) -> Vec<String> {
    [
        "--host",
        "web1",
        "--manifest",
        manifest,
        "--trusted-key",
        KEY,
        "--cache",
        "http://127.0.0.1:9",
        "--state-dir",
        dir.to_str().expect("utf8"),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[test]
fn a_bad_configuration_is_exit_2_with_one_json_document() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = tmp.path().join("agent.toml");
    std::fs::write(&cfg, "host = \"web1\"\nserver = \"https://fleet.example.org\"\ncaches = [\"https://c\"]\n")
        .expect("write");
    let out = agent(&["--once", "--json", "--config", cfg.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2));
    let doc = json(&out);
    assert_eq!(doc["exit_code"], 2);
    assert!(doc["error"].as_str().is_some_and(|e| e.contains("trusted_keys")), "{doc}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("docs/agent.md"), "says what to do next");
    std::fs::write(&cfg, "nonsense = true\n").expect("write");
    let out = agent(&["--once", "--config", cfg.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonsense"), "{out:?}");
}

#[test]
fn suspend_status_and_resume() {
    let tmp = tempfile::tempdir().expect("tmp");
    let args = base(tmp.path(), "file:///nonexistent/m.json");
    let with =
        |cmd: &[&str]| -> Vec<String> { cmd.iter().map(|s| (*s).to_owned()).chain(args.iter().cloned()).collect() };
    let run =
        |a: Vec<String>| Command::new(env!("CARGO_BIN_EXE_fleetgate")).arg("agent").args(a).output().expect("runs");
    let out = run(with(&["suspend", "--reason", "disk swap tonight"]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let status = json(&run(with(&["status", "--json"])));
    assert_eq!(status["suspended"], "disk swap tonight", "{status:#}");
    assert_eq!(status["host"], "web1");
    let human = run(with(&["status"]));
    assert!(String::from_utf8_lossy(&human.stdout).contains("SUSPENDED: disk swap tonight"), "{human:?}");
    assert_eq!(run(with(&["resume"])).status.code(), Some(0));
    let status = json(&run(with(&["status", "--json"])));
    assert!(status["suspended"].is_null(), "{status:#}");
}

#[test]
fn a_dry_run_refuses_a_manifest_signed_by_a_stranger_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let stranger = stranger_manifest();
    let manifest = tmp.path().join("web1.json");
    std::fs::write(&manifest, stranger).expect("write");
    let mut args = vec!["--once".to_owned(), "--dry-run".to_owned(), "--json".to_owned()];
    args.extend(base(&tmp.path().join("state"), &format!("file://{}", manifest.display())));
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate")).arg("agent").args(&args).output().expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let doc = json(&out);
    assert_eq!(doc["result"], "failed", "{doc:#}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused a manifest"), "{out:?}");
    assert!(!tmp.path().join("state/agent/state.json").exists(), "a dry run saves nothing");
}

/// A manifest for web1 signed by a key the agent does not trust (from the
/// channel crate's own signing code).
fn stranger_manifest() -> String {
    let doc = serde_json::json!({
        "format": "fleetgate-manifest-v1",
        "manifest": "{\"host\":\"web1\",\"branch\":\"nixos-tested-web1\",\"commit\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"system\":\"/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-nixos-system-web1\",\"nar_hash\":\"sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=\",\"nar_size\":1,\"closure_size\":1,\"closure_paths\":1,\"cache\":\"file:///c\",\"created_at\":1700000000,\"build\":null}",
        "signatures": ["stranger-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="]
    });
    doc.to_string()
}
