//! Deploy outcomes that were wrong (issue 8): `--reboot` right after a live
//! switch was misread as "the one-time boot was not honoured" and rolled
//! back; deploying what a host already runs switched again; a dry run with
//! a canary stopped at the canary (the CLI test `deploy_cli` checks that it
//! is not stored in history). Needs root,
//! like the lab.

mod common;

use common::*;
use fleetgate_deploy::events::Bus;
use fleetgate_deploy::{Action, Outcome, Standing, Strategy};
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

/// Boot debt (product.md §1): the default was switched live to a driverless
/// generation that never booted. A verified reboot of another driverless
/// generation keeps the generation that BOOTED as its fallback, and the
/// failing one-shot comes back on it after the power-cycle.
#[test]
fn boot_debt_the_fallback_is_the_booted_generation_and_a_failing_one_shot_comes_back_on_it() {
    let lab = LabGuard::up(&["vps1=virtio,systemd-boot"]).expect("lab");
    let booted = lab.build(&["vps1"]).expect("build")["vps1"].clone();
    write_config(&lab, &format!("[defaults]\npower_cycle = \"{}\"\n", power_cycle_command(&lab)));
    let driverless = |revision| {
        lab.edit_host("vps1", |k| {
            k.revision = revision;
            k.available_kernel_modules.retain(|m| !m.starts_with("virtio"));
        })
        .expect("edit");
    };
    // As an operator would with `nixos-rebuild switch`: the driverless
    // generation copied, made the profile and switched to live (the default).
    driverless(2);
    let debt = lab.build(&["vps1"]).expect("build")["vps1"].clone();
    let inventory = fleetgate_deploy::Inventory::load(&nix(), &flake(&lab), None).expect("inventory");
    let vps1 = &inventory.hosts["vps1"];
    let copied = std::process::Command::new("nix")
        .args(["copy", "--to", &fleetgate_deploy::copy::store_uri(vps1).expect("uri"), &debt])
        .env("NIX_SSHOPTS", fleetgate_deploy::copy::nix_sshopts(vps1))
        .env("NIX_CONFIG", fleetgate_lab::lab::NIX_CONFIG)
        .status()
        .expect("nix copy");
    assert!(copied.success());
    lab.ssh(
        "vps1",
        &format!("nix-env -p /nix/var/nix/profiles/system --set {debt} && {debt}/bin/switch-to-configuration switch"),
    )
    .expect("switch");
    assert_eq!(readlink(&lab, "vps1", "/run/current-system"), debt);
    assert_eq!(readlink(&lab, "vps1", "/run/booted-system"), booted, "the switched generation never booted");
    let mut forced = options();
    forced.force = true;

    driverless(3);
    forced.reboot = true;
    let report = deploy(&lab, &[], &forced);
    let r = host(&report, "vps1");
    assert_eq!(
        (r.action, r.outcome, r.standing),
        (Some(Action::Boot), Outcome::Failed, Standing::KnownGood),
        "{}",
        r.message
    );
    assert!(r.rolled_back && r.message.contains("power-cycled"), "{}", r.message);
    assert_on(&lab, "vps1", &booted);
    assert!(lab.down().expect("down").is_empty());
}

/// `fleetgate rollback`: back to the generation the last verified reboot
/// proved — live when the host booted from it, else with a verified reboot.
#[test]
fn rollback_goes_back_to_the_last_known_good_generation() {
    let lab = LabGuard::up(&["web1=virtio,grub"]).expect("lab");
    lab.build(&["web1"]).expect("build");
    lab.edit_host("web1", |k| {
        k.revision = 2;
        k.switch_inhibitors.insert("dbus-implementation".into(), "broker".into());
    })
    .expect("edit");
    let good = lab.build(&["web1"]).expect("build")["web1"].clone();
    let report = deploy(&lab, &[], &options());
    assert_eq!(host(&report, "web1").booted_healthy.as_deref(), Some(good.as_str()), "{}", report.human());
    lab.edit_host("web1", |k| k.revision = 3).expect("edit");
    let third = lab.build(&["web1"]).expect("build")["web1"].clone();
    assert_eq!(deploy(&lab, &[], &options()).exit_code, 0);
    assert_eq!(readlink(&lab, "web1", "/run/current-system"), third);

    let nix = nix();
    let inventory = fleetgate_deploy::Inventory::load(&nix, &flake(&lab), None).expect("inventory");
    let hosts = vec!["web1".to_owned()];
    // Booted from the known-good generation: switched back live.
    let report = fleetgate_deploy::rollback::rollback(&nix, &inventory, &hosts, &options(), &Bus::silent(), None)
        .expect("rollback");
    let r = host(&report, "web1");
    assert_eq!((r.action, r.outcome), (Some(Action::Switch), Outcome::Deployed), "{}", report.human());
    assert_on(&lab, "web1", &good);

    // Booted from another one (the third, deployed and rebooted into): a verified reboot.
    assert_eq!(deploy(&lab, &[], &options()).exit_code, 0);
    lab.reboot("web1").expect("reboot");
    assert_eq!(readlink(&lab, "web1", "/run/booted-system"), third);
    let report = fleetgate_deploy::rollback::rollback(&nix, &inventory, &hosts, &options(), &Bus::silent(), None)
        .expect("rollback");
    let r = host(&report, "web1");
    assert_eq!((r.action, r.outcome), (Some(Action::Boot), Outcome::Deployed), "{}", report.human());
    assert_on(&lab, "web1", &good);
    // Nothing to do the second time.
    let report = fleetgate_deploy::rollback::rollback(&nix, &inventory, &hosts, &options(), &Bus::silent(), None)
        .expect("rollback");
    assert_eq!(host(&report, "web1").outcome, Outcome::UpToDate, "{}", report.human());
    assert!(lab.down().expect("down").is_empty());
}
