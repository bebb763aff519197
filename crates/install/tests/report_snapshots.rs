//! The report `fleetgate install` prints (plain and `--json`), against the
//! scripted fake: the CLI prints exactly [`InstallReport::human`] and the
//! JSON of [`InstallReport`].

use std::time::Duration;

use fleetgate_check::{Decision, Report};
use fleetgate_facts::{Facts, Finding, Severity};
use fleetgate_install::enrol::{EnrolFile, Enrolment};
use fleetgate_install::fake::{BootEffect, FakeTarget, KexecEffect};
use fleetgate_install::kexec::Nonce;
use fleetgate_install::layout::Layout;
use fleetgate_install::protocol::{Quiet, install};
use fleetgate_install::{InstallReport, Phases, Plan, SystemCheck};
use fleetgate_system::RootSpec;

struct Check(Vec<Finding>);

impl SystemCheck for Check {
    fn check(&self, facts: &Facts, _: Duration) -> Report {
        Report {
            format: 1,
            target: facts.target.clone(),
            system: "/nix/store/s-nixos-system-web1".into(),
            current: None,
            booted: None,
            decision: if self.0.is_empty() { Decision::Boot } else { Decision::Blocked },
            next_step: String::new(),
            closure: None,
            findings: self.0.clone(),
        }
    }
    fn needed_devices(&self) -> Vec<(String, RootSpec)> {
        vec![("/".into(), RootSpec::parse("/dev/disk/by-partlabel/disk-main-root"))]
    }
}

fn run(target: &mut FakeTarget, check: &Check) -> InstallReport {
    run_enrolling(target, check, Enrolment::default())
}

fn run_enrolling(target: &mut FakeTarget, check: &Check, enrol: Enrolment) -> InstallReport {
    let plan = Plan {
        flake: ".#web1".into(),
        target: "ssh://root@192.0.2.10".into(),
        system: "/nix/store/s-nixos-system-web1".into(),
        disko_script: "/nix/store/d-disko".into(),
        layout: Layout::parse(r#"{"main":{"device":"/dev/vda","partitions":{"root":{"type":"filesystem","format":"ext4","mountpoint":"/"}}}}"#)
            .expect("layout"),
        phases: Phases::default(),
        deadlines: Plan::default_deadlines(),
        nonce: Nonce::parse("00112233445566778899aabbccddeeff").expect("nonce"),
        enrol,
    };
    install(target, check, &plan, &mut Quiet)
}

#[test]
fn installed() {
    let r = run(&mut FakeTarget::new(), &Check(Vec::new()));
    insta::assert_snapshot!(r.human());
}

#[test]
fn seed_001_kexec_that_does_nothing() {
    let mut t = FakeTarget::new();
    t.kexec = KexecEffect::Nothing;
    let r = run(&mut t, &Check(Vec::new()));
    insta::assert_snapshot!(r.human());
    insta::assert_snapshot!("seed_001_json", r.to_json());
}

#[test]
fn seed_000_initrd_without_virtio_blk() {
    let finding = Finding::new(
        "initrd.missing-module",
        Severity::Error,
        "the root disk's driver virtio_blk is neither built into the kernel nor in the initrd",
    )
    .with_fix("add \"virtio_blk\" to boot.initrd.availableKernelModules (--generate-hardware-config writes it)");
    let r = run(&mut FakeTarget::new(), &Check(vec![finding]));
    insta::assert_snapshot!(r.human());
}

#[test]
fn first_boot_hangs() {
    let mut t = FakeTarget::new();
    t.boot = BootEffect::Hangs(vec![
        "<<< NixOS Stage 1 >>>".into(),
        "waiting for device /dev/disk/by-partlabel/disk-main-root to appear.......... timed out".into(),
    ]);
    let r = run(&mut t, &Check(Vec::new()));
    insta::assert_snapshot!(r.human());
    insta::assert_snapshot!("first_boot_hangs_json", r.to_json());
}

#[test]
fn installed_and_enrolled_for_the_agent() {
    let token =
        EnrolFile { path: "/var/lib/secrets/fleetgate-token".into(), mode: 0o400, contents: b"s3cret\n".to_vec() };
    let r = run_enrolling(&mut FakeTarget::new(), &Check(Vec::new()), Enrolment::new(vec![token]).expect("valid"));
    insta::assert_snapshot!(r.human());
    insta::assert_snapshot!("installed_and_enrolled_for_the_agent_json", r.to_json());
}
