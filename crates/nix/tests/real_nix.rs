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
    let names = nix.eval_json(&format!("{f}#info"), Some("builtins.attrNames")).unwrap();
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
        &CopyOptions { secret_key_file: Some(sk.clone()), ..Default::default() },
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
    nix.generate_key_pair("other-1", &other, &tmp.path().join("other.pub")).unwrap();
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
    let e = nix.eval_json("path:/nonexistent-flake-dir#x", None).unwrap_err().to_string();
    assert!(e.contains("nix --extra-experimental-features 'nix-command flakes'"), "{e}");
    assert!(e.contains("nonexistent-flake-dir"), "{e}");
    let bad = StoreUri::parse("file:///proc/fleetgate-nope").unwrap();
    let e = nix
        .copy_to(&bad, &["/nix/store/00000000000000000000000000000000-x".into()], &CopyOptions::default())
        .unwrap_err();
    assert!(!e.to_string().is_empty());
}

/// A closure of a few paths with real sizes: two random blobs, a small file, and two tops
/// that share the first blob.
fn blobs_flake(tmp: &Path, tag: &str) -> String {
    let dir = tmp.join("blobs");
    std::fs::create_dir_all(&dir).unwrap();
    let drv = |name: &str, script: &str, deps: &str| {
        format!(
            r#"derivation {{ name = "{name}-{tag}"; system = "x86_64-linux"; builder = "/bin/sh";
                PATH = "/usr/bin:/bin"; {deps} args = [ "-c" "{script}" ]; }}"#
        )
    };
    std::fs::write(
        dir.join("flake.nix"),
        format!(
            "{{ outputs = {{ self }}: {{\n  blob1 = {};\n  blob2 = {};\n  small = {};\n  top = {};\n  top2 = {};\n}}; }}\n",
            drv("blob1", "head -c 3000000 /dev/urandom > $out", ""),
            drv("blob2", "head -c 1200000 /dev/urandom > $out", ""),
            drv("small", "echo small > $out", ""),
            drv("top", "mkdir $out; echo $a $b $c > $out/refs", "a = self.blob1; b = self.blob2; c = self.small;"),
            drv("top2", "mkdir $out; echo $a > $out/refs; head -c 700000 /dev/urandom > $out/new", "a = self.blob1;"),
        ),
    )
    .unwrap();
    format!("path:{}", dir.display())
}

/// `nix copy` with progress to a fresh `file://` binary cache: Nix 2.8 reports each path
/// when it has sent its NAR, so the last progress counts the NAR size of every path of
/// the closure — which is what `nix path-info -S --json` calls the closure size (the sum
/// of the closure's `narSize`s). Then a second system sharing a blob, with the paths the
/// cache lacks given up front: the bytes to expect are known from the first report and
/// are exactly what gets sent.
#[test]
fn copy_with_progress_to_a_file_cache_counts_every_nar_byte_of_the_closure() {
    let tmp = tempfile::tempdir().unwrap();
    let nix = nix(tmp.path());
    let tag = format!("{}", std::process::id());
    let f = blobs_flake(tmp.path(), &tag);
    let built = nix.build(&[format!("{f}#top"), format!("{f}#top2")]).unwrap();
    let (top, top2) = (built[0].outputs["out"].clone(), built[1].outputs["out"].clone());
    let (infos, _) = nix.path_info(None, std::slice::from_ref(&top), true, true).unwrap();
    let closure_size = infos.iter().find(|p| p.path == top).unwrap().closure_size.unwrap();
    assert_eq!(infos.len(), 4);
    assert!(closure_size > 4_000_000, "{closure_size}");

    let cache = StoreUri::parse(&format!("file://{}/cache", tmp.path().display())).unwrap();
    let mut seen = Vec::new();
    let end = nix
        .copy_to_with_progress(&cache, std::slice::from_ref(&top), &CopyOptions::default(), &mut |_| None, &mut |p| {
            seen.push(p.clone());
        })
        .unwrap();
    assert_eq!(end.done_bytes, closure_size, "{seen:#?}");
    assert_eq!((end.paths_done, end.paths_expected), (4, Some(4)));
    // Nix announced it copies the whole closure: the total was known before any byte.
    assert_eq!(end.expected_bytes, Some(closure_size));
    assert!(seen.iter().any(|p| p.done_bytes == 0 && p.expected_bytes == Some(closure_size)));
    assert!(seen.iter().any(|p| p.done_bytes > 0 && p.done_bytes < closure_size), "progress in between: {seen:#?}");
    assert!(seen.windows(2).all(|w| w[0].done_bytes <= w[1].done_bytes));
    assert_eq!(seen.last(), Some(&end));
    let (_, absent) =
        nix.path_info(Some(&cache), &infos.iter().map(|p| p.path.clone()).collect::<Vec<_>>(), false, false).unwrap();
    assert!(absent.is_empty());

    // top2 shares blob1 with what the cache has; the cache is asked what it lacks.
    let (infos2, _) = nix.path_info(None, std::slice::from_ref(&top2), true, false).unwrap();
    let top2_nar = infos2.iter().find(|p| p.path == top2).unwrap().nar_size;
    let mut asked = Vec::new();
    let mut lacking = |paths: &[String]| {
        asked = paths.to_vec();
        let (_, absent) = nix.path_info(Some(&cache), paths, false, false).ok()?;
        Some(absent.into_iter().collect())
    };
    let mut seen = Vec::new();
    let end = nix
        .copy_to_with_progress(&cache, std::slice::from_ref(&top2), &CopyOptions::default(), &mut lacking, &mut |p| {
            seen.push(p.clone());
        })
        .unwrap();
    asked.sort();
    let mut closure2: Vec<String> = infos2.iter().map(|p| p.path.clone()).collect();
    closure2.sort();
    assert_eq!(asked, closure2, "asked about the whole closure");
    assert_eq!((end.done_bytes, end.expected_bytes, end.paths_done), (top2_nar, Some(top2_nar), 1));
    assert!(seen.iter().all(|p| p.expected_bytes == Some(top2_nar)), "{seen:#?}");
}

#[test]
fn copy_with_progress_failures_read_as_plain_text() {
    let tmp = tempfile::tempdir().unwrap();
    let nix = nix(tmp.path());
    let tag = format!("{}", std::process::id());
    let f = flake(tmp.path(), &tag);
    let sys = nix.build(&[format!("{f}#sys")]).unwrap()[0].outputs["out"].clone();
    let bad = StoreUri::parse("file:///proc/fleetgate-nope").unwrap();
    let e = nix
        .copy_to_with_progress(&bad, std::slice::from_ref(&sys), &CopyOptions::default(), &mut |_| None, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("--log-format internal-json"), "the command line: {e}");
    // 2.8 names the cache directory, 2.24 its `nar` subdirectory.
    assert!(e.contains("error: creating directory '/proc/fleetgate-nope"), "{e}");
    assert!(!e.contains("@nix") && !e.contains('\u{1b}'), "{e}");
}
