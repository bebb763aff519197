//! The human form of a run report (the final table and the reasons below
//! it) and the JSON document, pinned with insta.

use fleetgate_deploy::events::{Phase, PhaseRecord};
use fleetgate_deploy::report::{FORMAT, exit_code};
use fleetgate_deploy::{Action, HostReport, Outcome, RunReport, Standing};
use fleetgate_facts::{Finding, Severity};

fn sys(name: &str) -> Option<String> {
    Some(format!("/nix/store/00000000000000000000000000000000-nixos-system-{name}"))
}

fn report() -> RunReport {
    let mut web1 =
        HostReport::untouched("web1", Outcome::Deployed, "booted the new generation once, healthy, now the default");
    web1.action = Some(Action::Boot);
    web1.previous_system = sys("web1-r1");
    web1.new_system = sys("web1-r2");
    web1.running_system = sys("web1-r2");
    web1.booted_healthy = sys("web1-r2");
    web1.copied_bytes = Some(42_047_898);
    web1.phases =
        vec![PhaseRecord { phase: Phase::Copy, start_ms: 10, duration_ms: 1200, ok: true, detail: String::new() }];
    let mut vps1 = HostReport::untouched(
        "vps1",
        Outcome::Failed,
        "the host did not come back within 300 s from booting the new generation (hung in stage 1?); it was power-cycled and came back on the previous generation; the previous generation is the default again. Nothing is left to repair by hand.",
    );
    vps1.action = Some(Action::Boot);
    vps1.rolled_back = true;
    vps1.previous_system = sys("vps1-r1");
    vps1.new_system = sys("vps1-r2");
    vps1.running_system = sys("vps1-r1");
    vps1.findings = vec![
        Finding::new(
            "initrd.missing-modules",
            Severity::Error,
            "the new initrd cannot see the root disk: virtio_blk, virtio_pci are missing",
        )
        .with_fix("add them to boot.initrd.availableKernelModules"),
        Finding::new("switch.refused", Severity::Warning, "dbus-implementation : dbus -> broker"),
    ];
    let db1 = HostReport::untouched(
        "db1",
        Outcome::Unreachable,
        "ssh://root@db1 is unreachable: Connection refused; nothing was done (retry with `fleetgate deploy --resume`)",
    );
    let hosts = vec![web1, vps1, db1];
    RunReport {
        format: FORMAT,
        run_id: "1700000000-000001-42".into(),
        flake: "path:/srv/fleet".into(),
        strategy: "canary".into(),
        started_at: 1_700_000_000,
        duration_ms: 95_000,
        exit_code: exit_code(&hosts),
        hosts,
    }
}

#[test]
fn human_report() {
    insta::assert_snapshot!(report().human());
}

#[test]
fn json_report() {
    insta::assert_snapshot!(report().to_json());
}

#[test]
fn unknown_state_is_exit_3() {
    let mut r = report();
    r.hosts[2].standing = Standing::Unknown;
    r.exit_code = exit_code(&r.hosts);
    assert_eq!(r.exit_code, 3);
    assert!(r.human().contains("a human must look"));
    r.hosts.retain(|h| h.outcome.is_ok());
    assert_eq!(exit_code(&r.hosts), 0);
}

/// Issue 8: a blocked deploy said its fix three times and that `--resume`
/// would retry it. Now the reason once, each finding's fix once, and what
/// to do next.
#[test]
fn a_blocked_run_says_each_fix_once_and_does_not_offer_resume() {
    let mut vps2 = HostReport::untouched(
        "vps2",
        Outcome::Blocked,
        "the plan is blocked, nothing was pushed (see the findings below)",
    );
    vps2.action = Some(Action::Blocked);
    vps2.findings = vec![
        Finding::new("initrd.missing-modules", Severity::Error, "virtio_blk, virtio_pci are missing")
            .with_fix("boot.initrd.availableKernelModules = [ \"virtio_blk\" \"virtio_pci\" ];"),
    ];
    let hosts = vec![vps2];
    let r = RunReport {
        format: FORMAT,
        run_id: "r".into(),
        flake: ".".into(),
        strategy: "all".into(),
        started_at: 0,
        duration_ms: 1,
        exit_code: exit_code(&hosts),
        hosts,
    };
    let human = r.human();
    assert_eq!(human.matches("availableKernelModules").count(), 1, "{human}");
    assert!(!human.contains("--resume"), "{human}");
    assert!(human.contains("fix the findings above, then deploy again"), "{human}");
}
