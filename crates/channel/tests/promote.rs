//! The promotion core against real Nix, a real file:// cache and real git.
#![allow(clippy::unwrap_used)]
mod common;

use common::{Env, git};
use fleetgate_channel::branch::Movement;
use fleetgate_channel::{ChannelError, PromoteRequest, SignedManifest, promote};
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
    let (infos, missing) = env
        .nix
        .path_info(Some(&env.cache_uri()), std::slice::from_ref(&sys), true, false)
        .unwrap();
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
fn a_rejected_push_is_retried_then_reported() {
    let env = Env::new();
    let log = env.log();
    let c1 = env.commit("c1");
    let sys = env.system("rejected", None);
    let counter = env.root().join("attempts");
    hook(
        &env,
        &format!("#!/bin/sh\necho x >> '{}'\necho 'protected branch' >&2\nexit 1\n", counter.display()),
    );
    let mut cfg = env.config();
    cfg.policy.max_attempts = 3;
    let refs = env.remote_refs();
    let e = promote(&env.nix, &cfg, &req("web1", &c1, &sys), &log).unwrap_err();
    match &e {
        ChannelError::PushRejected { attempts, source, .. } => {
            assert_eq!(*attempts, 3);
            assert!(source.stderr_tail().contains("protected branch"), "{source}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&counter).unwrap().lines().count(), 3);
    assert_eq!(env.remote_refs(), refs);
    assert!(!env.manifest_file("web1").exists());
    assert!(env.all_logs().contains("push attempt 3/3 rejected"));
}

#[test]
fn a_push_rejected_once_succeeds_on_retry() {
    let env = Env::new();
    let log = env.log();
    let c1 = env.commit("c1");
    let sys = env.system("retry", None);
    let marker = env.root().join("rejected-once");
    hook(
        &env,
        &format!(
            "#!/bin/sh\nif [ ! -e '{m}' ]; then touch '{m}'; echo 'remote moved' >&2; exit 1; fi\nexit 0\n",
            m = marker.display()
        ),
    );
    let out = promote(&env.nix, &env.config(), &req("web1", &c1, &sys), &log).unwrap();
    assert_eq!(out.push_attempts, 2);
    assert_eq!(env.branch("web1").as_deref(), Some(c1.as_str()));
}

#[test]
fn a_commit_unknown_to_the_repository_changes_nothing() {
    let env = Env::new();
    let sys = env.system("unknown-commit", None);
    let refs = env.remote_refs();
    let e = promote(&env.nix, &env.config(), &req("web1", &"ab".repeat(20), &sys), &env.log())
        .unwrap_err();
    assert!(matches!(e, ChannelError::CommitNotFound { .. }), "{e:?}");
    assert_eq!(env.remote_refs(), refs);
    assert!(!env.manifest_file("web1").exists());
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
