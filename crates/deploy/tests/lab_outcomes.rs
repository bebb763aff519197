//! Deploy outcomes that were wrong (issue 8): `--reboot` right after a live
//! switch was misread as "the one-time boot was not honoured" and rolled
//! back; deploying what a host already runs switched again; a dry run with
//! a canary stopped at the canary (the CLI test `deploy_cli` checks that it
//! is not stored in history). Needs root,
//! like the lab.

mod common;

use common::*;
use fleetgate_deploy::events::Bus;
use fleetgate_deploy::{Action, Outcome, Strategy};
use fleetgate_lab::testing::LabGuard;

#[test]
fn reboot_after_a_switch_after_a_reboot_and_on_a_current_host() {
    let lab = LabGuard::up(&["host2=virtio,systemd-boot", "host3=sata,grub"]).expect("lab");
    let first = lab.build(&["host2", "host3"]).expect("build");
    for h in ["host2", "host3"] {
        lab.edit_host(h, |k| k.revision = 2).expect("edit");
    }
    let second = lab.build(&["host2", "host3"]).expect("build");

    // A live switch.
    let report = deploy(&lab, &[], &options());
    assert_eq!(report.exit_code, 0, "{}", report.human());
    for h in ["host2", "host3"] {
        assert_eq!(readlink(&lab, h, "/run/booted-system"), first[h], "{h} booted the first generation");
    }

    // The same system again: up to date, nothing done (it switched again before).
    let report = deploy(&lab, &[], &options());
    assert_eq!(report.exit_code, 0, "{}", report.human());
    for h in ["host2", "host3"] {
        let r = host(&report, h);
        assert_eq!((r.action, r.outcome), (Some(Action::UpToDate), Outcome::UpToDate), "{h}: {}", r.message);
        assert!(r.phases.iter().all(|p| p.phase != fleetgate_deploy::events::Phase::Copy), "{h}: no copy");
    }

    // `--reboot` right after the switch: the switched system boots once,
    // the generation that booted is the fallback, and it is blessed.
    let mut reboot = options();
    reboot.reboot = true;
    reboot.strategy = Strategy::Canary;
    let report = deploy(&lab, &[], &reboot);
    assert_eq!(report.exit_code, 0, "{}", report.human());
    for h in ["host2", "host3"] {
        let r = host(&report, h);
        assert_eq!(
            (r.action, r.outcome, r.rolled_back),
            (Some(Action::Boot), Outcome::Deployed, false),
            "{h}: {}",
            r.message
        );
        assert_eq!(readlink(&lab, h, "/run/booted-system"), second[h], "{h} booted the new generation");
        assert_on(&lab, h, &second[h]);
    }

    // `--reboot` after that reboot, on a host that runs and booted it: up to date.
    let report = deploy(&lab, &[], &reboot);
    assert_eq!(report.exit_code, 0, "{}", report.human());
    assert!(report.hosts.iter().all(|h| h.outcome == Outcome::UpToDate), "{}", report.human());
    assert!(lab.down().expect("down").is_empty());
}

#[test]
fn dry_run_with_a_canary_previews_every_host_and_is_not_history() {
    let lab = LabGuard::up(&["web1=virtio,systemd-boot", "web2=nvme,grub"]).expect("lab");
    let first = lab.build(&["web1", "web2"]).expect("build");
    lab.edit_host("web1", |k| k.revision = 2).expect("edit");
    lab.edit_host("web2", |k| {
        k.revision = 2;
        k.switch_inhibitors.insert("dbus-implementation".into(), "broker".into());
    })
    .expect("edit");
    let mut dry = options();
    dry.dry_run = true;
    dry.strategy = Strategy::Canary;
    let report = deploy_with(&lab, &[], &dry, None, Bus::silent());
    assert_eq!(report.exit_code, 0, "{}", report.human());
    let web1 = host(&report, "web1");
    assert_eq!((web1.action, web1.outcome), (Some(Action::Switch), Outcome::Planned), "{}", web1.message);
    assert!(web1.message.contains("would switch live"), "{}", web1.message);
    let web2 = host(&report, "web2");
    assert_eq!((web2.action, web2.outcome), (Some(Action::Boot), Outcome::Planned), "{}", web2.message);
    assert!(web2.message.contains("would boot") && web2.message.contains("fallback"), "{}", web2.message);
    for h in ["web1", "web2"] {
        assert_eq!(readlink(&lab, h, "/run/current-system"), first[h], "{h}: nothing changed");
    }
    assert!(lab.down().expect("down").is_empty());
}
