//! Bad input to `fleetgate channel`, through the real binary: fleetgate's own message
//! saying what is wrong and what to do, exit code 2, exactly one JSON document with
//! `--json`, and no hang on a FIFO or a device. Nothing here needs Nix or a remote to be
//! reached: each case fails before either is used.
#![allow(clippy::unwrap_used)]
mod common;

use std::path::{Path, PathBuf};

use common::{BinRun, channel_bin, git};
use fleetgate_channel::{Manifest, SignedManifest};
use fleetgate_nix::SecretKey;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const SYSTEM: &str = "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-nixos-system-web1";

/// A directory with a bare repository, a key pair (`sk`, `pk`), a FIFO and a garbage file.
struct World {
    tmp: tempfile::TempDir,
    secret: SecretKey,
}

impl World {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("r.git")).unwrap();
        git(&root.join("r.git"), &["init", "--bare", "--quiet"]);
        let secret = SecretKey::from_seed("cache.test-1", &[9; 32]).unwrap();
        std::fs::write(root.join("sk"), format!("{}\n", secret.to_nix_format())).unwrap();
        std::fs::write(root.join("pk"), secret.public().to_string()).unwrap();
        std::fs::write(root.join("garbage"), "this is not a key\n").unwrap();
        std::fs::write(root.join("empty"), "").unwrap();
        rustix::fs::mkfifoat(rustix::fs::CWD, root.join("fifo"), rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
        Self { tmp, secret }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    fn run(&self, args: &[&str]) -> BinRun {
        channel_bin(self.root(), args, &[])
    }

    fn promote(&self, key: &str) -> BinRun {
        let cache = format!("file://{}", self.path("cache").display());
        self.run(&[
            "promote",
            "--json",
            "--host",
            "web1",
            "--commit",
            COMMIT,
            "--system",
            SYSTEM,
            "--repo",
            "r.git",
            "--cache",
            &cache,
            "--signing-key",
            key,
            "--state-dir",
            "state",
        ])
    }
}

/// Runs each case, checks exit code 2 and one JSON document saying the same, and
/// returns the runs' output for one snapshot.
fn usage_errors(w: &World, cases: &[(&str, BinRun)]) -> String {
    let mut all = String::new();
    for (name, run) in cases {
        assert_eq!(run.code, Some(2), "{name}: {run:?}");
        let v = run.json();
        assert_eq!((v["result"].as_str(), v["exit_code"].as_u64()), (Some("failed"), Some(2)), "{name}: {v}");
        all.push_str(&format!("=== {name}\n{}\n", run.snapshot(w.root())));
    }
    all
}

#[test]
fn a_bad_signing_key_is_fleetgates_message_and_exit_2() {
    let w = World::new();
    let cases: Vec<(&str, BinRun)> = vec![
        ("garbage", w.promote("garbage")),
        ("empty", w.promote("empty")),
        ("the public key", w.promote("pk")),
        ("missing", w.promote("missing")),
        ("a directory", w.promote(".")),
        ("a FIFO", w.promote("fifo")),
        ("a device", w.promote("/dev/zero")),
    ];
    for (name, run) in &cases {
        assert!(!run.stderr.contains("the message below is Nix's"), "{name}: {}", run.stderr);
        assert!(run.stderr.contains("fleetgate channel keygen"), "{name}: says how to make a key: {}", run.stderr);
    }
    insta::assert_snapshot!(usage_errors(&w, &cases));
    // Nothing was attempted: no mirror, no cache.
    assert!(!w.path("state").join("repos").exists() && !w.path("cache").exists());
}

#[test]
fn a_hydra_event_that_is_no_regular_file_is_exit_2_without_a_hang() {
    let w = World::new();
    let big = w.path("big.json");
    std::fs::File::create(&big).unwrap().set_len(fleetgate_channel::hydra::event::MAX_EVENT + 1).unwrap();
    let hook = |event: &str| w.run(&["hydra-hook", "--json", "--event", event]);
    let cases: Vec<(&str, BinRun)> = vec![
        ("missing", hook("missing.json")),
        ("a FIFO", hook("fifo")),
        ("a directory", hook(".")),
        ("a device", hook("/dev/zero")),
        ("too large", hook("big.json")),
    ];
    for (name, run) in &cases {
        assert!(!run.stderr.contains("free space"), "{name}: {}", run.stderr);
    }
    insta::assert_snapshot!(usage_errors(&w, &cases));
}

#[test]
fn verify_takes_the_public_key_as_text_or_as_a_file() {
    let w = World::new();
    let manifest = Manifest {
        host: "web1".into(),
        branch: "nixos-tested-web1".into(),
        commit: COMMIT.into(),
        system: SYSTEM.into(),
        nar_hash: "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
        nar_size: 1,
        closure_size: 2,
        closure_paths: 3,
        cache: "file:///srv/cache".into(),
        created_at: 1_717_171_717,
        build: None,
    };
    let doc = SignedManifest::sign(&manifest, &w.secret).unwrap().to_document();
    std::fs::write(w.path("web1.json"), doc).unwrap();
    let text = w.secret.public().to_string();

    for key in [text.as_str(), "pk", &format!("  {text}\n")] {
        let run = w.run(&["verify", "--json", "--public-key", key, "web1.json"]);
        assert_eq!(run.code, Some(0), "{key:?}: {run:?}");
        let v = run.json();
        assert_eq!((v["result"].as_str(), v["key"].as_str()), (Some("verified"), Some("cache.test-1")));
        assert_eq!(v["manifest"]["commit"], COMMIT);
    }
    let plain = w.run(&["verify", "--public-key", &text, "web1.json"]);
    assert_eq!(serde_json::from_str::<Manifest>(&plain.stdout).unwrap(), manifest);

    let other = SecretKey::from_seed("cache.test-1", &[1; 32]).unwrap().public().to_string();
    let wrong = w.run(&["verify", "--json", "--public-key", &other, "web1.json"]);
    assert_eq!(wrong.code, Some(1), "{wrong:?}");
    assert_eq!(wrong.json()["exit_code"], 1);

    let cases: Vec<(&str, BinRun)> = vec![
        ("the secret key", w.run(&["verify", "--json", "--public-key", &w.secret.to_nix_format(), "web1.json"])),
        ("neither file nor key", w.run(&["verify", "--json", "--public-key", "nothere.pub", "web1.json"])),
        ("not base64", w.run(&["verify", "--json", "--public-key", "k:***", "web1.json"])),
        ("a FIFO", w.run(&["verify", "--json", "--public-key", "fifo", "web1.json"])),
        ("manifest missing", w.run(&["verify", "--json", "--public-key", &text, "nothere.json"])),
    ];
    for (name, run) in &cases {
        assert!(!run.stderr.contains("the message below is Nix's"), "{name}: {}", run.stderr);
        assert!(!run.stderr.contains(&w.secret.to_nix_format()[15..40]), "{name}: secret key echoed");
    }
    insta::assert_snapshot!(usage_errors(&w, &cases));
}

#[test]
fn with_json_every_failure_is_one_json_document() {
    let w = World::new();
    let cases: Vec<(&str, BinRun)> = vec![
        ("promote: missing arguments", w.run(&["promote", "--json", "--host", "web1"])),
        ("promote: unknown option", w.run(&["promote", "--json", "--hots", "web1"])),
        ("hydra-hook: no event", w.run(&["hydra-hook", "--json"])),
        ("sync: bad commit", w.run(&["sync", "--json", "--flake", ".", "--commit", "HEAD"])),
        (
            "keygen: bad name",
            w.run(&["keygen", "--json", "--name", "a b", "--secret-key-file", "s", "--public-key-file", "p"]),
        ),
        ("promote: bad cache URI", {
            let args = ["promote", "--json", "--host", "web1", "--commit", COMMIT, "--system", SYSTEM];
            let opts =
                ["--repo", "r.git", "--cache", "file:///srv/a cache", "--signing-key", "sk", "--state-dir", "state"];
            w.run(&[&args[..], &opts[..]].concat())
        }),
    ];
    insta::assert_snapshot!(usage_errors(&w, &cases));
    // Without --json, stdout stays empty.
    let run = w.run(&["promote", "--host", "web1"]);
    assert_eq!((run.code, run.stdout.as_str()), (Some(2), ""));
    // --help is not an error.
    let help = w.run(&["promote", "--json", "--help"]);
    assert_eq!(help.code, Some(0));
    assert!(help.stdout.contains("Usage:"), "{help:?}");
}
