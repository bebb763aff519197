//! The lab's own tests: hosts come up with real sshd and real Nix stores,
//! generations boot or hang the way NixOS does, the firmware's one-shot,
//! boot-counting and grubenv mechanisms behave, and `down` leaves nothing.
//! Needs root, like the lab itself.

use std::process::{Command, Stdio};
use std::time::Duration;

use fleetgate_lab::lab::NIX_CONFIG;
use fleetgate_lab::process;
use fleetgate_lab::testing::LabGuard;
use fleetgate_lab::{Lab, Power};

/// Real `nix copy` to the host's own store over real SSH.
fn copy_to(lab: &Lab, host: &str, path: &str) {
    let mut copy = Command::new("nix");
    copy.env("NIX_CONFIG", NIX_CONFIG).env("NIX_SSHOPTS", format!("-F {}", lab.dir().ssh_config().display())).args([
        "copy",
        "--to",
        &format!("ssh://{host}"),
        path,
    ]);
    process::run(&mut copy, Duration::from_secs(300)).expect("nix copy to the lab host");
}

/// Makes `path` the next generation and runs its switch-to-configuration.
fn activate(lab: &Lab, host: &str, path: &str, action: &str) -> String {
    lab.ssh(host, &format!("nix-env -p /nix/var/nix/profiles/system --set {path} >/dev/null && {path}/bin/switch-to-configuration {action} 2>&1; echo exit=$?"))
        .expect("ssh")
}

fn booted(lab: &Lab, host: &str) -> String {
    lab.ssh(host, "readlink /run/booted-system").expect("ssh").trim().to_owned()
}

fn boot_id(lab: &Lab, host: &str) -> String {
    lab.ssh(host, "cat /proc/sys/kernel/random/boot_id").expect("ssh").trim().to_owned()
}

#[test]
fn three_hosts_boot_take_nix_copy_and_reboot_into_a_good_generation() {
    let lab = LabGuard::up(&["web1=virtio,systemd-boot", "db1=nvme,grub", "cache1=sata,systemd-boot"]).unwrap();
    let first = lab.build(&["web1", "db1", "cache1"]).unwrap();
    for (host, system) in &first {
        let status = lab.status(host).unwrap();
        assert_eq!(status.power, Power::Running, "{host}");
        assert_eq!(booted(&lab, host), *system, "{host} booted its first generation");
        assert_eq!(Some(boot_id(&lab, host)), status.boot_id, "{host}'s boot id is the supervisor's");
        let hostname = lab.ssh(host, "hostname").unwrap();
        assert_eq!(hostname.trim(), host);
    }
    // Each host sees its own disk, the way Linux shows it.
    // NixOS runs sshd as sshd.service: health checks name it so.
    for host in ["web1", "db1", "cache1"] {
        assert_eq!(lab.ssh(host, "systemctl is-active sshd.service").unwrap(), "active\n", "{host}");
    }
    // `fleetgate-lab status | head` : a reader that goes away is no panic.
    let mut status = Command::new(fleetgate_lab::lab::lab_binary().unwrap())
        .arg("--lab")
        .arg(lab.dir().root())
        .arg("status")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(status.stdout.take());
    let out = status.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // A second `up` on the same lab says how to bring it down, --lab included.
    let spec = fleetgate_lab::LabSpec::new(vec![fleetgate_lab::HostSpec::parse("web1").unwrap()]).unwrap();
    let again = Lab::up(lab.dir().clone(), &spec, &mut |_| {}).err().expect("a second up fails");
    let hint = format!("`fleetgate-lab --lab {} down`", lab.dir().root().display());
    assert!(again.to_string().contains(&hint), "{again}");
    let root = lab.ssh("db1", "findmnt -no SOURCE,FSTYPE / | tr -s ' '; readlink -f /sys/block/nvme0n1").unwrap();
    assert!(root.starts_with("/dev/nvme0n1p2 ext4"), "{root}");
    assert!(root.contains("/sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1"), "{root}");
    let sata = lab.ssh("cache1", "readlink /dev/disk/by-label/NIXOS_ROOT; cat /sys/block/sda/device/modalias").unwrap();
    assert_eq!(sata, "../../sda2\nscsi:t-0x00\n");

    for host in ["web1", "db1", "cache1"] {
        lab.edit_host(host, |k| k.revision = 2).unwrap();
    }
    let second = lab.build(&["web1", "db1", "cache1"]).unwrap();
    for (host, system) in &second {
        assert_ne!(first[host], *system, "a new revision is a new generation");
        copy_to(&lab, host, system);
        let present = lab.ssh(host, &format!("nix-store --check-validity {system} && echo valid")).unwrap();
        assert_eq!(present.trim(), "valid", "{host} has the closure in its own store");
        assert!(activate(&lab, host, system, "boot").ends_with("exit=0\n"), "{host}");
        let before = boot_id(&lab, host);
        let status = lab.reboot(host).unwrap();
        assert_eq!(status.power, Power::Running, "{host}: {:?}", status.reason);
        assert_eq!(booted(&lab, host), *system, "{host} booted the new generation");
        assert_ne!(boot_id(&lab, host), before, "{host} has a new boot id");
    }

    // A host that runs `reboot` itself comes back with a new boot id.
    let boots = lab.status("web1").unwrap().boots;
    let before = boot_id(&lab, "web1");
    let _ = lab.ssh("web1", "reboot");
    let status = lab.wait_next_boot("web1", boots).unwrap();
    assert_eq!(status.power, Power::Running);
    assert_ne!(boot_id(&lab, "web1"), before);

    let left = lab.down().unwrap();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn missing_root_driver_hangs_and_boot_counting_falls_back_after_power_cycles() {
    let lab = LabGuard::up(&["vps1=virtio,systemd-boot"]).unwrap();
    let good = booted(&lab, "vps1");
    lab.edit_host("vps1", |k| {
        k.revision = 2;
        k.available_kernel_modules.retain(|m| !m.starts_with("virtio"));
        k.boot_counting = 2;
    })
    .unwrap();
    let bad = lab.build(&["vps1"]).unwrap().remove("vps1").unwrap();
    copy_to(&lab, "vps1", &bad);
    assert!(activate(&lab, "vps1", &bad, "boot").ends_with("exit=0\n"));
    let entries = lab.ssh("vps1", "ls /boot/loader/entries; grep default /boot/loader/loader.conf").unwrap();
    assert_eq!(entries, "nixos-generation-1.conf\nnixos-generation-2+2.conf\ndefault nixos-generation-*\n");

    // Two tries, both hang exactly as the incident's VPSes did.
    let hung = lab.reboot("vps1").unwrap();
    assert_eq!(hung.power, Power::Hung);
    assert_eq!(hung.entry.as_deref(), Some("nixos-generation-2.conf"));
    let console = lab.console("vps1").unwrap();
    let last = console.lines().last().unwrap();
    assert!(last.contains("A start job is running for /dev/disk/by-label/NIXOS_ROOT"), "{last}");
    assert!(console.contains("no driver in the initrd for virtio:d00000002v00001AF4"), "{console}");
    let hung = lab.power_cycle("vps1").unwrap();
    assert_eq!((hung.power, hung.entry.as_deref()), (Power::Hung, Some("nixos-generation-2.conf")));

    // Tries exhausted: the entry sorts last and generation 1 boots by itself.
    let back = lab.power_cycle("vps1").unwrap();
    assert_eq!(back.power, Power::Running, "{:?}", back.reason);
    assert_eq!(back.entry.as_deref(), Some("nixos-generation-1.conf"));
    assert_eq!(booted(&lab, "vps1"), good);
    let entries = lab.ssh("vps1", "ls /boot/loader/entries").unwrap();
    assert_eq!(entries, "nixos-generation-1.conf\nnixos-generation-2+0-2.conf\n");
    let left = lab.down().unwrap();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn oneshot_boots_once_and_a_failed_stage_2_is_emergency_mode() {
    let lab = LabGuard::up(&["vps2=virtio,systemd-boot"]).unwrap();
    let good = booted(&lab, "vps2");
    lab.edit_host("vps2", |k| {
        k.revision = 2;
        k.stage2_fails = true;
    })
    .unwrap();
    let bad = lab.build(&["vps2"]).unwrap().remove("vps2").unwrap();
    copy_to(&lab, "vps2", &bad);
    activate(&lab, "vps2", &bad, "boot");
    lab.ssh("vps2", "bootctl set-default nixos-generation-1.conf && bootctl set-oneshot nixos-generation-2.conf")
        .unwrap();
    let failed = lab.reboot("vps2").unwrap();
    assert_eq!(failed.power, Power::Emergency, "{failed:?}");
    assert!(lab.console("vps2").unwrap().contains("You are in emergency mode"));
    let back = lab.power_cycle("vps2").unwrap();
    assert_eq!((back.power, back.entry.as_deref()), (Power::Running, Some("nixos-generation-1.conf")));
    assert_eq!(booted(&lab, "vps2"), good);
    let left = lab.down().unwrap();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn grub_next_entry_boots_once_and_unhealthy_services_degrade_the_system() {
    let lab = LabGuard::up(&["db2=sata,grub"]).unwrap();
    let first = booted(&lab, "db2");
    lab.edit_host("db2", |k| {
        k.revision = 2;
        k.services.insert("broken".into(), false);
    })
    .unwrap();
    let second = lab.build(&["db2"]).unwrap().remove("db2").unwrap();
    copy_to(&lab, "db2", &second);
    let switched = activate(&lab, "db2", &second, "switch");
    assert!(switched.contains("warning: the following units failed: broken.service"), "{switched}");
    assert!(switched.ends_with("exit=4\n"), "{switched}");
    let health = lab.ssh("db2", "systemctl is-system-running; systemctl is-active app broken; echo $?").unwrap();
    assert_eq!(health, "degraded\nactive\nfailed\n3\n");

    // GRUB's default is generation 2 now; grub-reboot picks generation 1 once.
    let title = lab.ssh("db2", "grep -o 'NixOS - Configuration 1 ([^\"]*)' /boot/grub/grub.cfg").unwrap();
    lab.ssh("db2", &format!("grub-reboot 'NixOS - All configurations>{}'", title.trim())).unwrap();
    assert_eq!(lab.reboot("db2").unwrap().power, Power::Running);
    assert_eq!(booted(&lab, "db2"), first);
    assert_eq!(lab.ssh("db2", "grub-editenv - list").unwrap(), "next_entry=\n");
    assert_eq!(lab.reboot("db2").unwrap().power, Power::Running);
    assert_eq!(booted(&lab, "db2"), second);
    let left = lab.down().unwrap();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// What differs between machines and runs in boot loader files, replaced by
/// the names the recorded golden files use (tests/golden/*/README.md): the
/// generations' toplevels, other store hashes, the kernel version, dates,
/// the machine id.
fn normalise(text: &str, toplevels: &[(&str, &str)], kver: &str) -> String {
    let mut text = text.to_owned();
    for (path, name) in toplevels {
        text = text.replace(path, &format!("@{name}@"));
    }
    let text = text.replace(kver, "@kver@");
    let mut out = String::new();
    for line in text.lines() {
        let mut line = line.to_owned();
        // Store hashes: 32 characters of Nix's base32, then '-'.
        let is_hash = |s: &str| {
            s.len() == 33 && s.ends_with('-') && s[..32].bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        };
        while let Some(at) = (0..line.len().saturating_sub(32)).find(|&i| {
            line.get(i..i + 33).is_some_and(is_hash) && (i == 0 || !line.as_bytes()[i - 1].is_ascii_alphanumeric())
        }) {
            line.replace_range(at..at + 32, "@hash@");
        }
        // Dates: YYYY-MM-DD.
        while let Some(at) = (0..line.len().saturating_sub(9)).find(|&i| {
            line.get(i..i + 10).is_some_and(|s| {
                s.bytes().enumerate().all(|(k, b)| if k == 4 || k == 7 { b == b'-' } else { b.is_ascii_digit() })
            })
        }) {
            line.replace_range(at..at + 10, "@date@");
        }
        if line.starts_with("machine-id ") {
            line = "machine-id @machine-id@".into();
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn golden(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Installs generation 2 (a specialisation `debug`, dbus → broker, and
/// `change`) over a host's generation 1 with the fixture's installer, as
/// the golden files were recorded; returns the toplevels by their golden names.
fn install_golden_generations(
    lab: &Lab,
    host: &str,
    change: impl FnOnce(&mut fleetgate_lab::fixture::HostKnobs),
) -> Vec<(String, &'static str)> {
    let first = booted(lab, host);
    lab.edit_host(host, |k| {
        k.revision = 2;
        k.specialisations = vec!["debug".into()];
        k.switch_inhibitors.insert("dbus-implementation".into(), "broker".into());
        change(k);
    })
    .expect("edit knobs");
    let second = lab.build(&[host]).expect("build").remove(host).expect("built");
    copy_to(lab, host, &second);
    assert!(activate(lab, host, &second, "boot").ends_with("exit=0\n"));
    let debug = lab.ssh(host, &format!("readlink -f {second}/specialisation/debug")).expect("ssh").trim().to_owned();
    vec![(first, "generation-1"), (second, "generation-2"), (debug, "generation-2-specialisation-debug")]
}

/// The fixture's systemd-boot installer writes what nixpkgs' real
/// systemd-boot-builder.py writes (recorded: tests/golden/
/// systemd-boot-builder/README.md): the same files on the ESP, the same
/// entries (specialisations included) and loader.conf, line for line.
#[test]
fn fixture_systemd_boot_entries_are_what_the_real_builder_writes() {
    let lab = LabGuard::up(&["gold1=virtio,systemd-boot"]).unwrap();
    let toplevels = install_golden_generations(&lab, "gold1", |_| {});
    let toplevels: Vec<(&str, &str)> = toplevels.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    let kver = lab.knobs().unwrap().kernel_version;
    let tree = lab.ssh("gold1", "cd /boot && find . -path ./lost+found -prune -o -print").unwrap();
    let mut tree: Vec<String> = normalise(&tree, &toplevels, &kver).lines().map(str::to_owned).collect();
    tree.sort();
    assert_eq!(tree.join("\n") + "\n", golden("systemd-boot-builder/esp-tree.txt"), "the files on the ESP");
    for entry in ["nixos-generation-1.conf", "nixos-generation-2.conf", "nixos-generation-2-specialisation-debug.conf"]
    {
        let text = lab.ssh("gold1", &format!("cat /boot/loader/entries/{entry}")).unwrap();
        assert_eq!(normalise(&text, &toplevels, &kver), golden(&format!("systemd-boot-builder/{entry}")), "{entry}");
    }
    let loader = lab.ssh("gold1", "cat /boot/loader/loader.conf").unwrap();
    assert_eq!(normalise(&loader, &toplevels, &kver), golden("systemd-boot-builder/loader.conf"));
    let left = lab.down().unwrap();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// The fixture's GRUB installer writes the grub.cfg nixpkgs' real
/// install-grub.pl writes (recorded: tests/golden/install-grub/README.md),
/// with a specialisation (nested submenu) and `default = "saved"`.
#[test]
fn fixture_grub_cfg_is_what_the_real_install_grub_writes() {
    let lab = LabGuard::up(&["gold2=sata,grub"]).unwrap();
    let toplevels = install_golden_generations(&lab, "gold2", |k| k.grub_default = "saved".into());
    let toplevels: Vec<(&str, &str)> = toplevels.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    let kver = lab.knobs().unwrap().kernel_version;
    let cfg = lab.ssh("gold2", "cat /boot/grub/grub.cfg").unwrap();
    assert_eq!(normalise(&cfg, &toplevels, &kver), golden("install-grub/grub.cfg"));
    let left = lab.down().unwrap();
    assert!(left.is_empty(), "left behind: {left:#?}");
}
