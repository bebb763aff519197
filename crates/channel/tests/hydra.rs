//! The Hydra front end: fixtures with Hydra's exact payload (every field, every
//! buildStatus), decisions, commit resolution, and end-to-end promotion.
#![allow(clippy::unwrap_used)]
mod common;

use std::path::{Path, PathBuf};

use clap::Parser as _;
use common::Env;
use fleetgate_channel::ChannelError;
use fleetgate_channel::hydra::event::{BuildStatus, HydraEvent};
use fleetgate_channel::hydra::hook::{self, DEFAULT_JOB_PATTERN, Decision, HookConfig, HookOutcome};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn load(name: &str) -> HydraEvent {
    HydraEvent::read(&fixture(name)).unwrap()
}

#[test]
fn the_full_payload_parses_every_field() {
    let e = load("full.json");
    assert_eq!(e.event, "buildFinished");
    assert_eq!(e.build, 4711);
    assert!(e.finished);
    assert_eq!(e.timestamp, Some(1_717_171_717));
    assert_eq!((e.project.as_str(), e.jobset.as_str()), ("dotfiles", "main"));
    assert_eq!(e.job, "nixos-web1.x86_64-linux");
    assert!(e.drv_path.as_deref().unwrap().ends_with(".drv"));
    assert_eq!((e.start_time, e.stop_time), (Some(1_717_171_720), Some(1_717_171_999)));
    assert_eq!(e.status(), Some(BuildStatus::Succeeded));
    assert_eq!(e.nix_name.as_deref(), Some("nixos-system-web1-24.05"));
    assert_eq!(e.system.as_deref(), Some("x86_64-linux"));
    assert_eq!(e.homepage.as_deref(), Some("https://github.com/NixOS/hydra"));
    assert_eq!(e.description.as_deref(), Some("An example meta property."));
    assert_eq!(e.license.as_deref(), Some("GPL"));
    assert_eq!(e.outputs.len(), 2);
    assert_eq!(e.out_path(), Some(e.outputs[0].path.as_str()));
    assert_eq!(e.products.len(), 3);
    let p = &e.products[0];
    assert_eq!((p.product_nr, p.kind.as_str(), p.subtype.as_str()), (1, "nix-build", ""));
    assert_eq!((p.file_size, p.sha256hash.as_deref()), (None, None));
    assert_eq!(p.default_path.as_deref(), Some(""));
    let iso = &e.products[2];
    assert_eq!((iso.kind.as_str(), iso.file_size), ("file", Some(1_048_576)));
    assert_eq!(iso.sha256hash.as_ref().map(String::len), Some(64));
    assert_eq!(e.metrics.len(), 3);
    assert_eq!(
        (e.metrics[0].name.as_str(), e.metrics[0].unit.as_deref(), e.metrics[0].value),
        ("lineCoverage", Some("%"), 18.0)
    );
    assert_eq!(e.metrics[2].unit, None);
    assert_eq!(e.metrics[2].value, 1234.5);

    let n = load("null-meta.json");
    assert_eq!((n.homepage, n.description, n.license), (None, None, None));
}

#[test]
fn only_build_status_zero_is_promoted_every_other_status_is_skipped_with_a_reason() {
    let cfg = HookConfig::new(DEFAULT_JOB_PATTERN).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(fixture(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("status-"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 13, "codes 0 to 12");
    for (code, name) in files.iter().enumerate() {
        let e = load(name);
        assert_eq!(e.build_status, Some(code as i64), "{name}");
        let d = hook::decide(&e, &cfg).unwrap();
        if code == 0 {
            assert!(matches!(&d, Decision::Promote { host, .. } if host.as_str() == "web1"), "{d:?}");
        } else {
            let Decision::Skip(reason) = d else { panic!("{name} must be skipped") };
            let status = BuildStatus::from_code(code as i64);
            assert!(!matches!(status, BuildStatus::Unknown(_)));
            assert!(reason.contains(&status.describe()), "{reason}");
            assert!(reason.contains(&format!("buildStatus {code}")), "{reason}");
            assert!(!reason.contains('\n'), "one line");
        }
    }
    assert_eq!(BuildStatus::from_code(99), BuildStatus::Unknown(99));
}

#[test]
fn other_events_jobs_projects_and_unfinished_builds_are_skipped() {
    let mut cfg = HookConfig::new(DEFAULT_JOB_PATTERN).unwrap();
    let skip = |e: &HydraEvent, cfg: &HookConfig| match hook::decide(e, cfg).unwrap() {
        Decision::Skip(r) => r,
        d => panic!("expected a skip, got {d:?}"),
    };
    assert!(skip(&load("unfinished.json"), &cfg).contains("not finished"));
    assert!(skip(&load("other-job.json"), &cfg).contains("does not match"));
    let mut e = load("full.json");
    e.event = "buildStarted".into();
    assert!(skip(&e, &cfg).contains("not buildFinished"));
    cfg.project = Some("infra".into());
    assert!(skip(&load("full.json"), &cfg).contains("project"));
    cfg.project = None;
    cfg.jobset = Some("staging".into());
    assert!(skip(&load("full.json"), &cfg).contains("jobset"));
}

#[test]
fn injected_hosts_malformed_payloads_and_bad_patterns_are_errors() {
    let cfg = HookConfig::new(DEFAULT_JOB_PATTERN).unwrap();
    let e = hook::decide(&load("evil-host.json"), &cfg).unwrap_err();
    assert!(matches!(e, ChannelError::BadHost { .. }), "{e}");
    for bad in ["malformed.json", "wrong-types.json"] {
        let e = HydraEvent::read(&fixture(bad)).unwrap_err();
        assert!(e.to_string().contains("not a RunCommand payload"), "{bad}: {e}");
    }
    assert!(HydraEvent::read(&fixture("absent.json")).is_err());
    let e = HookConfig::new("^nixos-(.*)$").unwrap_err();
    assert!(e.to_string().contains("(?<host>"), "{e}");
    // Hydra's own regex dialect (from the original jq filter) works too.
    let c = HookConfig::new(r"^nixos-(?P<host>[^/]*)\.(.*)$").unwrap();
    assert!(matches!(hook::decide(&load("full.json"), &c).unwrap(), Decision::Promote { .. }));
}

fn event_for(system: &str) -> HydraEvent {
    let text = std::fs::read_to_string(fixture("full.json"))
        .unwrap()
        .replace("/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-nixos-system-web1-24.05", system);
    HydraEvent::parse(text.as_bytes()).unwrap()
}

#[test]
fn the_hook_promotes_with_the_commit_the_system_records() {
    let env = Env::new();
    let c1 = env.commit("c1");
    let sys = env.system("hydra-rev", Some(&c1));
    let cfg = HookConfig::new(DEFAULT_JOB_PATTERN).unwrap();
    let log = env.log();
    let out = hook::run(&env.nix, &env.config(), &cfg, &event_for(&sys), &log).unwrap();
    let HookOutcome::Promoted(o) = out else { panic!("not promoted") };
    assert_eq!(o.commit.as_str(), c1);
    assert_eq!(env.branch("web1").as_deref(), Some(c1.as_str()));
    let m = o.manifest.unwrap().unverified().unwrap();
    assert_eq!(m.build.as_deref(), Some("hydra:dotfiles:main:nixos-web1.x86_64-linux#4711"));
    assert!(env.all_logs().contains("configurationRevision"));
}

/// A stand-in for Hydra's REST API on loopback, serving what Hydra's `as_json` and
/// JobsetEvals' `json_hint` produce for a flake jobset.
struct FakeHydra {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeHydra {
    fn start(flake: String) -> Self {
        use axum::routing::get;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route(
                "/build/4711",
                get(|headers: axum::http::HeaderMap| async move {
                    assert_eq!(headers["accept"], "application/json");
                    axum::Json(serde_json::json!({
                        "id": 4711, "finished": 1, "buildstatus": 0, "job": "nixos-web1.x86_64-linux",
                        "project": "dotfiles", "jobset": "main", "jobsetevals": [10, 12],
                        "buildoutputs": {}, "buildproducts": {}, "buildmetrics": {}
                    }))
                }),
            )
            .route(
                "/eval/12",
                get(move || async move {
                    axum::Json(serde_json::json!({
                        "id": 12, "hasnewbuilds": 1, "flake": flake, "builds": [4711],
                        "jobsetevalinputs": {}
                    }))
                }),
            );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Self { addr, stop: Some(tx), thread: Some(thread) }
    }
}

impl Drop for FakeHydra {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.thread.take().unwrap().join();
    }
}

#[test]
fn without_a_recorded_revision_the_commit_comes_from_hydras_api() {
    let env = Env::new();
    let c1 = env.commit("c1");
    let sys = env.system("hydra-api", None);
    let hydra = FakeHydra::start(format!("git+file://{}?rev={c1}", env.remote.display()));
    let mut cfg = HookConfig::new(DEFAULT_JOB_PATTERN).unwrap();
    cfg.hydra_url = Some(format!("http://{}", hydra.addr));
    let log = env.log();
    let HookOutcome::Promoted(o) = hook::run(&env.nix, &env.config(), &cfg, &event_for(&sys), &log).unwrap() else {
        panic!("not promoted")
    };
    assert_eq!(o.commit.as_str(), c1);
    assert_eq!(env.branch("web1").as_deref(), Some(c1.as_str()));
    let m = o.manifest.unwrap().unverified().unwrap();
    assert_eq!(m.build, Some(format!("http://{}/build/4711", hydra.addr)));
}

#[test]
fn with_no_source_for_the_commit_nothing_changes() {
    let env = Env::new();
    let sys = env.system("hydra-none", None);
    let refs = env.remote_refs();
    let mut cfg = HookConfig::new(DEFAULT_JOB_PATTERN).unwrap();
    cfg.hydra_url = Some(format!("http://127.0.0.1:{}", common::free_port()));
    let e = hook::run(&env.nix, &env.config(), &cfg, &event_for(&sys), &env.log()).unwrap_err();
    assert!(matches!(e, ChannelError::HydraCommit { build: 4711, .. }), "{e}");
    assert!(e.to_string().contains("configurationRevision"), "{e}");
    assert_eq!(env.remote_refs(), refs);
    assert!(!env.cache.join("fleetgate").exists());
}

/// The `.narinfo` files of a `file://` cache (none if it does not exist).
fn narinfos(cache: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(cache) else { return Vec::new() };
    dir.map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.ends_with(".narinfo")).collect()
}

#[test]
fn a_commit_nobody_pushed_fails_before_anything_is_uploaded() {
    let env = Env::new();
    let ghost = "ab".repeat(20);
    let sys = env.system("hydra-ghost", Some(&ghost));
    let refs = env.remote_refs();
    let cfg = HookConfig::new(DEFAULT_JOB_PATTERN).unwrap();
    let e = hook::run(&env.nix, &env.config(), &cfg, &event_for(&sys), &env.log()).unwrap_err();
    assert!(matches!(&e, ChannelError::CommitNotFound { commit, .. } if *commit == ghost), "{e}");
    assert_eq!(narinfos(&env.cache), Vec::<String>::new(), "nothing uploaded");
    assert_eq!(env.remote_refs(), refs);
}

#[test]
fn an_output_in_neither_store_nor_cache_is_a_missing_system_not_a_missing_commit() {
    let env = Env::new();
    let absent = "/nix/store/0000000000000000000000000000000a-nixos-system-web1-24.05";
    let cfg = HookConfig::new(DEFAULT_JOB_PATTERN).unwrap();
    let e = hook::run(&env.nix, &env.config(), &cfg, &event_for(absent), &env.log()).unwrap_err();
    assert!(matches!(&e, ChannelError::SystemMissing { path, .. } if path == absent), "{e}");
    assert_eq!(e.exit_code(), 1);
    assert!(narinfos(&env.cache).is_empty());
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    channel: fleetgate_channel::cli::ChannelArgs,
}

#[test]
fn the_cli_exits_zero_for_skipped_events_and_two_for_malformed_ones() {
    let run = |args: &[&str]| {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap();
        let mut out = Vec::new();
        let code = fleetgate_channel::cli::run_with_output(cli.channel, &mut out);
        (code, String::from_utf8(out).unwrap())
    };
    let failed = fixture("status-01-failed.json");
    let (code, out) = run(&["hydra-hook", "--event", failed.to_str().unwrap()]);
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    assert!(out.starts_with("skipped: build "), "{out}");
    let (code, out) = run(&["hydra-hook", "--json", "--event", failed.to_str().unwrap()]);
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["result"], "skipped");
    assert!(v["reason"].as_str().unwrap().contains("failed (buildStatus 1)"), "{v}");

    let malformed = fixture("malformed.json");
    let (code, out) = run(&["hydra-hook", "--json", "--event", malformed.to_str().unwrap()]);
    assert_eq!(code, std::process::ExitCode::from(2));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["result"].as_str(), v["exit_code"].as_u64()), (Some("failed"), Some(2)));
    assert!(v["error"].as_str().unwrap().contains("Hydra event"), "{v}");
}
