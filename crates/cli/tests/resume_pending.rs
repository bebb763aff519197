//! `fleetgate resume-pending`, the host-side end of a verified reboot whose
//! deployer died: the real binary, run as a boot unit would run it (no
//! inherited PATH), against a host laid out in a temporary directory.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use fleetgate_apply::intent::{FORMAT, PendingIntent, Verified};
use fleetgate_apply::testing::{grub_cfg, host};

fn pending(root: &Path, old: &str, new: &str) {
    let intent = PendingIntent {
        format: FORMAT,
        run_id: "1700000000-000001-42".into(),
        new: new.into(),
        fallback: old.into(),
        fallback_generation: Some(1),
        boot_id_before: "b0".into(),
        deadline_unix: 1_700_000_900,
        verified: Verified { booted: new.into(), baseline: "unknown".into(), ..Verified::default() },
    };
    fs::create_dir_all(root.join("var/lib/fleetgate")).expect("mkdir");
    fs::write(root.join("var/lib/fleetgate/pending.json"), intent.to_json()).expect("write");
    let grub = root.join("boot/grub");
    fs::create_dir_all(&grub).expect("mkdir");
    fs::write(grub.join("grub.cfg"), grub_cfg(old, new, false)).expect("write");
}

/// The host came back on `booted`: the profile points at generation 2 (new).
fn booted(root: &Path, booted: &str, new: &str) {
    for link in ["run/current-system", "run/booted-system"] {
        fs::remove_file(root.join(link)).expect("rm");
        symlink(booted, root.join(link)).expect("ln");
    }
    symlink(new, root.join("nix/var/nix/profiles/system-2-link")).expect("ln");
    fs::remove_file(root.join("nix/var/nix/profiles/system")).expect("rm");
    symlink("system-2-link", root.join("nix/var/nix/profiles/system")).expect("ln");
}

fn resume_pending(root: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["resume-pending", "--loader", "grub:/boot/grub/grub.cfg", "--health-timeout", "5", "--root"])
        .arg(root)
        .env_clear()
        .env("PATH", "/nonexistent")
        .output()
        .expect("fleetgate runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn booted_the_new_generation_healthy_it_is_blessed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, new) = host(tmp.path(), 0);
    pending(tmp.path(), &old, &new);
    booted(tmp.path(), &new, &new);
    let (code, stderr) = resume_pending(tmp.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("now the default"), "{stderr}");
    assert!(!tmp.path().join("var/lib/fleetgate/pending.json").exists());
    assert_eq!(fs::read_to_string(tmp.path().join("calls")).expect("calls"), "new boot\n");
    // Nothing pending any more: a second run does nothing.
    let (code, stderr) = resume_pending(tmp.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("no verified reboot is pending"), "{stderr}");
}

#[test]
fn booted_the_fallback_the_profile_and_default_go_back_to_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, new) = host(tmp.path(), 0);
    pending(tmp.path(), &old, &new);
    booted(tmp.path(), &old, &new);
    let (code, stderr) = resume_pending(tmp.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("previous generation"), "{stderr}");
    assert!(!tmp.path().join("var/lib/fleetgate/pending.json").exists());
    assert_eq!(
        fs::read_link(tmp.path().join("nix/var/nix/profiles/system")).expect("link"),
        Path::new("system-1-link")
    );
    assert_eq!(fs::read_to_string(tmp.path().join("calls")).expect("calls"), "old boot\n");
}
