//! The promotion core against real Nix, a real file:// cache and real git.
#![allow(clippy::unwrap_used)]
mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{Env, git};
use fleetgate_channel::branch::Movement;
use fleetgate_channel::git::Mirror;
use fleetgate_channel::promote::{ManifestSink, promote_with};
use fleetgate_channel::{ChannelConfig, ChannelError, HostName, PromoteRequest, SignedManifest, promote};
use fleetgate_nix::{PublicKey, StoreUri};

fn req(host: &str, commit: &str, system: &str) -> PromoteRequest {
    PromoteRequest::parse(host, commit, system, Some("test-build"), false).unwrap()
}

#[test]
fn promotion_uploads_then_moves_branch_note_and_manifest_and_is_idempotent() {
    let env = Env::new();
    let cfg = env.config();
    let log = env.log();
    let c1 = env.commit("c1");
    let sys = env.system("promote-a", None);

    let out = promote(&env.nix, &cfg, &req("web1", &c1, &sys), &log).unwrap();
    assert_eq!(out.movement, Movement::Created);
    assert!(out.uploaded);
    assert_eq!(env.branch("web1").as_deref(), Some(c1.as_str()));

    // The cache has the closure, signed with our key (checked by the nix crate's code).
    let pk = PublicKey::from_file(&env.pk).unwrap();
    let (infos, missing) = env.nix.path_info(Some(&env.cache_uri()), std::slice::from_ref(&sys), true, false).unwrap();
    assert!(missing.is_empty());
    assert_eq!(infos.len(), 2);
    assert!(infos.iter().all(|i| i.is_signed_by(&pk)));

    // The manifest next to the cache verifies and describes exactly this promotion.
    let doc = std::fs::read(env.manifest_file("web1")).unwrap();
    let m = SignedManifest::parse(&doc).unwrap().verify(&pk).unwrap();
    assert_eq!((m.host.as_str(), m.commit.as_str(), m.system.as_str()), ("web1", c1.as_str(), sys.as_str()));
    assert_eq!(m.branch, "nixos-tested-web1");
    assert_eq!(m.closure_paths, 2);
    assert!(m.closure_size >= m.nar_size);
    assert_eq!(m.build.as_deref(), Some("test-build"));

    // …and is readable from the branch: the note on its tip is the same document.
    let note = git(&env.remote, &["notes", "--ref=fleetgate/web1", "show", "nixos-tested-web1"]);
    assert_eq!(note.trim(), String::from_utf8_lossy(&doc).trim());

    // Same commit again: nothing changes.
    let refs = env.remote_refs();
    let again = promote(&env.nix, &cfg, &req("web1", &c1, &sys), &log).unwrap();
    assert_eq!(again.movement, Movement::AlreadyAt);
    assert_eq!(again.push_attempts, 0);
    assert_eq!(env.remote_refs(), refs);

    // A descendant fast-forwards; the ancestor afterwards is a no-op, never a rewind.
    let c2 = env.commit("c2");
    let ff = promote(&env.nix, &cfg, &req("web1", &c2, &sys), &log).unwrap();
    assert_eq!(ff.movement, Movement::FastForward { from: c1.clone() });
    let doc2 = std::fs::read(env.manifest_file("web1")).unwrap();
    let old = promote(&env.nix, &cfg, &req("web1", &c1, &sys), &log).unwrap();
    assert_eq!(old.movement, Movement::AlreadyContained { tip: c2.clone() });
    assert_eq!(env.branch("web1").as_deref(), Some(c2.as_str()));
    assert_eq!(std::fs::read(env.manifest_file("web1")).unwrap(), doc2);

    // The log says each of these in the words of its JSON kind, and never in Rust's
    // Debug notation.
    let logs = env.all_logs();
    for line in [
        format!("nixos-tested-web1: created at {c1}"),
        format!("nixos-tested-web1: already at {c1}, unchanged"),
        format!("nixos-tested-web1: fast-forwarded from {c1} to {c2}"),
        format!("nixos-tested-web1: already contains {c1} (its tip is {c2}), unchanged"),
    ] {
        assert!(logs.lines().any(|l| l == line), "{line:?} not in\n{logs}");
    }
    assert!(!logs.contains('{') && !logs.contains("FastForward"), "{logs}");
}

#[test]
fn sideways_is_refused_unless_forced_and_rewinds_need_force() {
    let env = Env::new();
    let cfg = env.config();
    let log = env.log();
    let base = git(&env.work, &["rev-parse", "HEAD"]);
    let c1 = env.commit("main-1");
    let sys = env.system("promote-b", None);
    promote(&env.nix, &cfg, &req("db1", &c1, &sys), &log).unwrap();

    git(&env.work, &["checkout", "--quiet", "-b", "side", &base]);
    let side = env.commit("side-1");
    let refs = env.remote_refs();
    let manifest = std::fs::read(env.manifest_file("db1")).unwrap();
    let e = promote(&env.nix, &cfg, &req("db1", &side, &sys), &log).unwrap_err();
    assert!(matches!(e, ChannelError::Diverged { .. }), "{e}");
    assert!(e.to_string().contains("refusing to jump sideways"), "{e}");
    assert_eq!(env.remote_refs(), refs, "nothing changed");
    assert_eq!(std::fs::read(env.manifest_file("db1")).unwrap(), manifest);

    let mut forced = req("db1", &side, &sys);
    forced.force = true;
    let out = promote(&env.nix, &cfg, &forced, &log).unwrap();
    assert_eq!(out.movement, Movement::ForcedSideways { from: c1.clone() });
    assert_eq!(env.branch("db1").as_deref(), Some(side.as_str()));

    let mut rewind = req("db1", &base, &sys);
    rewind.force = true;
    let out = promote(&env.nix, &cfg, &rewind, &log).unwrap();
    assert_eq!(out.movement, Movement::ForcedRewind { from: side.clone() });
    assert_eq!(env.branch("db1").as_deref(), Some(base.as_str()));
}

#[test]
fn cache_upload_failure_leaves_branch_and_manifest_untouched() {
    let env = Env::new();
    let log = env.log();
    let c1 = env.commit("c1");
    let sys1 = env.system("upload-ok", None);
    promote(&env.nix, &env.config(), &req("web1", &c1, &sys1), &log).unwrap();
    let c2 = env.commit("c2");
    let sys2 = env.system("upload-fails", None);
    let refs = env.remote_refs();
    let manifest = std::fs::read(env.manifest_file("web1")).unwrap();

    // A real HTTP server that serves but refuses uploads (python's http.server: no PUT).
    let readonly = env.root().join("readonly-cache");
    std::fs::create_dir_all(&readonly).unwrap();
    std::fs::write(readonly.join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
    let (_server, port) = common::http_server(&readonly);
    let mut cfg = env.config();
    cfg.cache = StoreUri::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let e = promote(&env.nix, &cfg, &req("web1", &c2, &sys2), &log).unwrap_err();
    assert!(matches!(e, ChannelError::CacheUpload { .. }), "{e:?}");
    assert!(e.to_string().contains("branch and manifest left untouched"));
    assert_eq!(env.remote_refs(), refs);
    assert_eq!(std::fs::read(env.manifest_file("web1")).unwrap(), manifest);

    // An unwritable file:// cache fails the same way.
    let mut cfg = env.config();
    cfg.cache = StoreUri::parse("file:///proc/fleetgate-no-such-cache").unwrap();
    let e = promote(&env.nix, &cfg, &req("web1", &c2, &sys2), &log).unwrap_err();
    assert!(matches!(e, ChannelError::CacheUpload { .. }), "{e:?}");
    assert_eq!(env.remote_refs(), refs);
}

#[test]
fn a_cache_signed_by_another_key_is_refused() {
    let env = Env::new();
    let log = env.log();
    let c1 = env.commit("c1");
    let sys = env.system("wrong-key", None);
    let (sk2, pk2) = (env.root().join("k2.sk"), env.root().join("k2.pk"));
    env.nix.generate_key_pair("other-1", &sk2, &pk2).unwrap();
    let mut cfg = env.config();
    cfg.public_key = PublicKey::from_file(&pk2).unwrap();
    let refs = env.remote_refs();
    let e = promote(&env.nix, &cfg, &req("web1", &c1, &sys), &log).unwrap_err();
    assert!(matches!(e, ChannelError::CacheSignature { .. }), "{e:?}");
    assert_eq!(env.remote_refs(), refs);
    assert!(!env.manifest_file("web1").exists());
}

fn hook(env: &Env, script: &str) {
    let hooks = env.remote.join("hooks");
    let path = hooks.join("pre-receive");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_push_declined_by_the_remote_is_reported_without_retrying() {
    let env = Env::new();
    let log = env.log();
    let c1 = env.commit("c1");
    let sys = env.system("rejected", None);
    let counter = env.root().join("attempts");
    hook(&env, &format!("#!/bin/sh\necho x >> '{}'\necho 'protected branch' >&2\nexit 1\n", counter.display()));
    let mut cfg = env.config();
    cfg.policy.max_attempts = 3;
    let refs = env.remote_refs();
    let e = promote(&env.nix, &cfg, &req("web1", &c1, &sys), &log).unwrap_err();
    match &e {
        ChannelError::PushRejected { attempts, source, .. } => {
            assert_eq!(*attempts, 1);
            assert!(source.stderr_tail().contains("protected branch"), "{source}");
            assert!(source.stderr_tail().contains("pre-receive hook declined"), "{source}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&counter).unwrap().lines().count(), 1);
    assert_eq!(env.remote_refs(), refs);
    assert!(!env.manifest_file("web1").exists());
    assert!(env.all_logs().contains("declined by the remote, not retrying"), "{}", env.all_logs());
}

/// Installs a `reference-transaction` hook in fleetgate's mirror of the channel
/// repository that runs `script` once, right after the mirror prepared its notes commit:
/// between fetch and push, like another promotion landing at that moment.
fn race_once(env: &Env, cfg: &ChannelConfig, script: &str) {
    let mirror = Mirror::new(&cfg.state_dir, &cfg.repo, cfg.git.clone()).unwrap();
    mirror.ensure().unwrap();
    let hooks = mirror.lock_path().parent().unwrap().join("repo.git/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let marker = env.root().join("raced");
    let path = hooks.join("reference-transaction");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n[ \"$1\" = committed ] || exit 0\ngrep -q fleetgate-work || exit 0\n\
             [ -e '{m}' ] && exit 0\ntouch '{m}'\nunset GIT_DIR\n{script}\n",
            m = marker.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_push_whose_lease_went_stale_is_retried_from_a_fresh_fetch() {
    let env = Env::new();
    let log = env.log();
    let c1 = env.commit("c1");
    let c2 = env.commit("c2");
    let sys = env.system("retry", None);
    let cfg = env.config();
    // Another promotion creates the branch at c1 after our fetch saw no branch.
    race_once(
        &env,
        &cfg,
        &format!("git --git-dir='{}' update-ref refs/heads/nixos-tested-web1 {c1}", env.remote.display()),
    );
    let out = promote(&env.nix, &cfg, &req("web1", &c2, &sys), &log).unwrap();
    assert_eq!(out.push_attempts, 2, "{}", env.all_logs());
    assert_eq!(out.movement, Movement::FastForward { from: c1.clone() });
    assert_eq!(env.branch("web1").as_deref(), Some(c2.as_str()));
    assert!(env.all_logs().contains("rejected, the remote moved"), "{}", env.all_logs());
}

#[test]
fn a_lease_is_not_overridden_by_the_forced_refspec() {
    // The race moves the branch sideways; a blind force push would overwrite it.
    let env = Env::new();
    let log = env.log();
    let base = git(&env.work, &["rev-parse", "HEAD"]);
    let c1 = env.commit("c1");
    let sys = env.system("lease", None);
    git(&env.work, &["checkout", "--quiet", "-b", "side", &base]);
    let side = env.commit("side");
    let cfg = env.config();
    race_once(
        &env,
        &cfg,
        &format!("git --git-dir='{}' update-ref refs/heads/nixos-tested-web1 {side}", env.remote.display()),
    );
    let e = promote(&env.nix, &cfg, &req("web1", &c1, &sys), &log).unwrap_err();
    assert!(matches!(e, ChannelError::Diverged { .. }), "{e:?}");
    assert_eq!(env.branch("web1").as_deref(), Some(side.as_str()));
}

#[derive(Default)]
struct FlakySink {
    fail_next: AtomicBool,
    calls: AtomicUsize,
    held: Mutex<HashMap<String, Vec<u8>>>,
}

impl ManifestSink for FlakySink {
    fn publish(&self, host: &HostName, manifest: &SignedManifest) -> Result<(), ChannelError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(ChannelError::Config("database is down".into()));
        }
        self.held.lock().unwrap().insert(host.to_string(), manifest.to_document());
        Ok(())
    }

    fn current(&self, host: &HostName) -> Option<Vec<u8>> {
        self.held.lock().unwrap().get(host.as_str()).cloned()
    }
}

#[test]
fn a_manifest_write_that_failed_after_the_push_is_repaired_by_a_retry() {
    let env = Env::new();
    // A file where the manifest directory belongs: writing into it fails (even as root).
    let dir = env.root().join("manifests");
    std::fs::write(&dir, "in the way").unwrap();
    let cfg = ChannelConfig { manifest_dir: Some(dir.clone()), ..env.config() };
    let request = req("web1", &env.commit("c1"), &env.system("repair", None));
    let c1 = request.commit.to_string();
    let (sink, log) = (FlakySink::default(), env.log());

    let e = promote_with(&env.nix, &cfg, &request, Some(&sink), &log).unwrap_err();
    assert!(matches!(e, ChannelError::Io { .. }), "{e:?}");
    assert_eq!(env.branch("web1").as_deref(), Some(c1.as_str()), "the push went through");
    let note = git(&env.remote, &["notes", "--ref=fleetgate/web1", "show", "nixos-tested-web1"]);

    // Retry with the directory usable but the sink failing once: the file is repaired.
    std::fs::remove_file(&dir).unwrap();
    sink.fail_next.store(true, Ordering::SeqCst);
    let e = promote_with(&env.nix, &cfg, &request, Some(&sink), &log).unwrap_err();
    assert!(e.to_string().contains("database is down"), "{e}");
    let file = dir.join("web1.json");
    let doc = std::fs::read(&file).unwrap();
    assert_eq!(String::from_utf8_lossy(&doc).trim(), note.trim());
    assert_eq!(std::fs::read(env.manifest_file("web1")).unwrap(), doc);
    let pk = PublicKey::from_file(&env.pk).unwrap();
    let m = SignedManifest::parse(&doc).unwrap().verify(&pk).unwrap();
    assert_eq!(m.commit, c1);

    // Another retry: the file is already right; the sink gets the manifest.
    let out = promote_with(&env.nix, &cfg, &request, Some(&sink), &log).unwrap();
    assert_eq!(out.movement, Movement::AlreadyAt);
    assert!(out.published.is_empty(), "{:?}", out.published);
    assert_eq!(sink.current(&request.host), Some(doc.clone()));
    assert!(env.all_logs().contains("republished to the server"), "{}", env.all_logs());

    // Once everything holds it, a retry writes nothing.
    let calls = sink.calls.load(Ordering::SeqCst);
    let out = promote_with(&env.nix, &cfg, &request, Some(&sink), &log).unwrap();
    assert!(out.published.is_empty());
    assert_eq!(sink.calls.load(Ordering::SeqCst), calls);

    // A stale file (an older run's leftovers) is rewritten from the branch tip's note.
    std::fs::write(&file, b"{}").unwrap();
    let out = promote_with(&env.nix, &cfg, &request, Some(&sink), &log).unwrap();
    assert_eq!(out.published, vec![file.clone()]);
    assert_eq!(std::fs::read(&file).unwrap(), doc);
}

#[test]
fn a_commit_unknown_to_the_repository_changes_nothing() {
    let env = Env::new();
    let sys = env.system("unknown-commit", None);
    let refs = env.remote_refs();
    let e = promote(&env.nix, &env.config(), &req("web1", &"ab".repeat(20), &sys), &env.log()).unwrap_err();
    assert!(matches!(e, ChannelError::CommitNotFound { .. }), "{e:?}");
    assert_eq!(env.remote_refs(), refs);
    assert!(!env.manifest_file("web1").exists());
}

/// The mirror directories under the state directory.
fn mirrors(env: &Env) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(env.root().join("state/repos")) else { return Vec::new() };
    dir.map(|e| e.unwrap().file_name().into_string().unwrap()).collect()
}

#[test]
fn a_failed_promotion_removes_the_mirror_it_created_and_keeps_an_older_one() {
    let env = Env::new();
    let sys = env.system("mirror-cleanup", None);
    let ghost = "ab".repeat(20);
    let e = promote(&env.nix, &env.config(), &req("web1", &ghost, &sys), &env.log()).unwrap_err();
    assert!(matches!(e, ChannelError::CommitNotFound { .. }), "{e:?}");
    assert_eq!(mirrors(&env), Vec::<String>::new());

    let mut unreachable = env.config();
    unreachable.repo = format!("git://127.0.0.1:{}/remote.git", common::free_port());
    let c1 = env.commit("c1");
    let e = promote(&env.nix, &unreachable, &req("web1", &c1, &sys), &env.log()).unwrap_err();
    assert!(matches!(e, ChannelError::Git(_)), "{e:?}");
    assert_eq!(mirrors(&env), Vec::<String>::new());

    // A mirror that served a promotion stays when a later one fails.
    promote(&env.nix, &env.config(), &req("web1", &c1, &sys), &env.log()).unwrap();
    promote(&env.nix, &env.config(), &req("web1", &ghost, &sys), &env.log()).unwrap_err();
    let kept = mirrors(&env);
    assert_eq!(kept.len(), 1);
    assert!(env.root().join("state/repos").join(&kept[0]).join("repo.git/HEAD").exists());
}

#[test]
fn every_spelling_of_a_repository_path_is_one_mirror_and_one_lock() {
    let env = Env::new();
    let sys = env.system("spelling", None);
    let (c1, c2) = (env.commit("c1"), env.commit("c2"));
    promote(&env.nix, &env.config(), &req("web1", &c1, &sys), &env.log()).unwrap();
    let spelled = format!("{}/../remote.git/", env.remote.display());
    let mut cfg = ChannelConfig::new(&spelled, env.cache_uri(), &env.sk, &env.root().join("state")).unwrap();
    assert_eq!(cfg.repo, std::fs::canonicalize(&env.remote).unwrap().to_str().unwrap());
    cfg.repo = spelled.clone();
    let o = promote(&env.nix, &cfg, &req("web1", &c2, &sys), &env.log()).unwrap();
    assert!(matches!(o.movement, Movement::FastForward { .. }), "{o:?}");
    assert_eq!(mirrors(&env).len(), 1, "{:?}", mirrors(&env));
    let a = Mirror::new(&cfg.state_dir, &spelled, cfg.git.clone()).unwrap();
    let b = Mirror::new(&cfg.state_dir, env.remote.to_str().unwrap(), cfg.git.clone()).unwrap();
    assert_eq!(a.lock_path(), b.lock_path());
}

#[test]
fn bad_host_names_commits_and_paths_are_clear_errors() {
    let sys = "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-sys";
    let c = "a".repeat(40);
    for host in ["-f", "../etc", "a/b", "x:y", "main~1", "a b", ""] {
        let e = PromoteRequest::parse(host, &c, sys, None, false).unwrap_err();
        assert!(matches!(e, ChannelError::BadHost { .. }), "{host}");
    }
    for commit in ["HEAD", "abc123", &"z".repeat(40), "--all"] {
        let e = PromoteRequest::parse("web1", commit, sys, None, false).unwrap_err();
        assert!(matches!(e, ChannelError::BadCommit { .. }), "{commit}");
    }
    for path in ["/etc/passwd", "--to", "/nix/store/x"] {
        let e = PromoteRequest::parse("web1", &c, path, None, false).unwrap_err();
        assert!(matches!(e, ChannelError::BadStorePath { .. }), "{path}");
    }
}
