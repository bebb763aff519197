//! `fleetgate facts` and `fleetgate check` against lab hosts over real SSH,
//! through the real binary: the incident of product.md §1 and the disk buses
//! that must pass.

use std::path::Path;

use fleetgate_lab::fixture::FleetKnobs;
use fleetgate_lab::testing::LabGuard;
use serde_json::Value;

mod support;

use support::{Run, offline};

fn check(lab: &LabGuard, host: &str, system: &str, extra: &[&str]) -> Run {
    let config = lab.dir().ssh_config().display().to_string();
    let target = format!("ssh://{host}");
    let mut args = vec!["check", "--system", system, "--target", &target, "--ssh-config", &config];
    args.extend_from_slice(extra);
    offline(&args)
}

fn ids(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn finding<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["id"] == id))
        .unwrap_or_else(|| panic!("no finding {id} in {report:#}"))
}

/// Store hashes, the lab's temporary paths, UUIDs (boot ids, file systems,
/// partitions) and sizes vary between runs.
fn redact(text: &str, lab: &Path) -> String {
    redact_sizes(&redact_uuids(&redact_hashes(text, lab)))
}

/// `d0ce5a24-6a66-4222-bbf8-8ff44e344703` → `[UUID]`.
fn redact_uuids(text: &str) -> String {
    let groups = [8, 4, 4, 4, 12];
    let is_uuid = |s: &str| {
        let parts: Vec<&str> = s.split('-').collect();
        parts.len() == 5
            && parts.iter().zip(groups).all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if let Some(candidate) = text.get(i..i + 36) {
            let before_ok = i == 0 || !text.as_bytes()[i - 1].is_ascii_alphanumeric();
            let after_ok = text.as_bytes().get(i + 36).is_none_or(|b| !b.is_ascii_alphanumeric());
            if before_ok && after_ok && is_uuid(candidate) {
                out.push_str("[UUID]");
                i += 36;
                continue;
            }
        }
        let ch = text[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// What else varies in `fleetgate facts` between machines and runs: the
/// running kernel (lab hosts share this machine's), the loop device behind
/// the root, the disk's serial number, the dates in GRUB's entry titles.
fn redact_facts(text: &str) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with("kernel:") {
                return "kernel:      [KERNEL]".to_owned();
            }
            let mut line = line.to_owned();
            if line.starts_with("root:") {
                if let (Some(open), Some(close)) = (line.rfind(", "), line.rfind(')')) {
                    line.replace_range(open + 2..close, "[MAJ:MIN]");
                }
            }
            let words: Vec<String> = line
                .split(' ')
                .map(|w| match (w.strip_prefix("by-id/"), w.rfind('_')) {
                    (Some(_), Some(us)) => {
                        let end = w[us..].find("-part").or_else(|| w[us..].find(',')).map_or(w.len(), |e| us + e);
                        format!("{}[SERIAL]{}", &w[..=us], &w[end..])
                    }
                    _ => w.to_owned(),
                })
                .collect();
            let line = words.join(" ");
            // `(2026-11-22 - 25.05.lab-r1)`
            match line.find(" (").map(|i| i + 2).filter(|&i| line.get(i..i + 10).is_some_and(is_date)) {
                Some(i) => format!("{}[DATE]{}", &line[..i], &line[i + 10..]),
                None => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// `12.3 GiB` → `[SIZE]` (free space and memory).
fn redact_sizes(text: &str) -> String {
    text.lines()
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            let mut out: Vec<String> = Vec::new();
            let mut j = 0;
            while j < words.len() {
                let number = words[j].contains('.') && words[j].chars().all(|c| c.is_ascii_digit() || c == '.');
                if number && words.get(j + 1).is_some_and(|u| u.trim_end_matches(',') == "GiB") {
                    let comma = if words[j + 1].ends_with(',') { "," } else { "" };
                    out.push(format!("[SIZE]{comma}"));
                    j += 2;
                } else {
                    out.push(words[j].to_owned());
                    j += 1;
                }
            }
            out.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Store hashes and the lab's temporary paths vary between runs.
fn redact_hashes(text: &str, lab: &Path) -> String {
    let text = text.replace(&lab.display().to_string(), "[LAB]");
    let mut redacted = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find("/nix/store/") {
        let (head, tail) = rest.split_at(i + "/nix/store/".len());
        redacted.push_str(head);
        let hash_len = tail.bytes().take_while(u8::is_ascii_alphanumeric).count();
        if hash_len >= 32 && tail.as_bytes().get(32) == Some(&b'-') {
            redacted.push_str("[HASH]");
            rest = &tail[32..];
        } else {
            rest = tail;
        }
    }
    redacted.push_str(rest);
    // Closure sizes change with the initrd's compressed size.
    redacted
        .lines()
        .map(|line| {
            if let Some(i) = line.find("closure size ") {
                let end = line[i..].find(" B").or_else(|| line[i..].find("iB")).map_or(line.len(), |e| i + e + 2);
                format!("{}closure size [SIZE]{}", &line[..i], &line[end..])
            } else if let Some(key) =
                ["\"old_size\": ", "\"new_size\": "].iter().find(|k| line.trim_start().starts_with(**k))
            {
                let indent = &line[..line.len() - line.trim_start().len()];
                let comma = if line.ends_with(',') { "," } else { "" };
                format!("{indent}{key}\"[SIZE]\"{comma}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn seed_incident_virtio_host_new_initrd_without_virtio_is_blocked() -> anyhow::Result<()> {
    let lab = LabGuard::up(&["web1=virtio,systemd-boot"])?;
    let current = lab.ssh("web1", "readlink -f /run/current-system")?.trim().to_owned();

    // The current system is good: it boots (it just did) and checks clean.
    let good = check(&lab, "web1", &current, &["--json"]);
    assert_eq!(good.code, 0, "{}{}", good.stdout, good.stderr);
    let good: Value = serde_json::from_str(&good.stdout)?;
    assert_eq!(good["decision"], "switch", "{good:#}");

    // The refactor: the virtio drivers vanish from availableKernelModules
    // (nixos-facter with a missing report), and dbus becomes broker.
    let fleet = lab.fleet_dir();
    let mut knobs = FleetKnobs::load(&fleet)?;
    let web1 = knobs.hosts.get_mut("web1").expect("web1 knobs");
    web1.available_kernel_modules.retain(|m| !m.starts_with("virtio_"));
    web1.switch_inhibitors.insert("dbus-implementation".into(), "broker".into());
    web1.revision += 1;
    knobs.save(&fleet)?;
    let new = lab.build(&["web1"])?.remove("web1").expect("built");

    let flake = format!("{}#web1", fleet.display());
    let run = check(&lab, "web1", &new, &["--json", "--flake", &flake]);
    assert_eq!(run.code, 1, "blocked exits 1: {}{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(report["decision"], "blocked");
    assert_eq!(report["current"], current.as_str());
    let missing = finding(&report, "initrd.missing-modules");
    assert_eq!(missing["severity"], "error");
    let message = missing["message"].as_str().unwrap_or_default();
    assert!(message.contains("virtio_blk") && message.contains("virtio_pci"), "{message}");
    assert_eq!(missing["fix"], r#"boot.initrd.availableKernelModules = [ "virtio_blk" "virtio_pci" ];"#);
    // ... and that a live switch is refused, so the change needs a reboot.
    let refused = finding(&report, "switch.refused");
    assert!(
        refused["evidence"].as_array().is_some_and(|e| e.iter().any(|l| l == "dbus-implementation : dbus -> broker")),
        "{refused:#}"
    );
    assert!(report["next_step"].as_str().is_some_and(|s| s.contains("needs a reboot")), "{report:#}");
    // The hazard lint names the cause: no facter report, no hand-written modules.
    assert_eq!(finding(&report, "hazard.facter-report-missing")["severity"], "error");
    assert!(ids(&report).contains(&"hazard.stage1-hangs".to_owned()));

    let human = check(&lab, "web1", &new, &["--flake", &flake]);
    assert_eq!(human.code, 1);
    let root = lab.dir().root().to_path_buf();
    insta::assert_snapshot!("seed_incident_human", redact(&human.stdout, &root));
    insta::assert_snapshot!("seed_incident_json", redact(&run.stdout, &root));

    let left = lab.down()?;
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

#[test]
fn lab_nvme_and_sata_hosts_pass_with_the_default_fixture() -> anyhow::Result<()> {
    let lab = LabGuard::up(&["db1=nvme,grub", "st1=sata,systemd-boot"])?;
    for (host, disk, modules) in [("db1", "nvme0n1p2", vec!["nvme"]), ("st1", "sda2", vec!["sd_mod", "ahci"])] {
        let current = lab.ssh(host, "readlink -f /run/current-system")?.trim().to_owned();
        let run = check(&lab, host, &current, &["--json"]);
        assert_eq!(run.code, 0, "{host}: {}{}", run.stdout, run.stderr);
        let report: Value = serde_json::from_str(&run.stdout)?;
        assert_eq!(report["decision"], "switch", "{host}: {report:#}");
        let coverage = finding(&report, "initrd.coverage");
        let evidence: Vec<&str> =
            coverage["evidence"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        for m in &modules {
            assert!(evidence.iter().any(|e| e.contains(&format!("→ {m}: in the initrd"))), "{host}: {evidence:?}");
        }
        assert!(coverage["message"].as_str().is_some_and(|m| m.contains(disk)), "{coverage:#}");
        // The PCIe root port above the NVMe controller is bound to the
        // built-in `pcieport`, which no kernel lists anywhere: a bridge needs
        // no driver, and it neither blocks nor warns.
        if host == "db1" {
            assert!(evidence.iter().any(|e| e.contains("driver pcieport → PCI bridge")), "{host}: {evidence:?}");
        }
        assert!(
            !ids(&report).iter().any(|id| id.starts_with("initrd.") && id != "initrd.coverage"),
            "{host}: {report:#}"
        );

        // Without the bus's drivers, the same host is blocked, naming them.
        let fleet = lab.fleet_dir();
        let mut knobs = FleetKnobs::load(&fleet)?;
        let k = knobs.hosts.get_mut(host).expect("knobs");
        let before = k.available_kernel_modules.clone();
        k.available_kernel_modules.retain(|m| !modules.contains(&m.as_str()));
        k.revision += 1;
        knobs.save(&fleet)?;
        let broken = lab.build(&[host])?.remove(host).expect("built");
        let run = check(&lab, host, &broken, &["--json"]);
        assert_eq!(run.code, 1, "{host}: {}", run.stdout);
        let report: Value = serde_json::from_str(&run.stdout)?;
        let quoted: Vec<String> = modules.iter().map(|m| format!("\"{m}\"")).collect();
        assert_eq!(
            finding(&report, "initrd.missing-modules")["fix"],
            format!("boot.initrd.availableKernelModules = [ {} ];", quoted.join(" ")).as_str()
        );
        // A change that leaves the boot-time parts alone stays a live switch.
        let mut knobs = FleetKnobs::load(&fleet)?;
        let k = knobs.hosts.get_mut(host).expect("knobs");
        k.available_kernel_modules = before;
        k.services.insert("extra".into(), true);
        k.revision += 1;
        knobs.save(&fleet)?;
        let services_only = lab.build(&[host])?.remove(host).expect("built");
        let run = check(&lab, host, &services_only, &["--json"]);
        assert_eq!(run.code, 0, "{host}: {}", run.stdout);
        let report: Value = serde_json::from_str(&run.stdout)?;
        assert_eq!(report["decision"], "switch", "{host}: {report:#}");
    }

    // facts over ssh, human form.
    let config = lab.dir().ssh_config().display().to_string();
    let run = offline(&["facts", "--target", "ssh://db1", "--ssh-config", &config]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("nvme0 [nvme]") && run.stdout.contains("driver nvme (module nvme)"), "{}", run.stdout);
    assert!(run.stdout.contains("BIOS, GRUB"), "{}", run.stdout);
    let root = lab.dir().root().to_path_buf();
    insta::assert_snapshot!("nvme_facts_human", redact_facts(&redact(&run.stdout, &root)));

    // Only a switch inhibitor changes: NixOS refuses the live switch, and
    // nothing else stands in the way: `boot`.
    let fleet = lab.fleet_dir();
    let mut knobs = FleetKnobs::load(&fleet)?;
    let k = knobs.hosts.get_mut("db1").expect("knobs");
    k.services.remove("extra");
    k.switch_inhibitors.insert("dbus-implementation".into(), "broker".into());
    k.revision += 1;
    knobs.save(&fleet)?;
    let inhibited = lab.build(&["db1"])?.remove("db1").expect("built");
    let run = check(&lab, "db1", &inhibited, &[]);
    assert_eq!(run.code, 0, "boot exits 0: {}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("decision: BOOT"), "{}", run.stdout);
    insta::assert_snapshot!("inhibitor_only_boot_human", redact(&run.stdout, &root));
    let left = lab.down()?;
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

#[test]
fn usage_and_io_errors_exit_2() {
    let run = offline(&["check", "--target", "local"]);
    assert_eq!(run.code, 2, "missing --system is a usage error");
    let run = offline(&["check", "--system", "/nonexistent", "--target", "local"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("cannot read the system /nonexistent"), "{}", run.stderr);
    let run = offline(&[
        "facts",
        "--target",
        "ssh://nobody@127.0.0.1:1",
        "--ssh-opt=-F",
        "--ssh-opt=/dev/null",
        "--ssh-opt=-oUserKnownHostsFile=/dev/null",
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);
    let run = offline(&["facts", "--target", "/nonexistent/facts.json"]);
    assert_eq!(run.code, 2);
    // Neither local, nor ssh://, nor a file: say what a target is.
    let run = offline(&["facts", "--target", "web1"]);
    assert_eq!(run.code, 2);
    let stderr = one_line(&run.stderr);
    assert!(
        stderr.contains("T must be `local`, `ssh://[user@]host[:port]`, or a facts file from `fleetgate facts --json`"),
        "{}",
        run.stderr
    );
    assert!(stderr.contains("try `--target ssh://web1`"), "{}", run.stderr);
    let run = offline(&["check", "--system", "/nonexistent", "--target", "web1"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    // A facts file that is not one: the reason once, and what to do.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{").expect("write");
    let run = offline(&["facts", "--target", &bad.display().to_string()]);
    assert_eq!(run.code, 2);
    let stderr = one_line(&run.stderr);
    assert!(stderr.contains("is not a fleetgate facts document") && stderr.contains("help:"), "{}", run.stderr);
    assert_eq!(stderr.matches("EOF while parsing").count(), 1, "{}", run.stderr);
    let run = offline(&["facts", "--target", "local", "--timeout", "0"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("give at least 1 second"), "{}", run.stderr);
    let run = offline(&["check", "--system", "/nonexistent", "--target", "local", "--flake", "web1"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--flake wants FLAKE#HOST"), "{}", run.stderr);
}

/// miette wraps long lines: compare text with whitespace runs collapsed
/// and its frame characters dropped.
fn one_line(text: &str) -> String {
    text.split_whitespace().filter(|w| !matches!(*w, "│" | "×" | "╰─▶" | "├─▶")).collect::<Vec<_>>().join(" ")
}

#[test]
fn local_facts_and_a_facts_file_target() -> anyhow::Result<()> {
    // Live: only what holds on any machine.
    let run = offline(&["facts", "--target", "local", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let facts: Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(facts["format"], 1);
    assert!(facts["kernel_release"].as_str().is_some_and(|k| !k.is_empty()), "{facts:#}");
    assert!(facts["boot_id"].as_str().is_some_and(|b| !b.is_empty()), "{facts:#}");
    assert!(facts["root_chain"].as_array().is_some_and(|c| !c.is_empty()), "{facts:#}");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("facts.json");
    std::fs::write(&file, &run.stdout)?;
    let again = offline(&["facts", "--target", &file.display().to_string(), "--json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(serde_json::from_str::<Value>(&again.stdout)?, facts);
    let human = offline(&["facts", "--target", "local"]);
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(human.stdout.contains("root chain:"), "{}", human.stdout);

    // A facts file captured on a virtio VM whose kernel has the virtio drivers built in.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../facts/tests/fixtures/virtio-vm.facts.json");
    let human = offline(&["facts", "--target", &fixture.display().to_string()]);
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(human.stdout.contains("virtio1 [virtio] driver virtio_blk (built in)"), "{}", human.stdout);
    assert!(human.stdout.contains("root:        /dev/vda (ext4, 254:0)"), "{}", human.stdout);
    Ok(())
}
