//! The fleet's build against the real Nix: one evaluation, one realisation
//! of every host's derivation; a host whose system does not evaluate or does
//! not build is named and the others are built all the same.
#![allow(clippy::expect_used)]

use std::path::Path;

use fleetgate_deploy::build::build;
use fleetgate_nix::Nix;

fn nix(tmp: &Path) -> Nix {
    Nix::detect()
        .expect("a real Nix")
        .offline()
        .with_option("sandbox", "false")
        .with_env("HOME", tmp)
        .with_env("XDG_CACHE_HOME", tmp.join("cache"))
}

fn fleet(tmp: &Path, tag: &str) -> String {
    let dir = tmp.join("flake");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let system = |name: &str, script: &str| {
        format!(
            r#"{{ config.system.build.toplevel = derivation {{ name = "{name}-{tag}"; system = "x86_64-linux";
                builder = "/bin/sh"; PATH = "/usr/bin:/bin"; args = [ "-c" "{script}" ]; }}; }}"#
        )
    };
    std::fs::write(
        dir.join("flake.nix"),
        format!(
            "{{ outputs = {{ self }}: {{ nixosConfigurations = {{ a = {}; b = {}; broken = {}; noeval = {{ config.system.build.toplevel = throw \"no\"; }}; }}; }}; }}",
            system("a", "mkdir $out"),
            system("b", "mkdir $out; echo b > $out/b"),
            system("broken", "echo failing on purpose >&2; exit 1"),
        ),
    )
    .expect("write flake");
    format!("path:{}", dir.display())
}

#[test]
fn every_buildable_host_is_built_and_the_others_say_why() {
    let tmp = tempfile::tempdir().expect("tmp");
    let nix = nix(tmp.path());
    let tag = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    );
    let flake = fleet(tmp.path(), &tag);
    let hosts: Vec<String> = ["a", "b", "broken", "noeval"].map(str::to_owned).to_vec();

    let built = build(&nix, &flake, &hosts, 2).expect("the flake evaluates");
    assert_eq!(built.systems.keys().collect::<Vec<_>>(), ["a", "b"], "{built:?}");
    assert!(Path::new(&built.systems["b"]).join("b").is_file(), "{built:?}");
    assert!(built.systems["a"].ends_with(&format!("-a-{tag}")));
    assert!(built.failed["broken"].contains("does not build"), "{built:?}");
    assert!(built.failed["noeval"].contains("does not evaluate"), "{built:?}");

    // All buildable: one realisation, nothing failed.
    let fine: Vec<String> = ["a", "b"].map(str::to_owned).to_vec();
    let again = build(&nix, &flake, &fine, 2).expect("evaluates");
    assert_eq!((again.systems, again.failed.len()), (built.systems, 0));
}
