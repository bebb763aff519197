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
    let (c3, gen3) = fleet.release(&hosts, 3, "revision 3", |_, _| {});
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
    let (c4, gen4) = fleet.release(&hosts, 4, "revision 4: web2's app breaks", |h, k| {
        k.services.insert("app".into(), h != "web2");
    });
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
    let (c5, gen5) = fleet.release(&hosts, 5, "revision 5: fixed", |_, k| {
        k.services.insert("app".into(), true);
    });
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
    fleet.down();
}

/// The local hour now (the lab's hosts share this machine's `/etc/localtime`).
fn local_hour() -> u32 {
    agent_world::must(fleetgate_nix::process::Run::new("date").arg("+%H"), Duration::from_secs(10))
        .trim()
        .parse()
        .expect("an hour")
}

/// Scenario 3: a build that needs a reboot (a switch inhibitor: dbus →
/// dbus-broker) goes through a verified reboot when the host may reboot now,
/// and is a pending reboot, reported and not done, outside the window.
#[test]
fn agent_reboot_inside_the_window_is_verified_and_outside_it_is_pending() {
    let fleet = Fleet::up(&["web1=virtio,systemd-boot", "web2=nvme,grub"]);
    let hosts = ["web1", "web2"];
    let gen1 = fleet.lab.build(&hosts).expect("build");
    let h = local_hour();
    let closed = format!(
        "allow = true\nwindow = {{ lower = \"{:02}:00\", upper = \"{:02}:00\" }}\n",
        (h + 2) % 24,
        (h + 3) % 24
    );
    let always = AgentSetup { via: Via::Static, resume_unit: true, ..AgentSetup::default() };
    let outside = AgentSetup { via: Via::Static, reboot: closed, ..AgentSetup::default() };
    let gen2 = fleet.install_agents(&[("web1", always), ("web2", outside)]);
    let (c3, gen3) = fleet.release(&hosts, 3, "dbus-broker", |_, k| {
        k.switch_inhibitors.insert("dbus-implementation".into(), "broker".into());
    });
    for h in hosts {
        fleet.promote(h, &c3, &gen3[h]);
    }
    // web1 boots it once, verifies it, blesses it.
    let boots = fleet.lab.status("web1").expect("status").boots;
    fleet.wait_agent("web1", 5 * MINUTES, "the verified reboot blessed", |s| result_is(s, "applied", &gen3["web1"]));
    assert!(fleet.lab.status("web1").expect("status").boots > boots, "web1 rebooted");
    fleet.assert_on("web1", &gen3["web1"], &gen3["web1"], &gen3["web1"]);
    // web2 waits for its window: pending, reported, nothing done.
    let s = fleet.wait_agent("web2", 3 * MINUTES, "a pending reboot", |s| !s["report"]["pending_reboot"].is_null());
    assert_eq!(s["report"]["pending_reboot"]["reasons"][0], "inhibitor", "{s:#}");
    assert!(
        s["report"]["pending_reboot"]["detail"].as_str().is_some_and(|d| d.contains("outside the reboot window")),
        "{s:#}"
    );
    assert_eq!(fleet.lab.status("web2").expect("status").boots, 1, "web2 did not reboot");
    fleet.assert_on("web2", &gen2["web2"], &gen1["web2"], &gen2["web2"]);
    fleet.down();
}

/// Scenarios 4 and 5: the seed incident — the next build lost the virtio
/// drivers from its initrd — is refused by the host's own pre-flight check
/// (nothing applied, the finding reported); the upstream fix heals it.
#[test]
fn agent_refuses_a_broken_initrd_and_an_upstream_fix_heals_the_host() {
    let fleet = Fleet::up(&["vps1=virtio,grub"]);
    let gen1 = fleet.lab.build(&["vps1"]).expect("build");
    let gen2 = fleet.install_agents(&[("vps1", AgentSetup { via: Via::Static, ..AgentSetup::default() })]);
    fleet
        .lab
        .edit_host("vps1", |k| {
            k.revision = 3;
            k.available_kernel_modules.retain(|m| !m.starts_with("virtio"));
        })
        .expect("edit");
    let broken = fleet.lab.build(&["vps1"]).expect("build")["vps1"].clone();
    fleet.promote("vps1", &fleet.commit("nixos-facter refactor"), &broken);
    let s = fleet.wait_agent("vps1", 3 * MINUTES, "the broken build blocked", |s| result_is(s, "blocked", &broken));
    let findings = s["report"]["result"]["findings"].as_array().expect("findings");
    assert!(findings.iter().any(|f| f["id"] == "initrd.missing-modules" && f["severity"] == "error"), "{s:#}");
    fleet.assert_on("vps1", &gen2["vps1"], &gen1["vps1"], &gen2["vps1"]);
    fleet
        .lab
        .edit_host("vps1", |k| {
            k.revision = 4;
            k.available_kernel_modules = fleetgate_lab::fixture::default_initrd_modules(fleetgate_lab::DiskBus::Virtio);
        })
        .expect("edit");
    let fixed = fleet.lab.build(&["vps1"]).expect("build")["vps1"].clone();
    fleet.promote("vps1", &fleet.commit("facter report restored"), &fixed);
    fleet.wait_agent("vps1", 3 * MINUTES, "the fix applied", |s| result_is(s, "applied", &fixed));
    fleet.assert_on("vps1", &fixed, &gen1["vps1"], &fixed);
    fleet.down();
}

fn refused_with(s: &serde_json::Value, id: &str) -> bool {
    s["report"]["result"]["outcome"] == "failed"
        && s["report"]["result"]["findings"].as_array().is_some_and(|f| f.iter().any(|f| f["id"] == id))
}

/// Scenario 6: tampered, other-host, unsigned and older (replayed) manifests
/// are refused; a closure whose narinfo is unsigned or missing is refused —
/// and the host stays where it was until the cache is right.
#[test]
fn agent_refuses_bad_manifests_and_unsigned_or_missing_narinfos() {
    let fleet = Fleet::up(&["web1=virtio,systemd-boot"]);
    let gen1 = fleet.lab.build(&["web1"]).expect("build");
    fleet.install_agents(&[("web1", AgentSetup { via: Via::HostFile, ..AgentSetup::default() })]);
    let mut manifests = Vec::new();
    let mut gens = Vec::new();
    for rev in [3, 4] {
        fleet.lab.edit_host("web1", |k| k.revision = rev).expect("edit");
        let g = fleet.lab.build(&["web1"]).expect("build")["web1"].clone();
        fleet.promote("web1", &fleet.commit(&format!("revision {rev}")), &g);
        let m = fleet.published_manifest("web1");
        fleet.put_host_manifest("web1", &m);
        fleet.wait_agent("web1", 3 * MINUTES, "applied", |s| result_is(s, "applied", &g));
        manifests.push(m);
        gens.push(g);
    }
    let (m3, m4, gen4) = (&manifests[0], &manifests[1], &gens[1]);
    // Tampered: the payload points at revision 3's system, the signature does not follow.
    let tampered = m4.replace(&gens[1][11..43], &gens[0][11..43]);
    assert_ne!(&tampered, m4);
    let mut unsigned: serde_json::Value = serde_json::from_str(m4).expect("json");
    unsigned["signatures"] = serde_json::json!([]);
    // Signed for another host.
    fleet.promote("web2", &fleet.commit("web2's"), gen4);
    let other = fleet.published_manifest("web2");
    for (doc, id) in [
        (tampered, "manifest.bad-signature"),
        (unsigned.to_string(), "manifest.unsigned"),
        (other, "manifest.other-host"),
        (m3.clone(), "manifest.older"),
    ] {
        fleet.put_host_manifest("web1", &doc);
        fleet.wait_agent("web1", 2 * MINUTES, id, |s| refused_with(s, id));
        fleet.assert_on("web1", gen4, &gen1["web1"], gen4);
    }
    // A newer build whose top narinfo lost its signature in the cache, then
    // one of its closure's narinfos is missing: refused, nothing fetched.
    fleet.lab.edit_host("web1", |k| k.revision = 5).expect("edit");
    let gen5 = fleet.lab.build(&["web1"]).expect("build")["web1"].clone();
    fleet.promote("web1", &fleet.commit("revision 5"), &gen5);
    let m5 = fleet.published_manifest("web1");
    let narinfo = fleet.cache.join(format!("{}.narinfo", &gen5[11..43]));
    let signed = std::fs::read_to_string(&narinfo).expect("narinfo");
    std::fs::write(
        &narinfo,
        signed.lines().filter(|l| !l.starts_with("Sig:")).map(|l| format!("{l}\n")).collect::<String>(),
    )
    .expect("write");
    fleet.put_host_manifest("web1", &m5);
    fleet.wait_agent("web1", 2 * MINUTES, "closure.unsigned", |s| refused_with(s, "closure.unsigned"));
    fleet.assert_on("web1", gen4, &gen1["web1"], gen4);
    std::fs::write(&narinfo, &signed).expect("restore");
    // The kernel (shared with every generation, already on the host): its narinfo goes.
    let kernel = std::fs::canonicalize(format!("{gen5}/kernel")).expect("built here").display().to_string();
    let kernel_narinfo = fleet.cache.join(format!("{}.narinfo", &kernel[11..43]));
    let kept = std::fs::read(&kernel_narinfo).expect("kernel narinfo");
    std::fs::remove_file(&kernel_narinfo).expect("rm");
    fleet.wait_agent("web1", 2 * MINUTES, "closure.missing", |s| refused_with(s, "closure.missing"));
    fleet.assert_on("web1", gen4, &gen1["web1"], gen4);
    // The cache is whole again: the same manifest goes through.
    std::fs::write(&kernel_narinfo, kept).expect("restore");
    fleet.wait_agent("web1", 3 * MINUTES, "applied", |s| result_is(s, "applied", &gen5));
    fleet.assert_on("web1", &gen5, &gen1["web1"], &gen5);
    fleet.down();
}

/// Scenario 7: the server is down — the hosts keep upgrading from the
/// static manifests and the cache, their reports queue, and arrive when the
/// server is back.
#[test]
fn agent_keeps_upgrading_while_the_server_is_down_and_its_reports_arrive_later() {
    let mut fleet = Fleet::up(&["web1=virtio,systemd-boot", "web2=sata,systemd-boot"]);
    let hosts = ["web1", "web2"];
    let gen1 = fleet.lab.build(&hosts).expect("build");
    let setup = AgentSetup { via: Via::Static, ..AgentSetup::default() };
    fleet.install_agents(&hosts.map(|h| (h, setup.clone())));
    fleet.stop_serve();
    let (c3, gen3) = fleet.release(&hosts, 3, "revision 3, while the server is down", |_, _| {});
    for h in hosts {
        fleet.promote(h, &c3, &gen3[h]);
    }
    for h in hosts {
        let s = fleet.wait_agent(h, 3 * MINUTES, "applied, its report queued", |s| {
            result_is(s, "applied", &gen3[h]) && s["reports_queued"].as_u64().is_some_and(|n| n > 0)
        });
        assert!(s["report"]["current"] == gen3[h].as_str(), "{s:#}");
        fleet.assert_on(h, &gen3[h], &gen1[h], &gen3[h]);
    }
    fleet.start_serve();
    let arrived = agent_world::poll_until(2 * MINUTES, || {
        let v = fleet.server_status();
        let all = hosts.iter().all(|h| {
            v["hosts"].as_array().is_some_and(|hs| {
                hs.iter().any(|x| x["host"] == *h && x["report"]["commit"] == c3 && x["report"]["status"] == "applied")
            })
        });
        all.then_some(v)
    });
    assert!(arrived.is_some(), "the queued reports arrived: {:#}", fleet.server_status());
    for h in hosts {
        fleet.wait_agent(h, MINUTES, "the queue drained", |s| s["reports_queued"] == 0);
        fleet.assert_on(h, &gen3[h], &gen1[h], &gen3[h]);
    }
    fleet.down();
}

/// Scenario 8: the agent is SIGKILLed mid-apply (its new generation is
/// active, health checks still running, nothing confirmed). Restarted, it
/// finds the run it did not finish, has the watchdog roll back, records the
/// interrupted attempt — the host on its known-good generation — and then
/// tries again and succeeds.
#[test]
fn agent_killed_mid_apply_finds_a_known_good_generation_and_tries_again() {
    let fleet = Fleet::up(&["web1=virtio,systemd-boot"]);
    let gen1 = fleet.lab.build(&["web1"]).expect("build");
    let setup = AgentSetup {
        via: Via::Static,
        health_commands: vec!["test -e /run/fleetgate-test-go".into()],
        ..AgentSetup::default()
    };
    let gen2 = fleet.install_agents(&[("web1", setup)])["web1"].clone();
    fleet.lab.edit_host("web1", |k| k.revision = 3).expect("edit");
    let gen3 = fleet.lab.build(&["web1"]).expect("build")["web1"].clone();
    let c3 = fleet.commit("revision 3");
    fleet.promote("web1", &c3, &gen3);
    // Its health checks wait for the go file: it is mid-apply.
    let mid = agent_world::poll_until(3 * MINUTES, || {
        let log = fleet.agent_log("web1");
        log.contains(&format!("switching live to commit {}", &c3[..12]))
            .then_some(())
            .filter(|()| log.contains("engine: health"))
    });
    assert!(mid.is_some(), "{}", fleet.agent_log("web1"));
    assert_eq!(
        fleet.lab.ssh("web1", "readlink -f /run/current-system").expect("ssh").trim(),
        gen3,
        "activated, unconfirmed"
    );
    fleet.kill_agent("web1");
    fleet.lab.ssh("web1", "touch /run/fleetgate-test-go").expect("ssh");
    fleet.restart_agent("web1");
    let s = fleet.wait_agent("web1", 3 * MINUTES, "applied after the interruption", |s| result_is(s, "applied", &gen3));
    let log = fleet.agent_log("web1");
    assert!(log.contains("the agent was stopped during run"), "{log}");
    assert!(log.contains("the host rolled back to the previous generation"), "{log}");
    assert!(s["bad"].as_array().is_some_and(Vec::is_empty), "{s:#}");
    assert_ne!(gen2, gen3);
    fleet.assert_on("web1", &gen3, &gen1["web1"], &gen3);
    fleet.down();
}
