//! Against the real, installed Nix (2.8 on Debian 12): build, path-info, keys, copy to a
//! file:// binary cache with signing, verify the narinfo signature ourselves.
#![allow(clippy::unwrap_used)]
use std::path::Path;

use fleetgate_nix::{CopyOptions, Nix, NixVersion, PublicKey, SecretKey, StoreUri};

fn nix(tmp: &Path) -> Nix {
    Nix::detect()
        .expect("a real Nix must be installed (apt-get install nix-bin)")
        .offline()
        .with_option("sandbox", "false")
        .with_env("HOME", tmp)
        .with_env("XDG_CACHE_HOME", tmp.join("cache"))
}

fn flake(tmp: &Path, tag: &str) -> String {
    let dir = tmp.join("flake");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("flake.nix"),
        format!(
            r#"{{ outputs = {{ self }}: {{
  dep = derivation {{ name = "dep-{tag}"; system = "x86_64-linux"; builder = "/bin/sh";
                      args = [ "-c" "echo dep > $out" ]; }};
  sys = derivation {{ name = "sys-{tag}"; system = "x86_64-linux"; builder = "/bin/sh";
                      dep = self.dep; PATH = "/usr/bin:/bin";
                      args = [ "-c" "mkdir $out; echo $dep > $out/dep" ]; }};
  info = {{ answer = 42; name = "{tag}"; }};
}}; }}"#
        ),
    )
    .unwrap();
    format!("path:{}", dir.display())
}

#[test]
fn version_is_at_least_2_8() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(nix(tmp.path()).version() >= NixVersion::MINIMUM);
}

#[test]
fn build_eval_copy_sign_and_verify_against_a_file_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let nix = nix(tmp.path());
    let tag = format!("{}", std::process::id());
    let f = flake(tmp.path(), &tag);

    let info = nix.eval_json(&format!("{f}#info"), None).unwrap();
    assert_eq!(info["answer"], 42);
    let names = nix
        .eval_json(&format!("{f}#info"), Some("builtins.attrNames"))
        .unwrap();
    assert_eq!(names, serde_json::json!(["answer", "name"]));

    let built = nix.build(&[format!("{f}#sys")]).unwrap();
    let sys = built[0].outputs["out"].clone();
    assert!(sys.starts_with("/nix/store/") && sys.ends_with(&format!("-sys-{tag}")));

    let (local, missing) = nix.path_info(None, std::slice::from_ref(&sys), true, true).unwrap();
    assert!(missing.is_empty());
    assert_eq!(local.len(), 2, "sys and its dependency");
    let top = local.iter().find(|p| p.path == sys).unwrap();
    assert_eq!(top.references.len(), 1);
    assert!(top.closure_size.unwrap() > top.nar_size);

    let (sk, pk) = (tmp.path().join("sk"), tmp.path().join("pk"));
    nix.generate_key_pair("fleetgate-test-1", &sk, &pk).unwrap();
    let secret = SecretKey::from_file(&sk).unwrap();
    let public = PublicKey::from_file(&pk).unwrap();
    assert_eq!(secret.public(), public);

    let cache = StoreUri::parse(&format!("file://{}/cache", tmp.path().display())).unwrap();
    let (_, absent) = nix.path_info(Some(&cache), std::slice::from_ref(&sys), false, false).unwrap();
    assert_eq!(absent, vec![sys.clone()]);

    nix.copy_to(
        &cache,
        std::slice::from_ref(&sys),
        &CopyOptions {
            secret_key_file: Some(sk.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let paths: Vec<String> = local.iter().map(|p| p.path.clone()).collect();
    let (remote, absent) = nix.path_info(Some(&cache), &paths, false, false).unwrap();
    assert!(absent.is_empty());
    assert_eq!(remote.len(), 2);
    for p in &remote {
        assert!(p.is_signed_by(&public), "{} not signed by {public}", p.path);
    }
    let other = tmp.path().join("other");
    nix.generate_key_pair("other-1", &other, &tmp.path().join("other.pub"))
        .unwrap();
    let other_pub = PublicKey::from_file(&tmp.path().join("other.pub")).unwrap();
    assert!(!remote[0].is_signed_by(&other_pub));

    // Signing a local path adds a signature that verifies with the same code.
    nix.sign(None, std::slice::from_ref(&sys), &other, false).unwrap();
    let (signed, _) = nix.path_info(None, std::slice::from_ref(&sys), false, false).unwrap();
    assert!(signed[0].is_signed_by(&other_pub));
}

#[test]
fn failures_carry_the_command_and_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let nix = nix(tmp.path());
    let e = nix
        .eval_json("path:/nonexistent-flake-dir#x", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nix --extra-experimental-features 'nix-command flakes'"), "{e}");
    assert!(e.contains("nonexistent-flake-dir"), "{e}");
    let bad = StoreUri::parse("file:///proc/fleetgate-nope").unwrap();
    let e = nix
        .copy_to(&bad, &["/nix/store/00000000000000000000000000000000-x".into()], &CopyOptions::default())
        .unwrap_err();
    assert!(!e.to_string().is_empty());
}
