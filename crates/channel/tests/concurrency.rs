//! 20 concurrent promotions across 4 hosts and 5 commits: nothing lost, no rewind.
#![allow(clippy::unwrap_used)]
mod common;

use common::{Env, git};
use fleetgate_channel::{PromoteRequest, SignedManifest, promote};
use fleetgate_nix::PublicKey;

#[test]
fn twenty_concurrent_promotions_lose_nothing_and_never_rewind() {
    let env = Env::new();
    let cfg = env.config();
    let commits: Vec<String> = (1..=5).map(|i| env.commit(&format!("c{i}"))).collect();
    let hosts = ["h1", "h2", "h3", "h4"];
    let systems: Vec<String> = hosts.iter().map(|h| env.system(&format!("conc-{h}"), None)).collect();

    // Every (host, commit) pair once, in an interleaved order (4 and 5 are coprime).
    let jobs: Vec<(usize, usize)> = (0..20).map(|i| (i % 4, (i * 3) % 5)).collect();
    let mut seen: Vec<(usize, usize)> = jobs.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 20);

    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|&(h, c)| {
                let (cfg, env, commits, systems) = (&cfg, &env, &commits, &systems);
                s.spawn(move || {
                    let req = PromoteRequest::parse(hosts[h], &commits[c], &systems[h], None, false).unwrap();
                    let log = env.log();
                    promote(&env.nix, cfg, &req, &log)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }

    let pk = PublicKey::from_file(&env.pk).unwrap();
    let newest = commits.last().unwrap();
    for (i, host) in hosts.iter().enumerate() {
        let branch = format!("refs/heads/nixos-tested-{host}");
        // Nothing lost: every branch ends at the newest commit, with a matching manifest.
        assert_eq!(env.branch(host).as_ref(), Some(newest));
        let m = SignedManifest::parse(&std::fs::read(env.manifest_file(host)).unwrap()).unwrap().verify(&pk).unwrap();
        assert_eq!(&m.commit, newest);
        assert_eq!(m.system, systems[i]);
        // Never rewound: each update in the remote's reflog moved forward.
        let log = git(&env.remote, &["reflog", "show", "--format=%H", &branch]);
        let history: Vec<&str> = log.lines().rev().collect();
        assert!(!history.is_empty());
        for pair in history.windows(2) {
            assert!(
                common::git_try(&env.remote, &["merge-base", "--is-ancestor", pair[0], pair[1]]).is_some(),
                "{host}: {} -> {} is not a fast-forward",
                pair[0],
                pair[1]
            );
        }
        // The note on the tip is the manifest of the tip.
        let note = git(&env.remote, &["notes", &format!("--ref=fleetgate/{host}"), "show", &branch]);
        let n = SignedManifest::parse(note.as_bytes()).unwrap().verify(&pk).unwrap();
        assert_eq!(&n.commit, newest);
    }
}
