//! `fleetgate deploy` through the real binary on lab hosts: a deployer
//! killed (SIGKILL) right after it rebooted a host into the new generation
//! leaves an intent on the host that the next look at it finishes — the
//! host itself at boot (`fleetgate resume-pending` as a boot unit), or the
//! next deploy; a dry run is not history. Needs root, like the lab.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fleetgate_lab::Power;
use fleetgate_lab::fixture::ResumeBinary;
use fleetgate_lab::testing::LabGuard;

fn fleetgate(lab: &LabGuard, history: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
    c.arg("deploy")
        .arg(format!("path:{}", lab.fleet_dir().display()))
        .arg("--history")
        .arg(history)
        .args(["--reboot-timeout", "30", "--confirm-timeout", "20"])
        .args(extra)
        .env("NIX_CONFIG", fleetgate_lab::lab::NIX_CONFIG);
    c
}

fn readlink(lab: &LabGuard, host: &str, path: &str) -> String {
    lab.ssh(host, &format!("readlink -f {path}")).expect("ssh").trim().to_owned()
}

fn pending(lab: &LabGuard, host: &str) -> bool {
    lab.ssh(host, "test -e /var/lib/fleetgate/pending.json && echo yes || echo no").expect("ssh").trim() == "yes"
}

/// Starts a deploy and SIGKILLs it as soon as it says it waits for the
/// host's reboot (its own progress line, not a sleep).
fn deploy_and_kill_after_the_reboot(mut command: Command) {
    let mut child: Child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("fleetgate runs");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("deployer: {line}");
            if line.contains(": wait-boot") {
                let _ = tx.send(());
            }
        }
    });
    let triggered = rx.recv_timeout(Duration::from_secs(300));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let _ = reader.join();
    triggered.expect("the deployer rebooted the host");
}

/// Deploys, SIGKILLs the deployer once it rebooted the host, and waits for
/// the host's next boot to settle.
fn killed_deploy(lab: &LabGuard, host: &str, command: Command) -> fleetgate_lab::control::HostStatus {
    let boots = lab.status(host).expect("status").boots;
    deploy_and_kill_after_the_reboot(command);
    end_orphaned_masters(lab);
    lab.wait_next_boot(host, boots).expect("the boot settles")
}

/// Nothing pending, the profile on `system`, and a reboot boots it.
fn settled_on(lab: &LabGuard, host: &str, system: &str) {
    assert!(!pending(lab, host), "the intent was resolved");
    assert_eq!(readlink(lab, host, "/nix/var/nix/profiles/system"), system);
    let again = lab.reboot(host).expect("reboot");
    assert_eq!(again.toplevel.as_deref(), Some(system), "the default boots {system}");
}

/// ssh ControlMasters the killed deployer left (their command line names
/// this lab's ssh config): ended one by one, by pid.
fn end_orphaned_masters(lab: &LabGuard) {
    let config = lab.dir().ssh_config().display().to_string();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with("ssh\0") && cmdline.contains(&config) && cmdline.contains("\0-M\0") {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

#[test]
fn resume_after_deployer_killed_host_back_on_new_next_deploy_blesses_it() {
    let lab = LabGuard::up(&["vps1=virtio,systemd-boot"]).expect("lab");
    lab.build(&["vps1"]).expect("build");
    lab.edit_host("vps1", |k| k.revision = 2).expect("edit");
    let new = lab.build(&["vps1"]).expect("build")["vps1"].clone();
    let tmp = tempfile::tempdir().expect("tmp");
    let history = tmp.path().join("history.sqlite");
    let back = killed_deploy(&lab, "vps1", fleetgate(&lab, &history, &["--reboot"]));
    assert_eq!((back.power, back.toplevel.as_deref()), (Power::Running, Some(new.as_str())), "{back:?}");
    assert!(pending(&lab, "vps1"), "the intent waits on the host");

    // The next deploy finishes the protocol first: healthy → blessed.
    let out = fleetgate(&lab, &history, &["--reboot", "--json"]).output().expect("fleetgate runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("left a verified reboot pending"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(report["hosts"][0]["outcome"], "up-to-date", "{report:#}");
    let resolved = &report["hosts"][0]["findings"][0];
    assert_eq!(resolved["id"], "deploy.pending-resolved", "{report:#}");
    assert!(resolved["message"].as_str().is_some_and(|m| m.contains("now the default")), "{report:#}");
    settled_on(&lab, "vps1", &new);
    assert!(lab.down().expect("down").is_empty());
}

#[test]
fn resume_after_deployer_killed_new_generation_hangs_power_cycle_old_is_the_default_recorded() {
    let lab = LabGuard::up(&["vps1=virtio,grub"]).expect("lab");
    let old = lab.build(&["vps1"]).expect("build")["vps1"].clone();
    lab.edit_host("vps1", |k| {
        k.revision = 2;
        k.available_kernel_modules.retain(|m| !m.starts_with("virtio"));
    })
    .expect("edit");
    lab.build(&["vps1"]).expect("build");
    let tmp = tempfile::tempdir().expect("tmp");
    let history = tmp.path().join("history.sqlite");
    let hung = killed_deploy(&lab, "vps1", fleetgate(&lab, &history, &["--reboot", "--force"]));
    assert_eq!(hung.power, Power::Hung, "{hung:?}");
    // The operator (or a provider's watchdog) power-cycles it: it boots its default.
    let back = lab.power_cycle("vps1").expect("power cycle");
    assert_eq!((back.power, back.toplevel.as_deref()), (Power::Running, Some(old.as_str())), "{back:?}");

    // The next deploy resolves the dead run's reboot first and records it;
    // the broken generation itself stays blocked.
    let out = fleetgate(&lab, &history, &["--json"]).output().expect("fleetgate runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(out.status.code(), Some(1), "{stderr}\n{report:#}");
    let h = &report["hosts"][0];
    assert_eq!((h["outcome"].as_str(), h["standing"].as_str()), (Some("blocked"), Some("known-good")), "{report:#}");
    assert_eq!(h["findings"][0]["id"], "deploy.pending-resolved", "{report:#}");
    assert!(h["findings"][0]["message"].as_str().is_some_and(|m| m.contains("previous generation")), "{report:#}");
    assert!(!pending(&lab, "vps1"));
    assert_eq!(readlink(&lab, "vps1", "/nix/var/nix/profiles/system"), old);
    let again = lab.reboot("vps1").expect("reboot");
    assert_eq!(again.toplevel.as_deref(), Some(old.as_str()), "the default boots the previous generation");
    assert!(lab.down().expect("down").is_empty());
}

fn with_resume_unit(lab: &LabGuard, host: &str) {
    let binary = ResumeBinary::at(Path::new(env!("CARGO_BIN_EXE_fleetgate"))).expect("the binary");
    lab.edit_host(host, |k| k.resume_binary = Some(binary)).expect("edit");
}

/// The host came back running `system`, its boot unit's resume says
/// `says`, and it has settled there.
fn resolved_at_boot(lab: &LabGuard, host: &str, back: &fleetgate_lab::control::HostStatus, system: &str, says: &str) {
    assert_eq!((back.power, back.toplevel.as_deref()), (Power::Running, Some(system)), "{back:?}");
    let log = lab.ssh(host, "cat /var/log/fleetgate-resume.log").expect("ssh");
    assert!(log.contains(says), "{log}");
    settled_on(lab, host, system);
}

/// The host itself finishes the protocol at boot: the fixture's boot unit
/// runs the product's `fleetgate resume-pending` (the agent's boot unit).
#[test]
fn resume_after_deployer_killed_host_side_resume_blesses_the_new_generation() {
    let lab = LabGuard::up(&["vps1=virtio,systemd-boot"]).expect("lab");
    with_resume_unit(&lab, "vps1");
    lab.edit_host("vps1", |k| k.revision = 2).expect("edit");
    let new = lab.build(&["vps1"]).expect("build")["vps1"].clone();
    let tmp = tempfile::tempdir().expect("tmp");
    let history = tmp.path().join("history.sqlite");
    let back = killed_deploy(&lab, "vps1", fleetgate(&lab, &history, &["--reboot"]));
    resolved_at_boot(&lab, "vps1", &back, &new, "now the default");
    assert!(lab.down().expect("down").is_empty());
}

#[test]
fn resume_after_deployer_killed_new_generation_hangs_host_side_resume_keeps_the_previous_default() {
    let lab = LabGuard::up(&["vps1=virtio,grub"]).expect("lab");
    with_resume_unit(&lab, "vps1");
    lab.edit_host("vps1", |k| k.revision = 2).expect("edit");
    let good = lab.build(&["vps1"]).expect("build")["vps1"].clone();
    let tmp = tempfile::tempdir().expect("tmp");
    let history = tmp.path().join("history.sqlite");
    // A generation with the boot unit that booted: the fallback.
    let out = fleetgate(&lab, &history, &["--reboot"]).output().expect("fleetgate runs");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    lab.edit_host("vps1", |k| {
        k.revision = 3;
        k.available_kernel_modules.retain(|m| !m.starts_with("virtio"));
    })
    .expect("edit");
    lab.build(&["vps1"]).expect("build");
    let hung = killed_deploy(&lab, "vps1", fleetgate(&lab, &history, &["--reboot", "--force"]));
    assert_eq!(hung.power, Power::Hung, "{hung:?}");
    let back = lab.power_cycle("vps1").expect("power cycle");
    resolved_at_boot(&lab, "vps1", &back, &good, "previous generation");
    assert!(lab.down().expect("down").is_empty());
}

#[test]
fn a_dry_run_is_not_history() {
    let lab = LabGuard::up(&["web1=virtio,systemd-boot"]).expect("lab");
    lab.build(&["web1"]).expect("build");
    lab.edit_host("web1", |k| k.revision = 2).expect("edit");
    let tmp = tempfile::tempdir().expect("tmp");
    let history = tmp.path().join("history.sqlite");
    let out = fleetgate(&lab, &history, &["--dry-run", "--strategy", "canary"]).output().expect("fleetgate runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("planned"), "{stdout}");
    let resume = fleetgate(&lab, &history, &["--resume"]).output().expect("fleetgate runs");
    assert_eq!(resume.status.code(), Some(2), "no run to resume");
    assert!(String::from_utf8_lossy(&resume.stderr).contains("no earlier run"), "{resume:?}");
    assert!(lab.down().expect("down").is_empty());
}
