//! The seed incident (product.md §1) replayed on real machines: lab VMs with
//! real firmware (OVMF, SeaBIOS), real boot loaders (systemd-boot on a FAT
//! ESP, GRUB in the MBR), the generations' real kernel and initrd, Debian's
//! real systemd as PID 1 and real sshd (`fleetgate-lab`'s `vm` hosts).
//! fleetgate is driven only through its binary and its `--json` output; what
//! each host ended on is read from the guest itself: `/run/current-system`,
//! `/run/booted-system`, the system profile, and the boot loader's default
//! entry as the real `bootctl` (or GRUB's own grub.cfg and grubenv) says.
//!
//! Cost: each test boots its VM once to come up, once per verified reboot
//! and twice for the forced incident (the hang, then the power-cycle);
//! scenario 1 (no boot) runs on one VM only, scenario 4 (no boot) follows
//! scenario 3 on the systemd-boot VM; scenario 5 (the agent, from its
//! module's real systemd units) boots its own VM once to come up and once for
//! the agent's verified reboot (it needs a VM whose first generation has no
//! agent, and sharing one would push a test past nextest's limit);
//! docs/benchmarks.md has the numbers. Needs root, like the lab.

use std::path::{Path, PathBuf};
use std::time::Instant;

use fleetgate_lab::testing::LabGuard;
use serde_json::Value;

mod agent_world;
mod support;

use support::offline;

/// Runs a scenario and says how long it took (docs/benchmarks.md quotes
/// these lines; a measurement, never an assertion).
fn timed<T>(what: &str, scenario: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = scenario();
    eprintln!("seed_incident_vm timing: {what}: {:.0} s", start.elapsed().as_secs_f64());
    out
}

/// A VM lab and the files fleetgate keeps beside it.
struct Vms {
    lab: LabGuard,
    scratch: tempfile::TempDir,
}

impl Vms {
    fn up(hosts: &[&str]) -> Vms {
        let lab = LabGuard::up(hosts).expect("the VM lab comes up");
        let power_cycle = format!(
            "{} --lab {} power-cycle {{host}}",
            fleetgate_lab::lab::lab_binary().expect("lab binary").display(),
            lab.dir().root().display()
        );
        // sshd.service is real here; app.service is the generation's own unit.
        std::fs::write(
            lab.fleet_dir().join("fleetgate.toml"),
            format!(
                "[deploy]\nstrategy = \"all\"\n\
                 # The facts script forks hundreds of processes, slow under TCG.\n\
                 facts_timeout_secs = 300\n\n\
                 [defaults]\npower_cycle = \"{power_cycle}\"\n\
                 health.units = [\"sshd.service\", \"app.service\"]\n"
            ),
        )
        .expect("fleetgate.toml");
        Vms { lab, scratch: tempfile::tempdir().expect("scratch dir") }
    }

    fn ssh_config(&self) -> String {
        self.lab.dir().ssh_config().display().to_string()
    }

    fn history(&self) -> PathBuf {
        self.scratch.path().join("history.sqlite")
    }

    fn flake(&self, host: &str) -> String {
        format!("{}#{host}", self.lab.fleet_dir().display())
    }

    /// `fleetgate facts` over real SSH, saved for `check --target FILE`.
    fn facts(&self, host: &str) -> (Value, PathBuf) {
        // The facts script forks a few hundred processes: well under a second
        // on a real machine, half a minute or more under TCG.
        let target = format!("ssh://{host}");
        let config = self.ssh_config();
        let run = offline(&["facts", "--json", "--timeout", "300", "--target", &target, "--ssh-config", &config]);
        assert_eq!(run.code, 0, "facts {host}: {}{}", run.stdout, run.stderr);
        let path = self.scratch.path().join(format!("{host}.facts.json"));
        std::fs::write(&path, &run.stdout).expect("facts file");
        (run.json(), path)
    }

    fn check(&self, facts: &Path, system: &str) -> (i32, Value) {
        let run = offline(&["check", "--json", "--system", system, "--target", &facts.display().to_string()]);
        (run.code, run.json())
    }

    fn deploy(&self, host: &str, extra: &[&str]) -> (i32, Value) {
        let history = self.history().display().to_string();
        let flake = self.flake(host);
        let mut args = vec!["deploy", &flake, "--json", "--history", &history];
        args.extend_from_slice(extra);
        let run = offline(&args);
        eprintln!("fleetgate deploy {host} {extra:?} exited {}:\n{}", run.code, run.stderr);
        (run.code, run.json())
    }

    /// Makes the next generation of `host` with `change` and builds it.
    fn generation(&self, host: &str, change: impl FnOnce(&mut fleetgate_lab::fixture::HostKnobs)) -> String {
        self.lab.edit_host(host, change).expect("edit knobs");
        self.lab.build(&[host]).expect("build").remove(host).expect("built")
    }

    /// Where `host` stands, read from the guest itself.
    fn guest(&self, host: &str) -> Guest {
        guest(&self.lab, host)
    }

    fn console(&self, host: &str) -> String {
        self.lab.console(host).expect("console log")
    }
}

/// Where `host` of `lab` stands, read from the guest itself.
fn guest(lab: &fleetgate_lab::lab::Lab, host: &str) -> Guest {
    let out = lab.ssh(host, GUEST_VIEW).expect("ssh to the guest");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{host}: no {name} in:\n{out}"))
            .trim()
            .to_owned()
    };
    Guest { current: field("current"), booted: field("booted"), profile: field("profile"), default: field("default") }
}

/// What a guest says about itself. `default` is the system the boot
/// loader boots when nobody chooses: the `init=` of systemd-boot's default
/// entry as the real `bootctl status` computes it (loader.conf and the
/// `LoaderEntryDefault` EFI variable), or of GRUB's default entry (grub.cfg's
/// first entry, or `saved_entry` from grubenv with `default = "saved"`).
#[derive(Debug, PartialEq, Eq)]
struct Guest {
    current: String,
    booted: String,
    profile: String,
    default: String,
}

impl Guest {
    fn on(system: &str) -> Guest {
        Guest { current: system.into(), booted: system.into(), profile: system.into(), default: system.into() }
    }
}

const GUEST_VIEW: &str = r#"
echo "current=$(readlink -f /run/current-system)"
echo "booted=$(readlink -f /run/booted-system)"
echo "profile=$(readlink -f /nix/var/nix/profiles/system)"
if [ -d /sys/firmware/efi ] && [ -d /boot/loader ]; then
  init=$(bootctl status 2>/dev/null | sed -n '/^Default Boot Loader Entry:/,/^$/s/^ *options: init=\([^ ]*\).*/\1/p' | head -n 1)
else
  cfg=/boot/grub/grub.cfg
  title=
  if grep -q 'set default="${saved_entry}"' "$cfg"; then
    title=$(sed -n 's/^saved_entry=//p' /boot/grub/grubenv)
  fi
  title=${title##*>}
  if [ -n "$title" ]; then
    init=$(awk -v t="menuentry \"$title\"" 'index($0, t) { f = 1 } f && / init=/ { sub(/.* init=/, ""); sub(/ .*/, ""); print; exit }' "$cfg")
  else
    init=$(grep -m 1 -o 'init=[^ ]*' "$cfg" | cut -d= -f2)
  fi
fi
echo "default=${init%/init}"
"#;

fn host_report<'a>(report: &'a Value, host: &str) -> &'a Value {
    report["hosts"]
        .as_array()
        .and_then(|hosts| hosts.iter().find(|h| h["host"] == host))
        .unwrap_or_else(|| panic!("no report for {host}: {report:#}"))
}

fn finding<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["id"] == id))
        .unwrap_or_else(|| panic!("no finding {id} in {report:#}"))
}

/// The dbus → broker generation with the virtio drivers (revision 2), with
/// the `specialisations` given.
fn broker_generation(vms: &Vms, host: &str, specialisations: &[&str]) -> String {
    vms.generation(host, |k| {
        k.revision = 2;
        k.switch_inhibitors.insert("dbus-implementation".into(), "broker".into());
        k.available_kernel_modules = fleetgate_lab::fixture::default_initrd_modules(fleetgate_lab::DiskBus::Virtio);
        k.specialisations = specialisations.iter().map(|s| (*s).to_owned()).collect();
    })
}

/// Scenario 1: what fleetgate sees over SSH on a real virtio machine, and
/// its verdicts on the incident's generations. The good generation gets the
/// `specialisations` given.
fn facts_and_checks(vms: &Vms, host: &str, first: &str, specialisations: &[&str]) -> (String, String) {
    let (facts, facts_file) = vms.facts(host);
    let chain = facts["root_chain"].as_array().expect("root chain");
    let module = |m: &str| chain.iter().any(|d| d["module"] == m && d["driver"].is_string());
    assert!(module("virtio_blk") && module("virtio_pci"), "{host}: the real virtio chain: {chain:#?}");
    assert_eq!(facts["root"]["source"], "/dev/vda2", "{host}: {:#}", facts["root"]);

    // The refactor's generation: dbus → broker, and the virtio drivers gone.
    let broken = vms.generation(host, |k| {
        k.revision = 90;
        k.switch_inhibitors.insert("dbus-implementation".into(), "broker".into());
        k.available_kernel_modules.retain(|m| !m.starts_with("virtio"));
    });
    let (code, report) = vms.check(&facts_file, &broken);
    assert_eq!((code, &report["decision"]), (1, &Value::from("blocked")), "{host}: {report:#}");
    let missing = finding(&report, "initrd.missing-modules")["message"].as_str().unwrap_or_default().to_owned();
    assert!(missing.contains("virtio_blk") && missing.contains("virtio_pci"), "{host}: {missing}");

    // The good one: the same change with its drivers decides `boot`.
    let good = broker_generation(vms, host, specialisations);
    let (code, report) = vms.check(&facts_file, &good);
    assert_eq!((code, &report["decision"]), (0, &Value::from("boot")), "{host}: {report:#}");
    assert!(
        finding(&report, "switch.refused")["evidence"]
            .as_array()
            .is_some_and(|e| e.iter().any(|l| l == "dbus-implementation : dbus -> broker")),
        "{host}: {report:#}"
    );
    assert_eq!(vms.guest(host), Guest::on(first), "{host}: checking changed nothing");
    (broken, good)
}

/// Scenario 2: the dbus → broker generation through a verified reboot by
/// the real boot loader: boots once, verified, made the default.
fn verified_reboot(vms: &Vms, host: &str, first: &str, good: &str) {
    let boots = vms.lab.status(host).expect("status").boots;
    let (code, report) = vms.deploy(host, &[]);
    let r = host_report(&report, host);
    assert_eq!(code, 0, "{host}: {report:#}");
    assert_eq!((&r["action"], &r["outcome"]), (&Value::from("boot"), &Value::from("deployed")), "{host}: {r:#}");
    assert_eq!(r["previous_system"], first, "{host}");
    assert_eq!(vms.guest(host), Guest::on(good), "{host}: on the new generation, and it is the default");
    let status = vms.lab.status(host).expect("status");
    assert_eq!(status.boots, boots + 1, "{host}: exactly one reboot: {status:?}");
    assert_eq!(status.toplevel.as_deref(), Some(good), "{host}: the console's ready marker names the new system");
}

/// Scenario 3: the incident, forced. The new generation hangs in stage 1;
/// past the deadline the power-cycle hook resets the VM over QMP; the real
/// boot loader falls back to the previous generation by itself.
fn forced_incident(vms: &Vms, host: &str, good: &str) {
    let bad = vms.generation(host, |k| {
        k.revision = 3;
        k.available_kernel_modules.retain(|m| !m.starts_with("virtio"));
    });
    let boots = vms.lab.status(host).expect("status").boots;
    let (code, report) = vms.deploy(host, &["--force", "--reboot-timeout", "90"]);
    let r = host_report(&report, host);
    assert_eq!(code, 1, "{host}: the exit code says it failed: {report:#}");
    assert_eq!((&r["action"], &r["outcome"]), (&Value::from("boot"), &Value::from("failed")), "{host}: {r:#}");
    assert_eq!(r["rolled_back"], true, "{host}: {r:#}");
    assert_eq!(r["new_system"], bad.as_str(), "{host}");
    let console = vms.console(host);
    // The new generation's boot: stage 1 waiting for the root, as on the
    // VPSes, until the power cycle (how long it waited depends on how fast
    // this machine got there within the deadline).
    let hung = console
        .split("=== power on")
        .find(|boot| {
            boot.contains("A start job is running for /dev/disk/by-label/NIXOS_ROOT (1s / no limit)")
                && !boot.contains("fleetgate-stage1: mounted")
        })
        .unwrap_or_else(|| panic!("{host}: no boot waited in stage 1 for its root device:\n{console}"));
    assert!(hung.contains("--- power cycle ---"), "{host}: the hung boot ended in the power cycle:\n{hung}");
    assert!(console.contains("--- power cycle ---"), "{host}: the power-cycle hook reached the VM");
    assert_eq!(vms.guest(host), Guest::on(good), "{host}: back on the previous generation, which is the default");
    let status = vms.lab.status(host).expect("status");
    assert_eq!(status.boots, boots + 2, "{host}: the hung boot and the power-cycled one: {status:?}");
}

#[test]
fn seed_incident_vm_systemd_boot_blocked_verified_reboot_forced_hang_and_live_rollback() {
    let vms = timed("systemd-boot: up (image cached, disk, first boot)", || Vms::up(&["vps1=vm,virtio,systemd-boot"]));
    let first = vms.lab.build(&["vps1"]).expect("build").remove("vps1").expect("built");
    assert_eq!(vms.guest("vps1"), Guest::on(&first));
    let (_, good) = timed("systemd-boot: 1 facts and checks", || facts_and_checks(&vms, "vps1", &first, &["debug"]));
    timed("systemd-boot: 2 verified reboot", || verified_reboot(&vms, "vps1", &first, &good));
    // The real systemd-boot lists the specialisation's entry beside its generation's.
    let entries = vms.lab.ssh("vps1", "bootctl list --no-pager | sed -n 's/^ *id: //p'").expect("ssh");
    for id in ["nixos-generation-2.conf", "nixos-generation-2-specialisation-debug.conf"] {
        assert!(entries.lines().any(|l| l == id), "bootctl lists no {id}:\n{entries}");
    }
    timed("systemd-boot: 3 forced incident", || forced_incident(&vms, "vps1", &good));
    timed("systemd-boot: 4 unhealthy live switch", || unhealthy_live_switch(&vms, "vps1", &good));
    let left = vms.lab.down().expect("down");
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn seed_incident_vm_grub_verified_reboot_and_forced_hang_fall_back() {
    let vms = timed("grub: up (image cached, disk, first boot)", || Vms::up(&["vps2=vm,virtio,grub"]));
    let first = vms.lab.build(&["vps2"]).expect("build").remove("vps2").expect("built");
    assert_eq!(vms.guest("vps2"), Guest::on(&first));
    // Scenario 1 runs on the systemd-boot VM only: the virtio chain and the
    // checks do not depend on the boot loader, and it costs two minutes.
    let good = broker_generation(&vms, "vps2", &[]);
    timed("grub: 2 verified reboot", || verified_reboot(&vms, "vps2", &first, &good));
    // GRUB used the one-time entry up (save_env on the real ext4).
    let env = vms.lab.ssh("vps2", "grub-editenv /boot/grub/grubenv list").expect("ssh");
    assert!(env.lines().any(|l| l == "next_entry="), "{env}");
    timed("grub: 3 forced incident", || forced_incident(&vms, "vps2", &good));
    let left = vms.lab.down().expect("down");
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// Scenario 4: a live switch whose health check fails. The magic-rollback
/// watchdog runs under the guest's real systemd (a transient unit started
/// with systemd-run, whose PATH has no coreutils, as on NixOS) and switches
/// the host back by itself. Runs on a VM that is on `good`; boots nothing.
fn unhealthy_live_switch(vms: &Vms, host: &str, good: &str) {
    let unhealthy = vms.generation(host, |k| {
        k.revision = 4;
        k.available_kernel_modules = fleetgate_lab::fixture::default_initrd_modules(fleetgate_lab::DiskBus::Virtio);
        k.services.insert("app".into(), false);
    });
    let boots = vms.lab.status(host).expect("status").boots;
    let (code, report) = vms.deploy(host, &[]);
    let r = host_report(&report, host);
    assert_eq!(code, 1, "{host}: an unhealthy switch is not a success: {report:#}");
    assert_eq!((&r["action"], &r["outcome"]), (&Value::from("switch"), &Value::from("failed")), "{host}: {r:#}");
    assert_eq!(r["rolled_back"], true, "{host}: {r:#}");
    assert_eq!(r["new_system"], unhealthy.as_str(), "{host}");
    assert_eq!(vms.guest(host), Guest::on(good), "{host}: back on the previous generation, still the default");
    assert_eq!(vms.lab.status(host).expect("status").boots, boots, "{host}: no reboot: the switch was live");
    // systemd itself (PID 1) started the watchdog's transient unit.
    let journal = vms.lab.ssh(host, "journalctl -b --no-pager -o cat _PID=1").expect("journal");
    assert!(
        journal.lines().any(|l| l.starts_with("Started fleetgate-watchdog-") && l.contains("fleetgate magic rollback")),
        "{host}: no transient watchdog unit in systemd's journal:\n{journal}"
    );
    let app = vms.lab.ssh(host, "systemctl is-active app.service; true").expect("ssh");
    assert_eq!(app.trim(), "active", "{host}: the previous generation's app.service runs again");
}

/// Scenario 2 on GRUB as NixOS installs it on UEFI with `device = "nodev"`
/// and `default = "saved"`: no `grub-reboot` in the system, grub.cfg and the
/// kernels on the ESP, a generation with a specialisation (a nested GRUB
/// submenu). With `default = "saved"`, NixOS's grub.cfg saves the entry it
/// boots even on a one-time boot (its `savedefault` tests `[ -z
/// "${boot_once}"]`, with no space before `]`; real GRUB 2.06 saved the
/// trial entry when this test first armed one): a trial that hangs would be
/// GRUB's default and boot again after the power cycle. So fleetgate refuses
/// the verified reboot, saying why, and changes nothing.
#[test]
fn seed_incident_vm_grub_efi_nodev_saved_refuses_a_reboot_it_could_not_undo() {
    let vms = timed("grub-efi: up (image cached, disk, first boot)", || Vms::up(&["vps4=vm,virtio,grub-efi"]));
    let first = vms.lab.build(&["vps4"]).expect("build").remove("vps4").expect("built");
    assert_eq!(vms.guest("vps4"), Guest::on(&first));
    let tools = vms.lab.ssh("vps4", "command -v grub-reboot grub-editenv; true").expect("ssh");
    assert_eq!(tools, "", "a nodev system has no GRUB tools");
    let good = broker_generation(&vms, "vps4", &["debug"]);
    let boots = vms.lab.status("vps4").expect("status").boots;
    let (code, report) = timed("grub-efi: 2 verified reboot refused", || vms.deploy("vps4", &[]));
    let r = host_report(&report, "vps4");
    assert_eq!(code, 1, "refused is not a success: {report:#}");
    assert_eq!(
        (&r["action"], &r["outcome"], &r["standing"]),
        (&Value::from("boot"), &Value::from("failed"), &Value::from("known-good")),
        "{r:#}"
    );
    assert_eq!(r["new_system"], good.as_str());
    let message = r["message"].as_str().unwrap_or_default();
    assert!(message.contains("default = \"saved\"") && message.contains("--allow-unverified-reboot"), "{message}");
    assert_eq!(vms.guest("vps4"), Guest::on(&first), "nothing changed: the old generation is still the default");
    assert_eq!(vms.lab.status("vps4").expect("status").boots, boots, "no reboot");
    let env = vms.lab.ssh("vps4", "cat /boot/grub/grubenv").expect("ssh");
    assert!(!env.contains("next_entry=NixOS"), "no one-time boot armed:\n{env}");
    let left = vms.lab.down().expect("down");
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// `systemctl show` of `unit` on `host`: its properties by name.
fn unit_properties(
    lab: &fleetgate_lab::lab::Lab,
    host: &str,
    unit: &str,
) -> std::collections::BTreeMap<String, String> {
    let out = lab
        .ssh(
            host,
            &format!(
                "systemctl show --no-pager -p Type,ActiveState,SubState,Result,ExecMainStatus,NRestarts \
                 -p ExecMainStartTimestampMonotonic,ExecMainExitTimestampMonotonic {unit}"
            ),
        )
        .expect("ssh");
    out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Scenario 5: the agent on the VM, from the real systemd units of its
/// NixOS module (nix/module.nix: the daemon, and the boot-time
/// `fleetgate resume-pending`), installed once with `fleetgate deploy`. A
/// channel on this machine's loopback (the guest reaches it through the
/// lab's loopback forwards) is promoted to the dbus → broker generation: the
/// agent fetches the signed manifest, realises the closure by substitution,
/// checks it, arms a verified reboot through the real systemd-boot and
/// reboots; after the real reboot the resume unit, a boot job of the real
/// systemd, verifies the new generation and blesses it; the agent reports
/// it to the server, which says the host converged.
#[test]
fn seed_incident_vm_agent_verified_reboot_from_real_systemd_units() {
    use agent_world::{AgentSetup, Fleet, Via};
    let host = "vps5";
    let lab = timed("agent: up (image cached, disk, first boot)", || {
        LabGuard::up(&["vps5=vm,virtio,systemd-boot"]).expect("the VM lab comes up")
    });
    let fleet = Fleet::on_vms(lab);
    let first = fleet.lab.build(&[host]).expect("build").remove(host).expect("built");
    assert_eq!(guest(&fleet.lab, host), Guest::on(&first));
    let setup = AgentSetup { via: Via::Server, resume_unit: true, ..AgentSetup::default() };
    let with_agent = timed("agent: 5 the agent installed (deploy, live switch)", || {
        fleet.install_agents(&[(host, setup)]).remove(host).expect("built")
    });
    let live = Guest { booted: first.clone(), ..Guest::on(&with_agent) };
    assert_eq!(guest(&fleet.lab, host), live, "a live switch: still booted on the first generation");
    // The real systemd runs the module's daemon, and ran its boot unit when
    // the switch started it (nothing was pending).
    let agent = unit_properties(&fleet.lab, host, "fleetgate-agent.service");
    assert_eq!((agent["Type"].as_str(), agent["SubState"].as_str()), ("simple", "running"), "{agent:?}");
    let resume = unit_properties(&fleet.lab, host, "fleetgate-resume.service");
    assert_eq!((resume["SubState"].as_str(), resume["Result"].as_str()), ("exited", "success"), "{resume:?}");

    let boots = fleet.lab.status(host).expect("status").boots;
    let (commit, systems) = fleet.release(&[host], 3, "dbus-broker", |_, k| {
        k.switch_inhibitors.insert("dbus-implementation".into(), "broker".into());
    });
    let broker = &systems[host];
    fleet.promote_via_hook(host, &commit, broker);
    let status = timed("agent: 5 promoted to the verified reboot's end", || {
        fleet.wait_agent(host, 20 * 60 * std::time::Duration::from_secs(1), "the verified reboot blessed", |s| {
            s["report"]["result"]["outcome"] == "applied" && s["report"]["result"]["system"] == broker.as_str()
        })
    });
    let log = fleet.agent_log(host);
    assert_eq!(guest(&fleet.lab, host), Guest::on(broker), "{host}: on the new generation, the default\n{log}");
    assert_eq!(status["report"]["default"]["system"], broker.as_str(), "{status:#}");
    assert_eq!(fleet.lab.status(host).expect("status").boots, boots + 1, "{host}: exactly one reboot\n{log}");
    // This boot's resume unit, a boot job of the real systemd, blessed it,
    // and the agent started after it had ended (the module's ordering).
    let resume = unit_properties(&fleet.lab, host, "fleetgate-resume.service");
    assert_eq!((resume["SubState"].as_str(), resume["Result"].as_str()), ("exited", "success"), "{resume:?}");
    let agent = unit_properties(&fleet.lab, host, "fleetgate-agent.service");
    assert_eq!((agent["Type"].as_str(), agent["SubState"].as_str()), ("simple", "running"), "{agent:?}");
    let at = |props: &std::collections::BTreeMap<String, String>, key: &str| -> u64 {
        props[key].parse().unwrap_or_else(|_| panic!("{key}: {props:?}"))
    };
    let resume_ended = at(&resume, "ExecMainExitTimestampMonotonic");
    assert!(resume_ended > 0, "the resume unit ran in this boot: {resume:?}");
    assert!(at(&agent, "ExecMainStartTimestampMonotonic") >= resume_ended, "{resume:?}\n{agent:?}");
    let journal = fleet.lab.ssh(host, "journalctl -b --no-pager -o cat -u fleetgate-resume.service").expect("journal");
    assert!(journal.contains("booted the new generation once, healthy, now the default"), "{journal}\n{log}");
    // On the way down the agent stopped when systemd asked (SIGTERM), not
    // after the unit's stop timeout with a SIGKILL.
    let before = fleet.lab.ssh(host, "journalctl -b -1 --no-pager -o cat -u fleetgate-agent.service").expect("journal");
    assert!(before.contains("stopping (signal)") && !before.contains("timed out"), "{before}");
    // The server heard it: the host converged on the promoted commit.
    let converged = agent_world::poll_until(std::time::Duration::from_secs(180), || {
        let v = fleet.server_status();
        let h = v["hosts"].as_array()?.iter().find(|h| h["host"] == host)?.clone();
        (h["state"] == "converged"
            && h["current"] == broker.as_str()
            && h["booted"] == broker.as_str()
            && h["default"]["system"] == broker.as_str()
            && h["desired"]["commit"] == commit.as_str()
            && h["last_result"]["outcome"] == "applied")
            .then_some(h)
    });
    assert!(converged.is_some(), "the server says {host} converged: {:#}\n{log}", fleet.server_status());
    fleet.down();
}
