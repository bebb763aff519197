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
    let report = deploy(&lab, &[], &options());
    assert_eq!(report.exit_code, 0, "{}", report.human());
    for h in ["web1", "db1"] {
        let r = host(&report, h);
        assert_eq!((r.action, r.outcome), (Some(Action::Switch), Outcome::Deployed), "{h}: {}", r.message);
        assert_eq!(r.previous_system.as_deref(), Some(first[h].as_str()));
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
    // Nothing to do the second time.
    let report = deploy(&lab, &[], &options());
    assert!(report.hosts.iter().all(|h| h.outcome == Outcome::UpToDate), "{}", report.human());
    assert!(lab.down().expect("down").is_empty());
}
