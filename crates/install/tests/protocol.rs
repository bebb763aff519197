//! Every exit of the install protocol, against the scripted fake target.

use std::time::Duration;

use fleetgate_facts::{Finding, Severity};
use fleetgate_install::fake::{BootEffect, FakeSystem as Scripted, FakeTarget, KexecEffect, Running, plan};
use fleetgate_install::protocol::{Quiet, install};
use fleetgate_install::report::PhaseResult;
use fleetgate_install::target::{DiskUse, DiskUser, Health, MountLine, TargetError};
use fleetgate_install::{InstallReport, Outcome, Phase, Standing};
use fleetgate_system::RootSpec;

fn run(target: &mut FakeTarget, check: &Scripted, phases: &str) -> InstallReport {
    install(target, check, &plan(phases), &mut Quiet)
}

const ALL: &str = "kexec,disko,install,reboot";

fn result_of(r: &InstallReport, phase: Phase) -> PhaseResult {
    r.phases.iter().find(|p| p.phase == phase).map(|p| p.result).expect("every phase has a record")
}

#[test]
fn a_full_install_proves_every_phase() {
    let mut t = FakeTarget::new();
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!(r.outcome, Outcome::Installed, "{}", r.human());
    assert_eq!(r.standing, Standing::Booted);
    assert_eq!(r.exit_code(), 0);
    assert!(Phase::ALL.iter().all(|p| result_of(&r, *p) == PhaseResult::Proven));
    assert_eq!(t.running, Running::Installed);
    assert_eq!(t.kept.as_ref().map(|f| f.target.as_str()), Some("ssh://root@192.0.2.10"), "pre-flight facts kept");
    let kexec = &r.phases[1].proof;
    assert!(kexec.iter().any(|l| l == "boot id boot-1 → boot-2"), "{kexec:?}");
    assert!(kexec.iter().any(|l| l.contains("fleetgate.install=0123456789abcdef0123456789abcdef")));
    assert!(r.phases[2].proof.iter().any(|l| l.contains("PARTLABEL=disk-main-root → /dev/vda2, mounted at /mnt")));
    assert!(r.phases[3].proof[0].contains("default entry boots /nix/store/s-nixos-system-web1-25.05"));
    assert_eq!(r.resume, None);
}

#[test]
fn a_kexec_that_reports_success_and_does_nothing_stops_with_disks_untouched() {
    let mut t = FakeTarget::new();
    t.kexec = KexecEffect::Nothing;
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(r.standing, Standing::OldOsUntouched);
    assert_eq!(result_of(&r, Phase::Kexec), PhaseResult::Failed);
    assert_eq!(result_of(&r, Phase::Disko), PhaseResult::NotReached);
    let error = r.phases[1].error.as_deref().unwrap_or_default();
    assert!(error.contains("the old OS still runs: boot id boot-1 unchanged"), "{error}");
    // Nothing was loaded for kexec: said at once, not at the deadline.
    assert!(error.contains("/sys/kernel/kexec_loaded is 0"), "{error}");
    assert!(r.phases[1].seconds < 60, "waited {} s", r.phases[1].seconds);
    assert!(t.called("wait_for_boot: NothingLoadedForKexec"), "{:?}", t.calls);
    assert!(!t.called("disk_users") && !t.called("run_disko") && !t.disks_written, "{:?}", t.calls);
    assert_eq!(
        r.resume.as_deref(),
        Some("fleetgate install .#web1 --target ssh://root@192.0.2.10 --phases kexec,disko,install,reboot")
    );
}

/// A kernel loaded for kexec while the old OS still answers (its `kexec -e`
/// failed, or has not run yet), or a run whose connection was cut (it may
/// still be loading): only the deadline ends the wait.
#[test]
fn a_kexec_still_loaded_or_a_run_cut_off_waits_for_the_deadline() {
    let mut t = FakeTarget::new();
    t.kexec = KexecEffect::Nothing;
    t.old_kexec_loaded = Some(true);
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!((r.outcome, r.standing), (Outcome::Failed, Standing::OldOsUntouched));
    let error = r.phases[1].error.as_deref().unwrap_or_default();
    assert!(!error.contains("kexec_loaded"), "{error}");
    assert!(r.phases[1].seconds >= 500, "waited only {} s", r.phases[1].seconds);

    let mut t = FakeTarget::new();
    t.kexec = KexecEffect::Nothing;
    t.fail.insert("start_kexec", TargetError::Lost("connection closed".into()));
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!((r.outcome, r.standing), (Outcome::Failed, Standing::OldOsUntouched));
    assert!(t.called("wait_for_boot: AtDeadline"), "{:?}", t.calls);
    assert!(r.phases[1].seconds >= 500, "waited only {} s", r.phases[1].seconds);
}

#[test]
fn a_kexec_into_something_else_is_not_the_installer() {
    let mut t = FakeTarget::new();
    t.kexec = KexecEffect::BootsOther;
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!(r.standing, Standing::NotTheInstaller);
    assert!(r.phases[1].error.as_deref().unwrap_or_default().contains("is not in /proc/cmdline"));
    assert!(!t.called("run_disko"));
}

#[test]
fn a_kexec_after_which_nothing_answers_is_unknown() {
    let mut t = FakeTarget::new();
    t.kexec = KexecEffect::Hangs;
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!(r.outcome, Outcome::Unknown);
    assert_eq!(r.exit_code(), 3);
    assert_eq!(r.resume, None, "no resume from an unknown state");
    assert!(!t.called("run_disko"));
    // What the console says is where the operator looks next.
    assert_eq!(r.console_tail, ["kexec_core: Starting new kernel"]);
    assert!(r.human().contains("| kexec_core: Starting new kernel"), "{}", r.human());
}

#[test]
fn an_installer_with_a_disk_mounted_is_not_proven() {
    let mut t = FakeTarget::new();
    t.installer_disk_mounts = vec![MountLine { source: "/dev/vda1".into(), mount_point: "/old-root".into() }];
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!(r.standing, Standing::InstallerDisksUntouched);
    assert!(r.phases[1].error.as_deref().unwrap_or_default().contains("/dev/vda1 at /old-root"));
    assert!(!t.called("run_disko"));
}

fn refused_disko(user: DiskUse) -> (InstallReport, FakeTarget) {
    let mut t = FakeTarget::new();
    t.disk_users = vec![DiskUser { device: "/dev/vda1".into(), user }];
    let r = run(&mut t, &Scripted::default(), ALL);
    (r, t)
}

#[test]
fn a_mounted_target_disk_is_refused_naming_the_mount() {
    let (r, t) = refused_disko(DiskUse::Mounted { mount_point: "/mnt/data".into() });
    assert_eq!(r.outcome, Outcome::Refused);
    assert_eq!(r.standing, Standing::InstallerDisksUntouched);
    assert!(r.phases[2].error.as_deref().unwrap_or_default().contains("/dev/vda1 is mounted at /mnt/data"));
    assert_eq!(r.disk_users.len(), 1);
    assert!(!t.called("copy_disko") && !t.called("run_disko"));
    assert_eq!(
        r.resume.as_deref(),
        Some("fleetgate install .#web1 --target ssh://root@192.0.2.10 --phases disko,install,reboot")
    );
}

#[test]
fn swap_and_device_mapper_holders_are_refused_by_name() {
    let (r, t) = refused_disko(DiskUse::Holder { holder: "dm-0".into(), name: Some("vg-root".into()) });
    assert!(r.phases[2].error.as_deref().unwrap_or_default().contains("held by dm-0 (vg-root)"));
    assert!(!t.called("run_disko"));
    let (r, _) = refused_disko(DiskUse::Swap);
    assert!(r.phases[2].error.as_deref().unwrap_or_default().contains("/dev/vda1 is in use as swap"));
}

#[test]
fn an_initrd_without_the_disk_driver_is_refused_at_pre_flight() {
    let mut t = FakeTarget::new();
    let check = Scripted {
        preflight: vec![Finding::new("initrd.missing-module", Severity::Error, "virtio_blk is not in the initrd")],
        ..Scripted::default()
    };
    let r = run(&mut t, &check, ALL);
    assert_eq!(r.outcome, Outcome::Refused);
    assert_eq!(r.standing, Standing::OldOsUntouched);
    assert_eq!(result_of(&r, Phase::PreFlight), PhaseResult::Refused);
    assert_eq!(r.findings[0].id, "initrd.missing-module");
    assert!(!t.called("stage_kexec"), "nothing staged, nothing destroyed: {:?}", t.calls);
    assert_eq!(t.running, Running::Old);
}

#[test]
fn root_findings_before_disko_are_judged_by_the_layout() {
    // The root device does not exist yet on the old OS: check says so, the layout decides.
    let mut t = FakeTarget::new();
    let check = Scripted {
        preflight: vec![Finding::new("root.device", Severity::Error, "PARTLABEL=disk-main-root not found")],
        ..Scripted::default()
    };
    assert_eq!(run(&mut t, &check, ALL).outcome, Outcome::Installed);
}

#[test]
fn a_root_spec_the_layout_does_not_create_is_refused_at_pre_flight() {
    let mut t = FakeTarget::new();
    let mut check = Scripted::default();
    check.needed[0].1 = RootSpec::parse("/dev/disk/by-label/NIXOS_ROOT");
    let r = run(&mut t, &check, ALL);
    assert_eq!(r.outcome, Outcome::Refused);
    assert!(r.phases[0].error.as_deref().unwrap_or_default().contains("LABEL=NIXOS_ROOT at /"));
    assert!(!t.called("stage_kexec"));
    check.needed[0].1 = RootSpec::parse("UUID=0b5c6e2a-1f7e-4b8e-9a43-5f0d7c0e3e11");
    let r = run(&mut FakeTarget::new(), &check, ALL);
    assert!(r.phases[0].error.as_deref().unwrap_or_default().contains("not fixed by a disko layout"));
}

#[test]
fn a_layout_disk_the_target_lacks_is_refused() {
    let mut t = FakeTarget::new();
    t.old_facts.block_devices.retain(|b| b.name != "vda");
    let r = run(&mut t, &Scripted::default(), ALL);
    assert!(r.phases[0].error.as_deref().unwrap_or_default().contains("/dev/vda does not exist"));
}

#[test]
fn a_new_root_on_a_disk_the_old_os_does_not_boot_from_cannot_be_judged() {
    let mut t = FakeTarget::new();
    t.old_facts.root_chain.retain(|d| !d.sysfs.contains("/block/"));
    t.old_facts.root_chain[0].sysfs =
        "/sys/devices/pci0000:00/0000:00:05.0/ata1/host0/target0:0:0/0:0:0:0/block/sda/sda1".into();
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!(r.outcome, Outcome::Refused);
    assert!(
        r.phases[0].error.as_deref().unwrap_or_default().starts_with("cannot judge: the new root goes on /dev/vda")
    );
    assert!(!t.called("stage_kexec"));
}

#[test]
fn disko_that_does_not_create_the_root_fails_its_proof() {
    let mut t = FakeTarget::new();
    t.disko_creates.retain(|(_, name, _)| name != "disk-main-root");
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!(r.standing, Standing::DisksWritten);
    assert!(
        r.phases[2]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("PARTLABEL=disk-main-root (needed for /) does not exist")
    );
    assert!(!t.called("install_system"));
}

#[test]
fn a_failing_disko_leaves_disks_partly_written() {
    let mut t = FakeTarget::new();
    t.fail.insert("run_disko", TargetError::Failed("sgdisk: unable to inform the kernel".into()));
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!(r.standing, Standing::DisksPartlyWritten);
    assert!(r.resume.as_deref().unwrap_or_default().ends_with("--phases disko,install,reboot"));
}

#[test]
fn an_install_whose_boot_default_is_not_the_system_does_not_reboot() {
    let mut t = FakeTarget::new();
    t.boot_default = Some(Some("/nix/store/o-nixos-system-other".into()));
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!(r.standing, Standing::SystemInstalled);
    assert!(r.phases[3].error.as_deref().unwrap_or_default().contains("boots /nix/store/o-nixos-system-other, not"));
    assert!(!t.called("reboot"));
    assert!(r.resume.as_deref().unwrap_or_default().ends_with("--phases install,reboot"));
    let mut t = FakeTarget::new();
    t.boot_default = Some(None);
    let r = run(&mut t, &Scripted::default(), ALL);
    assert!(r.phases[3].error.as_deref().unwrap_or_default().contains("no entry"));
}

/// Regression (found on the VM): the installer's own `/` is a tmpfs, so
/// check's comparison of the new root's file system with the running one's
/// refused every install; it says nothing about the installed disk.
#[test]
fn the_installer_s_own_root_file_system_does_not_refuse_the_install() {
    let mut t = FakeTarget::new();
    let check = Scripted {
        installed: vec![Finding::new(
            "root.fs-type-differs",
            Severity::Error,
            "the new system mounts / as ext4, but the device holds tmpfs",
        )],
        ..Scripted::default()
    };
    let r = run(&mut t, &check, ALL);
    assert_eq!(r.standing, Standing::Booted, "{r:?}");
    assert!(t.called("reboot"));
}

#[test]
fn install_checks_again_against_the_installer_s_view() {
    let mut t = FakeTarget::new();
    let check = Scripted {
        installed: vec![Finding::new("root.device", Severity::Error, "two file systems are labelled nixos")],
        ..Scripted::default()
    };
    let r = run(&mut t, &check, ALL);
    assert_eq!(r.standing, Standing::SystemInstalled);
    assert_eq!(r.findings[0].id, "root.device");
    assert!(!t.called("reboot"));
}

#[test]
fn a_first_boot_that_hangs_is_reported_with_the_console_tail() {
    let mut t = FakeTarget::new();
    t.boot = BootEffect::Hangs(vec![
        "<<< NixOS Stage 1 >>>".into(),
        "waiting for device /dev/disk/by-partlabel/disk-main-root to appear....".into(),
    ]);
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!(r.outcome, Outcome::Unknown);
    assert_eq!(r.exit_code(), 3);
    assert_eq!(r.console_tail.len(), 2);
    assert!(r.human().contains("| waiting for device"), "{}", r.human());
    assert!(r.phases[4].error.as_deref().unwrap_or_default().contains("did not come up"));
}

#[test]
fn a_first_boot_into_another_system_is_not_proven() {
    let mut t = FakeTarget::new();
    t.boot = BootEffect::BootsOther;
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!(r.outcome, Outcome::Unknown);
    assert!(
        r.phases[4]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("/run/booted-system is /nix/store/o-nixos-system-other")
    );
}

#[test]
fn an_unhealthy_first_boot_fails_with_the_units() {
    let mut t = FakeTarget::new();
    t.health = Health { state: "degraded".into(), failed_units: vec!["sshd.service".into()] };
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(r.standing, Standing::BootedUnhealthy);
    assert!(r.phases[4].error.as_deref().unwrap_or_default().contains("degraded (failed: sshd.service)"));
    assert_eq!(r.resume, None);
}

#[test]
fn install_and_reboot_resume_on_the_installer() {
    let mut t = FakeTarget::in_installer();
    t.disks_written = true;
    let r = run(&mut t, &Scripted::default(), "install,reboot");
    assert_eq!(r.outcome, Outcome::Installed, "{}", r.human());
    assert_eq!(result_of(&r, Phase::Kexec), PhaseResult::Skipped);
    assert_eq!(result_of(&r, Phase::Disko), PhaseResult::Skipped);
    assert!(t.called("kept_facts") && !t.called("stage_kexec") && !t.called("run_disko"), "{:?}", t.calls);
    assert_eq!(t.running, Running::Installed);
}

#[test]
fn a_resume_needs_an_installer_fleetgate_started_and_its_facts() {
    let mut t = FakeTarget::new();
    let r = run(&mut t, &Scripted::default(), "install,reboot");
    assert_eq!(r.standing, Standing::NotTheInstaller);
    assert!(!t.called("install_system"));
    let mut t = FakeTarget::in_installer();
    t.kept = None;
    let r = run(&mut t, &Scripted::default(), "install,reboot");
    assert_eq!(r.outcome, Outcome::Refused);
    assert!(r.phases[0].error.as_deref().unwrap_or_default().contains("cannot be judged"));
    assert!(!t.called("copy_system"));
}

#[test]
fn kexec_again_on_an_installer_is_refused() {
    let mut t = FakeTarget::in_installer();
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!(r.outcome, Outcome::Refused);
    assert!(r.resume.as_deref().unwrap_or_default().ends_with("--phases disko,install,reboot"));
    assert!(!t.called("stage_kexec"));
}

#[test]
fn a_phase_past_its_deadline_fails() {
    let mut t = FakeTarget::new();
    t.cost.insert("copy_system", Duration::from_secs(4000));
    let r = run(&mut t, &Scripted::default(), ALL);
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(
        r.phases[3].error.as_deref().unwrap_or_default().contains("passed its deadline of 3600 s"),
        "{}",
        r.human()
    );
    assert!(!t.called("reboot"));
}

#[test]
fn stopping_after_disko_says_what_remains() {
    let mut t = FakeTarget::new();
    let r = run(&mut t, &Scripted::default(), "kexec,disko");
    assert_eq!(r.outcome, Outcome::Installed);
    assert_eq!(r.standing, Standing::DisksWritten);
    assert!(r.next_step.ends_with("--phases install,reboot"), "{}", r.next_step);
}

fn enrolment() -> fleetgate_install::enrol::Enrolment {
    let file = |path: &str, mode, contents: &[u8]| fleetgate_install::enrol::EnrolFile {
        path: path.into(),
        mode,
        contents: contents.to_vec(),
    };
    fleetgate_install::enrol::Enrolment::new(vec![
        file("/etc/fleetgate/agent.toml", 0o600, b"host = \"web1\"\n"),
        file("/var/lib/secrets/fleetgate-token", 0o400, b"s3cret\n"),
    ])
    .expect("valid")
}

#[test]
fn the_agent_s_files_are_written_and_read_back_before_the_reboot() {
    let mut t = FakeTarget::new();
    let mut p = plan(ALL);
    p.enrol = enrolment();
    let r = install(&mut t, &Scripted::default(), &p, &mut Quiet);
    assert_eq!(r.outcome, Outcome::Installed, "{}", r.human());
    let proof = &r.phases[3].proof;
    assert!(
        proof.iter().any(|l| l.starts_with("agent enrolment: /var/lib/secrets/fleetgate-token read back, 7 bytes")),
        "{proof:?}"
    );
    let read_back = t.calls.iter().position(|c| c == "read_back_enrolled").expect("read back");
    assert!(read_back < t.calls.iter().position(|c| c == "reboot").expect("reboot"), "{:?}", t.calls);
    assert_eq!(t.enrolled["/var/lib/secrets/fleetgate-token"].mode, 0o400);
}

#[test]
fn an_enrolment_that_does_not_read_back_stops_before_the_reboot() {
    let mut t = FakeTarget::new();
    t.enrol_truncates = true;
    let mut p = plan(ALL);
    p.enrol = enrolment();
    let r = install(&mut t, &Scripted::default(), &p, &mut Quiet);
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(r.standing, Standing::SystemInstalled);
    assert_eq!(result_of(&r, Phase::Install), PhaseResult::Failed);
    let error = r.phases[3].error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("agent enrolment not proven: /etc/fleetgate/agent.toml read back differs; 7 bytes"),
        "{error}"
    );
    assert!(!t.called("reboot"), "never rebooted: {:?}", t.calls);
    assert_eq!(
        r.resume.as_deref(),
        Some("fleetgate install .#web1 --target ssh://root@192.0.2.10 --phases install,reboot")
    );

    let mut t = FakeTarget::new();
    t.fail.insert("enrol", TargetError::Failed("No space left on device".into()));
    let r = install(&mut t, &Scripted::default(), &p, &mut Quiet);
    assert_eq!(r.standing, Standing::SystemInstalled);
    assert_eq!(r.phases[3].error.as_deref(), Some("writing the agent's files into /mnt: No space left on device"));
    assert!(!t.called("reboot"));
}

/// What an observer hears: each phase's start with its deadline, its steps, its end.
#[derive(Default)]
struct Heard(Vec<String>);

impl fleetgate_install::protocol::Observer for Heard {
    fn started(&mut self, phase: Phase, deadline: Duration) {
        self.0.push(format!("{phase} started, {} s", deadline.as_secs()));
    }
    fn doing(&mut self, phase: Phase, what: &str) {
        self.0.push(format!("{phase}: {what}"));
    }
    fn finished(&mut self, record: &fleetgate_install::report::PhaseRecord) {
        self.0.push(format!("{} {:?}", record.phase, record.result));
    }
}

#[test]
fn the_observer_hears_each_step_against_the_phase_s_deadline() {
    let mut heard = Heard::default();
    let mut p = plan("kexec");
    p.deadlines[1] = Duration::from_secs(120);
    install(&mut FakeTarget::new(), &Scripted::default(), &p, &mut heard);
    let kexec: Vec<&str> = heard.0.iter().map(String::as_str).skip_while(|l| !l.starts_with("kexec")).take(7).collect();
    assert_eq!(
        kexec,
        [
            "kexec started, 120 s",
            "kexec: looking at the target",
            "kexec: staging the kexec tarball",
            "kexec: running the tarball's kexec/run",
            "kexec: waiting for the installer to boot",
            "kexec: keeping the pre-flight facts on the installer",
            "kexec Proven",
        ]
    );
    assert_eq!(heard.0.last().map(String::as_str), Some("reboot Skipped"));
}
