//! Faults during `fleetgate deploy` on lab hosts. Each ends with every host
//! on a known-good generation (checked through the lab, including a reboot
//! into the boot default), never with exit 3 — except where the test says
//! fleetgate must admit it does not know. Needs root, like the lab.

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use fleetgate_deploy::events::{Bus, EventKind, Phase};
use fleetgate_deploy::history::History;
use fleetgate_deploy::{Action, Outcome, Standing};
use fleetgate_lab::Lab;
use fleetgate_lab::testing::LabGuard;

#[test]
fn fault_activation_fails_watchdog_rolls_back() {
    let lab = LabGuard::up(&["web1=virtio,systemd-boot"]).expect("lab");
    let first = lab.build(&["web1"]).expect("build");
    lab.edit_host("web1", |k| {
        k.revision = 2;
        k.activation_fails = true;
    })
    .expect("edit");
    let report = deploy(&lab, &[], &options());
    assert_eq!(report.exit_code, 1, "{}", report.human());
    let r = host(&report, "web1");
    assert_eq!((r.action, r.outcome, r.rolled_back), (Some(Action::Switch), Outcome::Failed, true), "{}", r.message);
    assert!(
        r.message.contains("exit 2: activation failed") && r.message.contains("injected activation failure"),
        "{}",
        r.message
    );
    assert_known_good(&report);
    assert_on(&lab, "web1", &first["web1"]);
    assert!(lab.down().expect("down").is_empty());
}

#[test]
fn fault_health_check_fails_after_switch_rolls_back() {
    let lab = LabGuard::up(&["web1=nvme,grub"]).expect("lab");
    let first = lab.build(&["web1"]).expect("build");
    // The new generation drops the `app` service; the health check wants it.
    write_config(
        &lab,
        "[hosts.web1]\nhealth.units = [\"app.service\"]\nhealth.commands = [\"test -d /run/current-system\"]\n",
    );
    lab.edit_host("web1", |k| {
        k.revision = 2;
        k.services.clear();
    })
    .expect("edit");
    let report = deploy(&lab, &[], &options());
    assert_eq!(report.exit_code, 1, "{}", report.human());
    let r = host(&report, "web1");
    assert_eq!((r.outcome, r.rolled_back), (Outcome::Failed, true), "{}", r.message);
    assert!(
        r.message.contains("health checks failed") && r.message.contains("unit app.service is inactive"),
        "{}",
        r.message
    );
    assert_eq!(
        lab.ssh("web1", "systemctl is-active app").expect("ssh").trim(),
        "active",
        "the old system's service is back"
    );
    assert_known_good(&report);
    assert_on(&lab, "web1", &first["web1"]);
    assert!(lab.down().expect("down").is_empty());
}

/// A process in the host's mount namespace, for looking at its /run while
/// its network is cut.
fn host_pid(lab: &Lab, host: &str) -> String {
    let netns = &lab.host(host).expect("host").netns;
    let out = Command::new("ip").args(["netns", "pids", netns]).output().expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sshd"))
        .expect("sshd runs in the host")
        .to_owned()
}

fn watchdog_state(pid: &str) -> String {
    let out = Command::new("nsenter")
        .args(["-t", pid, "-m", "--", "sh", "-c", "cat /run/fleetgate/runs/*/state 2>/dev/null"])
        .output()
        .expect("nsenter");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn fault_ssh_cut_during_activation_target_rolls_back_by_itself() {
    let lab = LabGuard::up(&["web1=virtio,systemd-boot"]).expect("lab");
    let first = lab.build(&["web1"]).expect("build");
    lab.edit_host("web1", |k| k.revision = 2).expect("edit");
    let veth = lab.host("web1").expect("host").veth.clone();
    let pid = host_pid(&lab, "web1");
    let (tx, rx) = mpsc::channel();
    let report = std::thread::scope(|s| {
        let deployer = s.spawn(|| deploy_with(&lab, &[], &options(), None, Bus::new(tx)));
        // As soon as activation starts, cut the host off the network.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left).expect("the deploy reaches activation") {
                ev if ev.kind == EventKind::Phase(Phase::Activate) => break,
                _ => {}
            }
        }
        wait_for("the watchdog to be armed", Duration::from_secs(60), || !watchdog_state(&pid).is_empty());
        assert!(Command::new("ip").args(["link", "set", &veth, "down"]).status().expect("ip").success());
        // The host, alone, gives up waiting and rolls back.
        wait_for("the watchdog to roll back", Duration::from_secs(120), || {
            watchdog_state(&pid).starts_with("rolled-back")
        });
        assert!(Command::new("ip").args(["link", "set", &veth, "up"]).status().expect("ip").success());
        drop(rx);
        deployer.join().expect("deploy thread")
    });
    let r = host(&report, "web1");
    assert_eq!((r.outcome, r.standing, r.rolled_back), (Outcome::Failed, Standing::KnownGood, true), "{}", r.message);
    assert!(r.message.contains("rolled back"), "{}", r.message);
    assert_eq!(report.exit_code, 1);
    assert_on(&lab, "web1", &first["web1"]);
    assert!(lab.down().expect("down").is_empty());
}

#[test]
fn fault_unreachable_host_others_proceed_and_resume_finishes_it() {
    let lab = LabGuard::up(&["web1=virtio,systemd-boot", "web2=sata,grub"]).expect("lab");
    for h in ["web1", "web2"] {
        lab.edit_host(h, |k| k.revision = 2).expect("edit");
    }
    let second = lab.build(&["web1", "web2"]).expect("build");
    let tmp = tempfile::tempdir().expect("tmp");
    let history = Mutex::new(History::open(&tmp.path().join("history.sqlite")).expect("history"));
    lab.power_off("web2").expect("power off");
    let report = deploy_with(&lab, &[], &options(), Some(&history), Bus::silent());
    assert_eq!(report.exit_code, 1, "{}", report.human());
    assert_eq!(host(&report, "web1").outcome, Outcome::Deployed);
    let r = host(&report, "web2");
    assert_eq!((r.outcome, r.standing), (Outcome::Unreachable, Standing::KnownGood), "{}", r.message);
    assert!(r.message.contains("--resume"), "{}", r.message);

    // Later: the host is back; --resume deploys exactly the unfinished ones.
    lab.power_on("web2").expect("power on");
    let unfinished = history.lock().expect("lock").unfinished().expect("unfinished");
    assert_eq!(unfinished.hosts, ["web2"]);
    let hosts: Vec<&str> = unfinished.hosts.iter().map(String::as_str).collect();
    let report = deploy_with(&lab, &hosts, &options(), Some(&history), Bus::silent());
    assert_eq!(report.exit_code, 0, "{}", report.human());
    assert_eq!(report.hosts.len(), 1);
    assert!(history.lock().expect("lock").unfinished().expect("unfinished").hosts.is_empty());
    for h in ["web1", "web2"] {
        assert_on(&lab, h, &second[h]);
    }
    assert!(lab.down().expect("down").is_empty());
}

#[test]
fn fault_disk_full_during_copy_leaves_the_host_untouched() {
    let lab = LabGuard::up(&["web1=virtio,systemd-boot"]).expect("lab");
    let first = lab.build(&["web1"]).expect("build");
    // The new generation has a new initrd (another module in it): megabytes to copy.
    lab.edit_host("web1", |k| {
        k.revision = 2;
        k.kernel_modules.push("nvme".into());
    })
    .expect("edit");
    let second = lab.build(&["web1"]).expect("build");
    // Fill /nix's file system but for 256 KiB, root's reserve included.
    lab.ssh("web1", "set -- $(stat -f -c '%f %S' /nix); fallocate -l $(($1 * $2 - 262144)) /nix/fill; sync")
        .expect("fill the disk");
    let report = deploy(&lab, &[], &options());
    assert_eq!(report.exit_code, 1, "{}", report.human());
    let r = host(&report, "web1");
    assert_eq!((r.outcome, r.standing), (Outcome::Failed, Standing::KnownGood), "{}", r.message);
    assert!(
        r.message.contains("ran out of disk space") && r.message.contains("nothing was activated"),
        "{}",
        r.message
    );
    assert!(r.phases.iter().any(|p| p.phase == Phase::Copy && !p.ok));
    assert!(!valid_on(&lab, "web1", &second["web1"]));
    assert_eq!(readlink(&lab, "web1", "/nix/var/nix/profiles/system"), first["web1"]);
    // Space freed: the next run deploys.
    lab.ssh("web1", "rm -f /nix/fill").expect("ssh");
    let report = deploy(&lab, &[], &options());
    assert_eq!(report.exit_code, 0, "{}", report.human());
    assert_on(&lab, "web1", &second["web1"]);
    assert!(lab.down().expect("down").is_empty());
}

#[test]
fn fault_two_concurrent_deploys_to_one_host_the_second_is_refused() {
    let lab = LabGuard::up(&["web1=virtio,systemd-boot"]).expect("lab");
    // The first deploy's health check waits for a file the test creates.
    write_config(&lab, "[hosts.web1]\nhealth.commands = [\"test -e /run/fleetgate-test-go\"]\n");
    lab.edit_host("web1", |k| k.revision = 2).expect("edit");
    let second = lab.build(&["web1"]).expect("build");
    let mut slow = options();
    slow.timeouts.health = Duration::from_secs(120);
    slow.timeouts.confirm = Duration::from_secs(150);
    let (tx, rx) = mpsc::channel();
    let (first_report, other) = std::thread::scope(|s| {
        let first = s.spawn(|| deploy_with(&lab, &[], &slow, None, Bus::new(tx)));
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if rx.recv_timeout(left).expect("the first deploy reaches its health checks").kind
                == EventKind::Phase(Phase::Health)
            {
                break;
            }
        }
        // The first deploy holds the lock: a second one is refused.
        let other = deploy(&lab, &[], &options());
        lab.ssh("web1", "touch /run/fleetgate-test-go").expect("ssh");
        drop(rx);
        (first.join().expect("first deploy"), other)
    });
    let r = host(&other, "web1");
    assert_eq!((r.outcome, r.standing), (Outcome::Failed, Standing::KnownGood), "{}", r.message);
    assert!(r.message.contains("another deploy holds the lock") && r.message.contains("run="), "{}", r.message);
    assert_eq!(first_report.exit_code, 0, "{}", first_report.human());
    assert_on(&lab, "web1", &second["web1"]);
    assert!(lab.down().expect("down").is_empty());
}

fn hanging_generation(lab: &Lab, h: &str) {
    lab.edit_host(h, |k| {
        k.revision = 2;
        k.available_kernel_modules.retain(|m| !m.starts_with("virtio"));
    })
    .expect("edit");
}

#[test]
fn fault_power_cycle_command_fails_once_and_is_retried() {
    let lab = LabGuard::up(&["vps1=virtio,systemd-boot"]).expect("lab");
    let first = lab.build(&["vps1"]).expect("build");
    let marker = lab.dir().root().join("provider-api-flaked");
    // The provider's API fails the first call, then works.
    let command = format!(
        "if [ -e {m} ]; then {pc}; else touch {m}; echo 'API error 503' >&2; exit 1; fi",
        m = marker.display(),
        pc = power_cycle_command(&lab)
    );
    write_config(&lab, &format!("[hosts.vps1]\npower_cycle = '''{command}'''\n"));
    hanging_generation(&lab, "vps1");
    let mut forced = options();
    forced.force = true;
    forced.reboot = true;
    let report = deploy(&lab, &[], &forced);
    assert_eq!(report.exit_code, 1, "{}", report.human());
    let r = host(&report, "vps1");
    assert_eq!((r.outcome, r.standing, r.rolled_back), (Outcome::Failed, Standing::KnownGood, true), "{}", r.message);
    assert_eq!(r.phases.iter().filter(|p| p.phase == Phase::PowerCycle).count(), 2, "{:?}", r.phases);
    assert_on(&lab, "vps1", &first["vps1"]);
    assert!(lab.down().expect("down").is_empty());
}

#[test]
fn fault_power_cycle_command_never_works_exit_3_but_the_default_still_boots_the_previous_generation() {
    let lab = LabGuard::up(&["vps1=virtio,grub"]).expect("lab");
    let first = lab.build(&["vps1"]).expect("build");
    write_config(&lab, "[hosts.vps1]\npower_cycle = \"echo 'provider API down' >&2; exit 1\"\n");
    hanging_generation(&lab, "vps1");
    let mut forced = options();
    forced.force = true;
    forced.reboot = true;
    let report = deploy(&lab, &[], &forced);
    assert_eq!(report.exit_code, 3, "{}", report.human());
    let r = host(&report, "vps1");
    assert_eq!(r.standing, Standing::Unknown);
    assert!(
        r.message.contains("boot default is still the previous generation")
            && r.message.contains("power-cycling it brings it back"),
        "{}",
        r.message
    );
    // What the report promises holds: a power cycle brings it back.
    assert_eq!(lab.status("vps1").expect("status").power, fleetgate_lab::Power::Hung);
    let back = lab.power_cycle("vps1").expect("power cycle");
    assert_eq!(back.power, fleetgate_lab::Power::Running);
    assert_eq!(readlink(&lab, "vps1", "/run/booted-system"), first["vps1"]);
    assert!(lab.down().expect("down").is_empty());
}
