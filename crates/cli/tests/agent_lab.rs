//! `fleetgate agent` end to end on lab hosts (issue 11's proof): the agent
//! runs inside each host from its generation's service (the product's
//! binary, copied into the store), CI promotes builds into a local bare
//! repository + `file://` cache + `channel serve`, and the hosts upgrade
//! themselves. Every test asserts each host's current, booted, default and
//! profile at the end. Needs root, like the lab.

mod agent_world;

use std::time::Duration;

use agent_world::{AgentSetup, Fleet, Via};

const MINUTES: Duration = Duration::from_secs(60);

fn result_is(s: &serde_json::Value, outcome: &str, system: &str) -> bool {
    s["report"]["result"]["outcome"] == outcome && s["report"]["result"]["system"] == system
}

/// Scenarios 1, 2 and 5, and "never evaluates, never builds": every host's
/// Nix refuses any evaluation or build (and logs every call), and still each
/// upgrades by itself with a live switch; one whose build fails its health
/// check rolls back, reports it, and does not try that path again, while the
/// others upgrade; a later upstream fix heals it with no human action.
#[test]
fn agent_promotions_upgrade_every_host_a_failing_one_rolls_back_and_an_upstream_fix_heals_it() {
    let hosts = ["web1", "web2", "web3"];
    let fleet = Fleet::up(&["web1=virtio,systemd-boot", "web2=nvme,grub", "web3=sata,systemd-boot"]);
    let gen1 = fleet.lab.build(&hosts).expect("build");
    let setup = AgentSetup { via: Via::Server, nix_guard: true, ..AgentSetup::default() };
    let gen2 = fleet.install_agents(&hosts.map(|h| (h, setup.clone())));

    // 1. Promoted through the server's hook: every agent upgrades by itself.
    for h in hosts {
        fleet.lab.edit_host(h, |k| k.revision = 3).expect("edit");
    }
    let gen3 = fleet.lab.build(&hosts).expect("build");
    let c3 = fleet.commit("revision 3");
    for h in hosts {
        fleet.promote_via_hook(h, &c3, &gen3[h]);
    }
    for h in hosts {
        fleet.wait_agent(h, 4 * MINUTES, "revision 3 applied", |s| result_is(s, "applied", &gen3[h]));
        fleet.assert_on(h, &gen3[h], &gen1[h], &gen3[h]);
    }
    let synced = agent_world::poll_until(2 * MINUTES, || {
        let v = fleet.server_status();
        let all = v["hosts"].as_array().is_some_and(|hs| {
            hosts
                .iter()
                .all(|h| hs.iter().any(|x| x["host"] == *h && x["in_sync"] == true && x["report"]["commit"] == c3))
        });
        all.then_some(v)
    });
    assert!(synced.is_some(), "the server shows every host on {c3}: {:#}", fleet.server_status());

    // 2. web2's next build fails its health check: it rolls back and says
    //    so; the others upgrade.
    for h in hosts {
        fleet
            .lab
            .edit_host(h, |k| {
                k.revision = 4;
                k.services.insert("app".into(), h != "web2");
            })
            .expect("edit");
    }
    let gen4 = fleet.lab.build(&hosts).expect("build");
    let c4 = fleet.commit("revision 4: web2's app breaks");
    for h in hosts {
        fleet.promote_via_hook(h, &c4, &gen4[h]);
    }
    for h in ["web1", "web3"] {
        fleet.wait_agent(h, 4 * MINUTES, "revision 4 applied", |s| result_is(s, "applied", &gen4[h]));
        fleet.assert_on(h, &gen4[h], &gen1[h], &gen4[h]);
    }
    let failed =
        fleet.wait_agent("web2", 4 * MINUTES, "revision 4 rolled back", |s| result_is(s, "rolled-back", &gen4["web2"]));
    assert!(failed["bad"].as_array().is_some_and(|b| b.iter().any(|x| x["system"] == gen4["web2"])), "{failed:#}");
    fleet.assert_on("web2", &gen3["web2"], &gen1["web2"], &gen3["web2"]);
    // The bad path is not retried: several polls later it was tried once.
    let since = failed["fetch"]["last_ok"].as_u64().expect("fetched");
    fleet.wait_agent("web2", MINUTES, "three more polls", |s| {
        s["fetch"]["last_ok"].as_u64().is_some_and(|t| t >= since + 6)
    });
    let tries = fleet.agent_log("web2").matches(&format!("switching live to commit {}", &c4[..12])).count();
    assert_eq!(tries, 1, "{}", fleet.agent_log("web2"));
    fleet.assert_on("web2", &gen3["web2"], &gen1["web2"], &gen3["web2"]);

    // 5. Upstream fixed: the next promotion heals web2 with no human action.
    for h in hosts {
        fleet
            .lab
            .edit_host(h, |k| {
                k.revision = 5;
                k.services.insert("app".into(), true);
            })
            .expect("edit");
    }
    let gen5 = fleet.lab.build(&hosts).expect("build");
    let c5 = fleet.commit("revision 5: fixed");
    for h in hosts {
        fleet.promote_via_hook(h, &c5, &gen5[h]);
    }
    for h in hosts {
        fleet.wait_agent(h, 4 * MINUTES, "revision 5 applied", |s| result_is(s, "applied", &gen5[h]));
        fleet.assert_on(h, &gen5[h], &gen1[h], &gen5[h]);
    }

    // Never evaluated, never built: the guard refused nothing, and the
    // agent's Nix calls were substitutions and queries.
    for h in hosts {
        let log = fleet.nix_guard_log(h);
        assert!(!log.contains("refused"), "{h}: {log}");
        assert!(log.lines().any(|l| l.starts_with("nix-store ") && l.contains("--realise")), "{h}: {log}");
        assert!(log.lines().all(|l| l.starts_with("nix ") || l.starts_with("nix-store ")), "{h}: {log}");
    }
    drop(gen2);
    let left = fleet.lab_down();
    assert!(left.is_empty(), "{left:?}");
}
