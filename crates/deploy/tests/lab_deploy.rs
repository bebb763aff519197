//! `fleetgate deploy` on lab hosts: live switches with magic rollback and
//! verified reboots that end, every time, with each host on a known-good
//! generation. Needs root, like the lab.

mod common;

use common::*;
use fleetgate_deploy::{Action, Outcome};
use fleetgate_lab::testing::LabGuard;

#[test]
fn lab_switch_live_then_inhibitor_goes_boot_with_verified_reboot() {
    let lab = LabGuard::up(&["web1=virtio,systemd-boot", "db1=sata,grub"]).expect("lab");
    let first = lab.build(&["web1", "db1"]).expect("build");

    // A plain change switches live, confirmed under the watchdog.
    for h in ["web1", "db1"] {
        lab.edit_host(h, |k| k.revision = 2).expect("edit");
    }
    let second = lab.build(&["web1", "db1"]).expect("build");
    let logins_before = ["web1", "db1"].map(|h| logins(&lab, h));
    let report = deploy(&lab, &[], &options());
    assert_eq!(report.exit_code, 0, "{}", report.human());
    for (i, h) in ["web1", "db1"].into_iter().enumerate() {
        let r = host(&report, h);
        assert_eq!((r.action, r.outcome), (Some(Action::Switch), Outcome::Deployed), "{h}: {}", r.message);
        assert_eq!(r.previous_system.as_deref(), Some(first[h].as_str()));
        // Issue 15: the shared connection (facts, copy, activation, health)
        // and the one fresh login that proves logins work and confirms.
        // (`logins` itself logs in once: the second read counts the first.)
        assert_eq!(logins(&lab, h) - logins_before[i] - 1, 2, "{h}: SSH logins of a live switch");
        assert_on(&lab, h, &second[h]);
    }

    // dbus → broker is a switch inhibitor: boot once, verify, bless.
    for h in ["web1", "db1"] {
        lab.edit_host(h, |k| {
            k.revision = 3;
            k.switch_inhibitors.insert("dbus-implementation".into(), "broker".into());
        })
        .expect("edit");
    }
    let third = lab.build(&["web1", "db1"]).expect("build");
    let report = deploy(&lab, &[], &options());
    assert_eq!(report.exit_code, 0, "{}", report.human());
    for h in ["web1", "db1"] {
        let r = host(&report, h);
        assert_eq!((r.action, r.outcome), (Some(Action::Boot), Outcome::Deployed), "{h}: {}", r.message);
        assert_eq!(r.booted_healthy.as_deref(), Some(third[h].as_str()));
        assert_eq!(readlink(&lab, h, "/nix/var/nix/gcroots/fleetgate/last-good"), third[h]);
        assert_on(&lab, h, &third[h]);
    }
    // Nothing to do the second time — and the opening round trip that saw
    // that released the deploy lock itself (issue 15: one round trip).
    let report = deploy(&lab, &[], &options());
    assert!(report.hosts.iter().all(|h| h.outcome == Outcome::UpToDate), "{}", report.human());
    for h in ["web1", "db1"] {
        let lock = lab.ssh(h, "test -e /run/fleetgate/lock && echo locked || echo free").expect("ssh");
        assert_eq!(lock.trim(), "free", "{h}: the up-to-date host's lock");
    }
    assert!(lab.down().expect("down").is_empty());
}

/// The seed incident (product.md §1): two virtio VPSes; the new generation
/// switches dbus → broker and its initrd lost the virtio drivers.
#[test]
fn seed_incident_blocked_then_forced_hangs_power_cycle_back_on_previous() {
    let lab = LabGuard::up(&["vps1=virtio,systemd-boot", "vps2=virtio,grub"]).expect("lab");
    let first = lab.build(&["vps1", "vps2"]).expect("build");
    write_config(
        &lab,
        &format!("[defaults]\npower_cycle = \"{}\"\nhealth.units = [\"app.service\"]\n", power_cycle_command(&lab)),
    );
    for h in ["vps1", "vps2"] {
        lab.edit_host(h, |k| {
            k.revision = 2;
            k.switch_inhibitors.insert("dbus-implementation".into(), "broker".into());
            k.available_kernel_modules.retain(|m| !m.starts_with("virtio"));
        })
        .expect("edit");
    }
    let bad = lab.build(&["vps1", "vps2"]).expect("build");

    // Blocked: nothing pushed, and the report says why.
    let report = deploy(&lab, &[], &options());
    assert_eq!(report.exit_code, 1, "{}", report.human());
    for h in ["vps1", "vps2"] {
        let r = host(&report, h);
        assert_eq!((r.action, r.outcome), (Some(Action::Blocked), Outcome::Blocked), "{h}: {}", r.message);
        assert!(!valid_on(&lab, h, &bad[h]), "{h}: nothing was pushed");
        assert_eq!(readlink(&lab, h, "/run/current-system"), first[h]);
    }
    let human = report.human();
    assert!(human.contains("virtio_blk") && human.contains("nothing was pushed"), "{human}");

    // Forced: verified reboot → hang → power-cycle → previous generation.
    let mut forced = options();
    forced.force = true;
    let report = deploy(&lab, &[], &forced);
    assert_eq!(report.exit_code, 1, "{}", report.human());
    for h in ["vps1", "vps2"] {
        let r = host(&report, h);
        assert_eq!((r.action, r.outcome), (Some(Action::Boot), Outcome::Failed), "{h}");
        assert!(r.rolled_back, "{h}: {}", r.message);
        assert!(r.message.contains("power-cycled") && r.message.contains("previous generation"), "{h}: {}", r.message);
        assert!(r.phases.iter().any(|p| p.phase == fleetgate_deploy::events::Phase::PowerCycle), "{h}");
        assert!(
            lab.console(h).expect("console").contains("A start job is running for /dev/disk/by-label/NIXOS_ROOT"),
            "{h} really hung"
        );
        assert_on(&lab, h, &first[h]);
    }
    assert!(lab.down().expect("down").is_empty());
}

/// The copy reports its progress on the bus, in NAR bytes: before any byte
/// the total (the NAR sizes of the closure's paths the host lacks, asked of
/// the host), then bytes as Nix sends each path, then `Copied` with what was
/// sent — which is the sum of `narSize` (`nix path-info --json`) over the
/// paths that were not on the host before. (Not the closure size of
/// `nix path-info -S`: the host already has most of the closure; with Nix
/// 2.8 the bytes move one path at a time.) The test tells which paths the
/// host lacked its own way: whether the store path exists on its disk.
#[test]
fn lab_copy_reports_progress_in_nar_bytes_of_the_paths_the_host_lacked() {
    use fleetgate_deploy::events::{Bus, EventKind, Phase};

    let lab = LabGuard::up(&["web1=virtio,systemd-boot"]).expect("lab");
    lab.build(&["web1"]).expect("build");
    // A new initrd (another module in it) and a new kernel command line: megabytes to copy.
    lab.edit_host("web1", |k| {
        k.revision = 2;
        k.kernel_modules.push("nvme".into());
        k.kernel_params.push("fleetgate.test=copy".into());
    })
    .expect("edit");
    let new = lab.build(&["web1"]).expect("build")["web1"].clone();
    let (closure, _) = nix().path_info(None, std::slice::from_ref(&new), true, false).expect("path-info");
    let on_host: Vec<bool> = closure
        .iter()
        .map(|p| lab.ssh("web1", &format!("test -e {} && echo yes || echo no", p.path)).expect("ssh").trim() == "yes")
        .collect();
    let lacked: Vec<_> = closure.iter().zip(&on_host).filter(|(_, on)| !**on).map(|(p, _)| p).collect();
    let expected: u64 = lacked.iter().map(|p| p.nar_size).sum();
    assert!(lacked.len() >= 2 && lacked.len() < closure.len(), "{} of {} paths lacked", lacked.len(), closure.len());
    assert!(expected > 1 << 20, "{expected}");

    let (tx, rx) = std::sync::mpsc::channel();
    let report = deploy_with(&lab, &[], &options(), None, Bus::new(tx));
    assert_eq!(report.exit_code, 0, "{}", report.human());
    assert_eq!(host(&report, "web1").copied_bytes, Some(expected));
    let events: Vec<EventKind> = rx.try_iter().filter(|e| e.host == "web1").map(|e| e.kind).collect();
    let copy_start = events.iter().position(|k| *k == EventKind::Phase(Phase::Copy)).expect("a copy phase");
    let copy: Vec<&EventKind> =
        events[copy_start + 1..].iter().take_while(|k| !matches!(k, EventKind::Phase(_))).collect();
    let progress: Vec<(u64, Option<u64>)> = copy
        .iter()
        .filter_map(|k| match k {
            EventKind::CopyProgress { done_bytes, expected_bytes } => Some((*done_bytes, *expected_bytes)),
            _ => None,
        })
        .collect();
    assert_eq!(progress.first(), Some(&(0, Some(expected))), "the total before any byte: {copy:?}");
    assert!(progress.iter().all(|(d, e)| *e == Some(expected) && *d <= expected), "{copy:?}");
    assert!(progress.windows(2).all(|w| w[0].0 <= w[1].0), "{copy:?}");
    assert_eq!(copy.last(), Some(&&EventKind::Copied { bytes: expected, paths: lacked.len() as u64 }), "{copy:?}");
    assert_on(&lab, "web1", &new);
    assert!(lab.down().expect("down").is_empty());
}
