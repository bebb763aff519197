//! `sync`: evaluate every host of a flake at a commit (real Nix flakes on a real git
//! repository) and promote exactly the hosts whose system the cache already has.
#![allow(clippy::unwrap_used)]
mod common;

use common::{Env, git};
use fleetgate_channel::CommitId;
use fleetgate_channel::branch::Movement;
use fleetgate_channel::sync::{HostSync, SyncRequest, locked_flake, run};
use fleetgate_nix::CopyOptions;

#[test]
fn sync_promotes_cached_hosts_and_skips_the_others() {
    let env = Env::new();
    let host = |h: &str| {
        format!(
            r#"{h} = {{ config.system.build.toplevel = derivation {{
                 name = "nixos-system-sync-{h}"; system = "x86_64-linux"; builder = "/bin/sh";
                 args = [ "-c" "echo {h} > $out" ]; }}; }};"#
        )
    };
    std::fs::write(
        env.work.join("flake.nix"),
        format!("{{ outputs = {{ self }}: {{ nixosConfigurations = {{ {} {} }}; }}; }}\n", host("alpha"), host("beta")),
    )
    .unwrap();
    git(&env.work, &["add", "flake.nix"]);
    let c = env.commit("flake");
    // Nix 2.8 assumes `master` unless told the ref.
    let flake = format!("git+file://{}?ref=main", env.remote.display());
    let commit = CommitId::parse(&c).unwrap();

    // CI built and cached alpha only.
    let locked = locked_flake(&flake, &commit);
    let built = env.nix.build(&[format!("{locked}#nixosConfigurations.alpha.config.system.build.toplevel")]).unwrap();
    let alpha = built[0].outputs["out"].clone();
    env.nix
        .copy_to(
            &env.cache_uri(),
            std::slice::from_ref(&alpha),
            &CopyOptions { secret_key_file: Some(env.sk.clone()), ..Default::default() },
        )
        .unwrap();

    let req = SyncRequest {
        flake,
        commit: commit.clone(),
        hosts: None,
        hosts_attr: "nixosConfigurations".into(),
        system_attr: "config.system.build.toplevel".into(),
    };
    let results = run(&env.nix, &env.config(), &req, &env.log()).unwrap();
    assert_eq!(results.len(), 2);
    for (name, r) in &results {
        match (name.as_str(), r) {
            ("alpha", HostSync::Promoted(o)) => {
                assert_eq!(o.movement, Movement::Created);
                assert_eq!(o.manifest.as_ref().unwrap().unverified().unwrap().system, alpha);
            }
            ("beta", HostSync::NotCached(p)) => assert!(p.ends_with("nixos-system-sync-beta")),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(env.branch("alpha").as_deref(), Some(c.as_str()));
    assert_eq!(env.branch("beta"), None);

    // Running it again changes nothing.
    let refs = env.remote_refs();
    let again = run(&env.nix, &env.config(), &req, &env.log()).unwrap();
    assert!(matches!(&again[0].1, HostSync::Promoted(o) if o.movement == Movement::AlreadyAt));
    assert_eq!(env.remote_refs(), refs);
}
