//! The real host scripts, run by the real engine with `/bin/sh` and an
//! inherited `PATH=/nonexistent` against a host laid out in a temporary
//! directory: every tool must come from the `sw/bin` of the systems the
//! scripts act on (as on NixOS, where a `systemd-run` unit has no coreutils).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fleetgate_apply::machine::{Armed, Machine as _};
use fleetgate_apply::outcome::Silent;
use fleetgate_apply::remote::{CallTimeouts, Connector, Loader, ScriptMachine};
use fleetgate_apply::scripts::Layout;
use fleetgate_apply::switch::{SwitchPlan, live_switch};
use fleetgate_apply::testing::{exe, grub_cfg, host, tool};
use fleetgate_apply::{Outcome, bootloader::Grubenv};
use fleetgate_transport::{Output, Transport, TransportError};

/// Runs commands locally with an empty environment but `PATH=/nonexistent`.
struct EmptyPath;

impl Transport for EmptyPath {
    fn describe(&self) -> String {
        "empty-path".into()
    }
    fn run(&self, argv: &[&str], stdin: Option<&[u8]>, _timeout: Duration) -> Result<Output, TransportError> {
        use std::io::Write as _;
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .env_clear()
            .env("PATH", "/nonexistent")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(stdin.unwrap_or_default()).expect("write");
        drop(pipe);
        let out = child.wait_with_output().expect("wait");
        Ok(Output {
            target: "empty-path".into(),
            command: argv.join(" "),
            status: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

/// Counts the fresh logins and the round trips on the shared connection.
#[derive(Default)]
struct Conn {
    fresh: Arc<AtomicUsize>,
    shared: Arc<AtomicUsize>,
}
impl Connector for Conn {
    fn describe(&self) -> String {
        "empty-path".into()
    }
    fn shared(&mut self) -> &dyn Transport {
        self.shared.fetch_add(1, Ordering::SeqCst);
        &EmptyPath
    }
    fn fresh(&self) -> Box<dyn Transport> {
        self.fresh.fetch_add(1, Ordering::SeqCst);
        Box::new(EmptyPath)
    }
    fn disconnect(&mut self) {}
}

fn machine(root: &Path) -> ScriptMachine<Conn> {
    machine_with(root, Conn::default())
}

fn machine_with(root: &Path, conn: Conn) -> ScriptMachine<Conn> {
    let timeouts = CallTimeouts {
        command: Duration::from_secs(30),
        activation: Duration::from_secs(30),
        probe: Duration::from_secs(5),
        power_cycle: Duration::from_secs(5),
    };
    ScriptMachine::new(conn, Layout { root: root.display().to_string() }, timeouts)
}

fn plan(old: &str, new: &str) -> SwitchPlan {
    SwitchPlan {
        run_id: "r1".into(),
        new: new.into(),
        old: old.into(),
        old_generation: Some(1),
        boot_id: "b1".into(),
        baseline: "unknown".into(),
        window: Duration::from_secs(5),
        activation: Duration::from_secs(10),
        health: Duration::from_secs(5),
    }
}

#[test]
fn live_switch_confirmed_with_no_inherited_path() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, new) = host(tmp.path(), 0);
    let mut m = machine(tmp.path());
    let o = live_switch(&mut m, &mut Silent, &plan(&old, &new));
    let calls = fs::read_to_string(tmp.path().join("calls")).unwrap_or_default();
    assert_eq!(o, Outcome::Switched, "{calls}");
    assert_eq!(calls, "new test\nnew boot\n");
    let s = m.state().expect("state");
    assert_eq!((s.current, s.profile, s.profile_generation), (new.clone(), new, Some(2)));
}

/// Issue 15: a live switch costs one fresh login — the one that proves new
/// logins work, makes the new system the boot default and then confirms;
/// the health checks ride the shared connection.
#[test]
fn live_switch_makes_the_default_and_confirms_over_one_fresh_login() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, new) = host(tmp.path(), 0);
    let fresh = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(AtomicUsize::new(0));
    let mut m = machine_with(tmp.path(), Conn { fresh: Arc::clone(&fresh), shared: Arc::clone(&shared) });
    assert_eq!(live_switch(&mut m, &mut Silent, &plan(&old, &new)), Outcome::Switched);
    assert_eq!(fresh.load(Ordering::SeqCst), 1);
    // Issue 15: profile + watchdog launch, the wait for activation's end (on
    // the host), the health checks — where polls every 250 ms and separate
    // calls took 7 or more. The fresh login that confirms also waits for the
    // watchdog's end and reads where the host stands.
    assert_eq!(shared.load(Ordering::SeqCst), 3);
    assert_eq!(fs::read_to_string(tmp.path().join("calls")).expect("calls"), "new test\nnew boot\n");
}

/// The opening round trip: the lock, the pending intent, the health
/// baseline and the caller's script, from the real script; a second run is
/// told who holds the lock and reads nothing.
#[test]
fn the_opening_takes_the_lock_and_reads_the_intent_and_the_callers_script() {
    use fleetgate_apply::machine::LockError;
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, new) = host(tmp.path(), 0);
    let mut m = machine(tmp.path());
    let o = m.open("r1", "echo from-facts; exit 5", Duration::from_secs(5), None).expect("opened");
    assert_eq!(o.intent, Ok(None));
    assert_eq!(o.system_state, "unknown", "no systemctl here");
    assert_eq!((o.extra.stdout.as_str(), o.extra.status), ("from-facts\n", Some(5)));
    let intent = fleetgate_apply::intent::PendingIntent {
        format: fleetgate_apply::intent::FORMAT,
        run_id: "r0".into(),
        new: new.clone(),
        fallback: "/nix/store/f".into(),
        fallback_generation: Some(1),
        boot_id_before: "b0".into(),
        deadline_unix: 1,
        verified: fleetgate_apply::intent::Verified::default(),
    };
    m.write_intent(&intent).expect("written");
    // The same run takes its own lock again.
    let o = m.open("r1", "", Duration::from_secs(5), None).expect("opened again");
    assert_eq!(o.intent, Ok(Some(intent.clone())));
    assert_eq!((o.extra.stdout.as_str(), o.extra.status), ("", Some(0)));
    match m.open("r2", "touch must-not-run", Duration::from_secs(5), None) {
        Err(LockError::Held { owner }) => assert!(owner.starts_with("run=r1 "), "{owner}"),
        other => panic!("{other:?}"),
    }
    assert!(!tmp.path().join("must-not-run").exists());
    // A running system without `od`: the intent is read on its own.
    let od = Path::new(&old).join("sw/bin/od");
    fs::remove_file(&od).expect("rm od");
    let o = m.open("r1", "", Duration::from_secs(5), None).expect("opened without od");
    assert_eq!(o.intent, Ok(Some(intent)));
    m.unlock("r1").expect("unlocked");
    fs::write(tmp.path().join("var/lib/fleetgate/pending.json"), "{not json").expect("garbage");
    let o = m.open("r2", "", Duration::from_secs(5), None).expect("opened by r2");
    assert!(matches!(o.intent, Err(fleetgate_apply::MachineError::Failed(_))), "{:?}", o.intent);
    assert!(!o.released);
}

/// Issue 15: an opening told what the deploy would do releases the lock
/// itself when the host is already there (one round trip for an up-to-date
/// host), and keeps it for anything else.
#[test]
fn the_opening_releases_the_lock_of_a_host_already_up_to_date() {
    use fleetgate_apply::opening::Release;
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, new) = host(tmp.path(), 0);
    let lock = tmp.path().join("run/fleetgate/lock");
    let mut m = machine(tmp.path());
    let t = Duration::from_secs(5);
    // Not there yet: the lock stays.
    let o = m.open("r1", "", t, Some(Release { system: &new, booted: false })).expect("opened");
    assert!(!o.released && lock.exists());
    m.unlock("r1").expect("unlocked");
    // There (running, profile; booted too): released, and the status line
    // of the caller's script is still read.
    let o = m.open("r1", "exit 2", t, Some(Release { system: &old, booted: true })).expect("opened");
    assert!(o.released && !lock.exists(), "{o:?}");
    assert_eq!(o.extra.status, Some(2));
    // A pending intent keeps the lock, whatever the systems.
    fs::create_dir_all(tmp.path().join("var/lib/fleetgate")).expect("dir");
    fs::write(tmp.path().join("var/lib/fleetgate/pending.json"), "{}").expect("intent");
    let o = m.open("r1", "", t, Some(Release { system: &old, booted: false })).expect("opened");
    assert!(!o.released && lock.exists());
}

/// A failing `switch-to-configuration boot` in that login confirms nothing:
/// the watchdog is asked to roll back.
#[test]
fn a_failing_boot_default_confirms_nothing_and_rolls_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, new) = host(tmp.path(), 0);
    let stc = Path::new(&new).join("bin/switch-to-configuration");
    let text = fs::read_to_string(&stc).expect("stc");
    exe(&stc, &text.replacen("#!/bin/sh\n", "#!/bin/sh\n[ \"$1\" != boot ] || { echo boot broke; exit 1; }\n", 1));
    let mut m = machine(tmp.path());
    let o = live_switch(&mut m, &mut Silent, &plan(&old, &new));
    assert!(matches!(&o, Outcome::RolledBack { why, .. } if why.contains("boot default failed")), "{o:?}");
    assert!(!tmp.path().join("run/fleetgate/runs/r1/confirm").exists());
    let s = m.state().expect("state");
    assert_eq!((s.current, s.profile), (old.clone(), old));
}

#[test]
fn live_switch_rolled_back_by_the_watchdog_with_no_inherited_path() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, new) = host(tmp.path(), 2);
    let mut m = machine(tmp.path());
    let o = live_switch(&mut m, &mut Silent, &plan(&old, &new));
    let calls = fs::read_to_string(tmp.path().join("calls")).unwrap_or_default();
    assert!(matches!(&o, Outcome::RolledBack { why, .. } if why.contains("exit 2")), "{o:?}\n{calls}");
    assert_eq!(calls, "new test\nold switch\n");
    let s = m.state().expect("state");
    assert_eq!((s.current, s.profile, s.profile_generation), (old.clone(), old, Some(1)));
}

#[test]
fn a_watchdog_without_its_tools_refuses_and_nothing_is_activated() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, new) = host(tmp.path(), 0);
    for s in [&old, &new] {
        fs::remove_file(Path::new(s).join("sw/bin/timeout")).expect("rm");
    }
    let mut m = machine(tmp.path());
    let o = live_switch(&mut m, &mut Silent, &plan(&old, &new));
    assert!(matches!(&o, Outcome::Refused { why, .. } if why.contains("timeout is not in")), "{o:?}");
    assert!(!tmp.path().join("calls").exists(), "nothing was activated");
    assert_eq!(m.state().expect("state").profile, old);
}

/// A machine at `root` whose boot loader is GRUB with `cfg` as its
/// `/boot/grub/grub.cfg`; also returns that directory.
fn grub_machine(root: &Path, cfg: &str) -> (std::path::PathBuf, ScriptMachine<Conn>) {
    let grub = root.join("boot/grub");
    fs::create_dir_all(&grub).expect("mkdir");
    fs::write(grub.join("grub.cfg"), cfg).expect("write");
    let mut m = machine(root);
    m.loader = Some(Loader::Grub { cfg: "/boot/grub/grub.cfg".into() });
    (grub, m)
}

#[test]
fn grubenv_next_entry_written_and_undone_without_grub_tools() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, new) = host(tmp.path(), 0);
    let (grub, mut m) = grub_machine(tmp.path(), &grub_cfg(&old, &new, true));
    let armed = m.arm_once(&new, &old).expect("arm");
    assert!(matches!(armed, Armed::Once { .. }), "{armed:?}");
    let block = fs::read(grub.join("grubenv")).expect("grubenv");
    assert_eq!(block.len(), 1024);
    assert_eq!(
        Grubenv::parse(&block).expect("parses").get("next_entry"),
        Some("NixOS - All configurations>NixOS - Configuration 2 (x)>NixOS - Configuration 2 - Default (x)")
    );
    m.disarm_once(&old).expect("disarm");
    assert_eq!(Grubenv::parse(&fs::read(grub.join("grubenv")).expect("read")).expect("parses").get("next_entry"), None);
    // A default that does not boot the fallback: cannot.
    assert!(matches!(m.arm_once(&old, &new).expect("arm"), Armed::Cannot(_)));
}

/// With `boot.loader.grub.default = "saved"` every entry of NixOS's grub.cfg
/// saves itself as the default when booted, a one-time boot included (seen
/// on real GRUB 2.06 in a lab VM): a hung trial would boot again after the
/// power cycle, so no one-time boot is armed and grubenv is left alone.
#[test]
fn grub_saved_default_cannot_boot_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, new) = host(tmp.path(), 0);
    let cfg = grub_cfg(&old, &new, true)
        .replace("set default=0", "set default=\"${saved_entry}\"")
        .replace("  linux /k init=", "  savedefault\n  linux /k init=");
    let (grub, mut m) = grub_machine(tmp.path(), &cfg);
    let armed = m.arm_once(&new, &old).expect("arm");
    assert!(matches!(&armed, Armed::Cannot(why) if why.contains("default = \"saved\"")), "{armed:?}");
    assert!(!grub.join("grubenv").exists(), "grubenv untouched");
}

#[test]
fn systemd_boot_entries_found_by_init_in_all_three_layouts() {
    for (old_file, new_file, default) in [
        ("nixos-generation-1.conf", "nixos-generation-2.conf", "nixos-generation-1.conf"),
        ("nixos-generation-1.conf", "nixos-generation-2+3.conf", "nixos-generation-*"),
        ("nixos-0a1b2c3d.conf", "nixos-9f8e7d6c+3.conf", "nixos-*"),
    ] {
        let tmp = tempfile::tempdir().expect("tmp");
        let (old, new) = host(tmp.path(), 0);
        let entries = tmp.path().join("boot/loader/entries");
        fs::create_dir_all(&entries).expect("mkdir");
        fs::create_dir_all(tmp.path().join("sys/firmware/efi/efivars")).expect("mkdir");
        fs::write(tmp.path().join("boot/loader/loader.conf"), format!("timeout 5\ndefault {default}\n")).expect("w");
        for (file, sys) in [(old_file, &old), (new_file, &new)] {
            fs::write(entries.join(file), format!("title NixOS\nlinux /k\noptions init={sys}/init root=x\n"))
                .expect("w");
        }
        let log = tmp.path().join("bootctl.log");
        exe(&Path::new(&old).join("sw/bin/bootctl"), &format!("#!/bin/sh\necho \"$*\" >> {}\n", log.display()));
        let mut m = machine(tmp.path());
        m.loader = Some(Loader::SystemdBoot { esp: "/boot".into() });
        let armed = m.arm_once(&new, &old).expect("arm");
        assert!(matches!(armed, Armed::Once { .. }), "{armed:?}");
        let new_id = format!("{}.conf", new_file.split(['+', '.']).next().unwrap_or_default());
        let calls = fs::read_to_string(&log).expect("log");
        let expected = if default == old_file {
            format!("set-oneshot {new_id}\n")
        } else {
            format!("set-default {old_file}\nset-oneshot {new_id}\n")
        };
        assert_eq!(calls, expected, "{new_file}");
        // Going back undoes the one-shot and keeps the fallback the default.
        m.disarm_once(&old).expect("disarm");
        let undone = fs::read_to_string(&log).expect("log")[calls.len()..].to_owned();
        let expected = if default == old_file {
            "set-oneshot \n".to_owned()
        } else {
            format!("set-oneshot \nset-default {old_file}\n")
        };
        assert_eq!(undone, expected, "{new_file}");
        // Arm again, and bless: the counter goes, the pin too.
        m.arm_once(&new, &old).expect("arm");
        let before_bless = fs::read_to_string(&log).expect("log").len();
        m.bless_entry(&new).expect("bless");
        assert!(entries.join(&new_id).exists(), "boot counter removed: {new_file}");
        let blessed = fs::read_to_string(&log).expect("log")[before_bless..].to_owned();
        assert_eq!(blessed, if default == old_file { "" } else { "set-default \n" }, "{new_file}");
    }
}

/// Current nixpkgs with boot counting (systemd-boot-builder.py, content-hash
/// layout): entries named by content hash, `preferred nixos-<hash>.conf` and
/// `default nixos-*` in loader.conf. The real listing script reads every
/// entry's `version`/`sort-key`, both loader.conf keys and the version in
/// the systemd-boot binary's `.sdmagic`; the default is then systemd-boot's,
/// and a one-time boot is armed only when a failed trial lands on the fallback.
#[test]
fn systemd_boot_content_hashed_entries_with_preferred() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, new) = host(tmp.path(), 0);
    let esp = tmp.path().join("boot");
    let entries = esp.join("loader/entries");
    fs::create_dir_all(&entries).expect("mkdir");
    fs::create_dir_all(esp.join("EFI/systemd")).expect("mkdir");
    fs::create_dir_all(tmp.path().join("sys/firmware/efi/efivars")).expect("mkdir");
    // Names sort against their generations: only `version` orders them right.
    for (file, sys, generation) in [("nixos-ffff0001.conf", &old, 1), ("nixos-0000aaaa+3.conf", &new, 2)] {
        fs::write(
            entries.join(file),
            format!(
                "title NixOS\nversion Generation {generation} NixOS 25.11, built on 2026-02-0{generation}\n\
                 linux /EFI/nixos/k.efi\ninitrd /EFI/nixos/i.efi\n\
                 options rdinit=/nope init={sys}/init loglevel=4\nmachine-id 0123\nsort-key nixos"
            ),
        )
        .expect("w");
    }
    let loader = |version: &str| {
        let mut bin = vec![0_u8; 4096];
        bin.extend_from_slice(format!("#### LoaderInfo: systemd-boot {version} ####").as_bytes());
        bin.extend_from_slice(&[0, 0x4d, 0x5a, b'\n', 7, 7]);
        fs::write(esp.join("EFI/systemd/systemd-bootx64.efi"), bin).expect("w");
    };
    let conf = |preferred: &str| {
        fs::write(esp.join("loader/loader.conf"), format!("timeout 5\npreferred {preferred}\ndefault nixos-*\n"))
            .expect("w");
    };
    let log = tmp.path().join("bootctl.log");
    exe(&Path::new(&old).join("sw/bin/bootctl"), &format!("#!/bin/sh\necho \"$*\" >> {}\n", log.display()));
    let mut m = machine(tmp.path());
    m.loader = Some(Loader::SystemdBoot { esp: "/boot".into() });

    // systemd-boot 260 boots the preferred entry: the fallback, as the builder
    // leaves it before a trial. Armed: the pin agrees with `preferred`.
    loader("260.1");
    conf("nixos-ffff0001.conf");
    let default = m.boot_default().expect("read").expect("told");
    assert_eq!((default.entry.as_str(), default.system.as_deref()), ("nixos-ffff0001.conf", Some(old.as_str())));
    let armed = m.arm_once(&new, &old).expect("arm");
    assert!(matches!(armed, Armed::Once { .. }), "{armed:?}");
    assert_eq!(
        fs::read_to_string(&log).expect("log"),
        "set-default nixos-ffff0001.conf\nset-oneshot nixos-0000aaaa.conf\n"
    );
    m.disarm_once(&old).expect("disarm");
    fs::remove_file(&log).expect("rm");

    // An older systemd-boot ignores `preferred`: `default nixos-*` is the
    // newest by version — generation 2, whatever its name.
    loader("257.9");
    let default = m.boot_default().expect("read").expect("told");
    assert_eq!(default.system.as_deref(), Some(new.as_str()));

    // `preferred` naming the new entry while the EFI pin would name the
    // fallback: which wins on systemd-boot 260 is not known, so nothing is
    // armed and nothing is written.
    loader("260");
    conf("nixos-0000aaaa.conf");
    let armed = m.arm_once(&new, &old).expect("arm");
    assert!(
        matches!(&armed, Armed::Cannot(why) if why.contains("cannot be told") && why.contains("preferred")),
        "{armed:?}"
    );
    assert!(!log.exists(), "bootctl was not called");
    // No systemd-boot binary with a version: `preferred` may or may not
    // count. Where it names what `default` picks anyway, the default is told;
    // where it names another entry, it cannot be.
    fs::remove_file(esp.join("EFI/systemd/systemd-bootx64.efi")).expect("rm");
    assert_eq!(m.boot_default().expect("read").and_then(|d| d.system), Some(new.clone()));
    conf("nixos-ffff0001.conf");
    assert_eq!(m.boot_default().expect("read"), None);
}

/// Issue 10's race with the real scripts: the watchdog begins 2 s after
/// the launcher returned (a slow `setsid`). The engine waits for it, the
/// switch is confirmed, and the host stays on the new system past the
/// watchdog's own deadline.
#[test]
fn a_watchdog_that_starts_late_is_waited_for_and_the_host_stays_where_the_report_says() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, new) = host(tmp.path(), 0);
    for s in [&old, &new] {
        let link = Path::new(s).join("sw/bin/setsid");
        fs::remove_file(&link).expect("rm");
        exe(&link, &format!("#!/bin/sh\n{} 2\nexec {} \"$@\"\n", tool("sleep").display(), tool("setsid").display()));
    }
    let mut m = machine(tmp.path());
    let p = plan(&old, &new);
    let o = live_switch(&mut m, &mut Silent, &p);
    assert_eq!(o, Outcome::Switched);
    // Past the watchdog's window: nothing rolls the host back.
    std::thread::sleep(p.window + Duration::from_secs(2));
    let s = m.state().expect("state");
    assert_eq!((s.current, s.profile), (new.clone(), new));
    let state = fs::read_to_string(tmp.path().join("run/fleetgate/runs/r1/state")).expect("state");
    assert_eq!(state.trim(), "confirmed");
    assert_eq!(fs::read_to_string(tmp.path().join("calls")).expect("calls"), "new test\nnew boot\n");
}

/// Replaces `sleep` in both systems' `sw/bin` with one that logs its
/// arguments to `<root>/sleeps`; returns the log's path.
fn log_sleeps(root: &Path, systems: [&str; 2]) -> std::path::PathBuf {
    let log = root.join("sleeps");
    for s in systems {
        let link = Path::new(s).join("sw/bin/sleep");
        fs::remove_file(&link).expect("rm");
        exe(&link, &format!("#!/bin/sh\necho \"$*\" >> {}\nexec {} \"$@\"\n", log.display(), tool("sleep").display()));
    }
    log
}

/// The sleeps the watchdog ran: not the 50 ms ticks of the engine's own
/// look that waits on the host (`Layout::look_watchdog_when`).
fn watchdog_sleeps(log: &Path) -> String {
    let all = fs::read_to_string(log).expect("sleeps");
    all.lines().filter(|l| *l != "0.05").map(|l| format!("{l}\n")).collect()
}

/// Issue 15: the confirmation wakes the watchdog (its FIFO) instead of
/// waiting for a 1-second tick: the only `sleep` it runs is its deadline.
#[test]
fn a_confirmation_wakes_the_watchdog_without_a_polling_sleep() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, new) = host(tmp.path(), 0);
    let log = log_sleeps(tmp.path(), [&old, &new]);
    let mut m = machine(tmp.path());
    let p = plan(&old, &new);
    assert_eq!(live_switch(&mut m, &mut Silent, &p), Outcome::Switched);
    assert_eq!(watchdog_sleeps(&log), format!("{}\n", p.window.as_secs()));
    let s = m.state().expect("state");
    assert_eq!((s.current, s.profile), (new.clone(), new));
}

/// Without `mkfifo` the watchdog still works: it looks every second.
#[test]
fn without_mkfifo_the_watchdog_looks_every_second_and_confirms() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (old, new) = host(tmp.path(), 0);
    for s in [&old, &new] {
        fs::remove_file(Path::new(s).join("sw/bin/mkfifo")).expect("rm");
    }
    let log = log_sleeps(tmp.path(), [&old, &new]);
    let mut m = machine(tmp.path());
    assert_eq!(live_switch(&mut m, &mut Silent, &plan(&old, &new)), Outcome::Switched);
    let sleeps = watchdog_sleeps(&log);
    assert!(!sleeps.is_empty() && sleeps.lines().all(|l| l == "1"), "{sleeps}");
    assert!(!tmp.path().join("run/fleetgate/runs/r1/wake").exists());
}
