//! Helpers shared by the lab tests: deploy a lab fleet with the library and
//! assert where hosts ended, through the lab (not through fleetgate).

#![allow(dead_code)]

use std::sync::Mutex;
use std::time::Duration;

use fleetgate_deploy::events::Bus;
use fleetgate_deploy::history::History;
use fleetgate_deploy::{DeployOptions, Deployer, FleetPlanner, Inventory, RunReport, Standing, Timeouts, select};
use fleetgate_lab::Lab;
use fleetgate_lab::lab::NIX_CONFIG;
use fleetgate_nix::Nix;

pub fn nix() -> Nix {
    Nix::detect().expect("nix").with_env("NIX_CONFIG", NIX_CONFIG)
}

pub fn flake(lab: &Lab) -> String {
    format!("path:{}", lab.fleet_dir().display())
}

/// Short timeouts for the lab (hosts boot in seconds).
pub fn options() -> DeployOptions {
    DeployOptions {
        timeouts: Timeouts {
            connect: Duration::from_secs(5),
            command: Duration::from_secs(60),
            facts: Duration::from_secs(60),
            copy: Duration::from_secs(300),
            activation: Duration::from_secs(60),
            confirm: Duration::from_secs(20),
            health: Duration::from_secs(15),
            reboot: Duration::from_secs(30),
            power_cycle: Duration::from_secs(180),
        },
        power_cycle_attempts: 2,
        ..DeployOptions::default()
    }
}

/// The lab's power-cycle command for `fleetgate.toml`.
pub fn power_cycle_command(lab: &Lab) -> String {
    let bin = fleetgate_lab::lab::lab_binary().expect("lab binary");
    format!("{} --lab {} power-cycle {{host}}", bin.display(), lab.dir().root().display())
}

/// Writes `fleetgate.toml` beside the lab's flake.
pub fn write_config(lab: &Lab, text: &str) {
    std::fs::write(lab.fleet_dir().join("fleetgate.toml"), text).expect("write fleetgate.toml");
}

/// Deploys `hosts` (all if empty) with `options`, recording in `history`.
pub fn deploy_with(
    lab: &Lab,
    hosts: &[&str],
    options: &DeployOptions,
    history: Option<&Mutex<History>>,
    bus: Bus,
) -> RunReport {
    let nix = nix();
    let inventory = Inventory::load(&nix, &flake(lab), None).expect("inventory");
    let named: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
    let selected = select::select(&inventory, &named, &[]).expect("selection");
    let planner = FleetPlanner::default();
    let deployer = Deployer { nix: &nix, inventory: &inventory, planner: &planner, options, bus, history };
    let report = deployer.run(&selected).expect("deploy runs");
    eprintln!("{}", report.human());
    report
}

pub fn deploy(lab: &Lab, hosts: &[&str], options: &DeployOptions) -> RunReport {
    deploy_with(lab, hosts, options, None, Bus::silent())
}

pub fn host<'a>(report: &'a RunReport, name: &str) -> &'a fleetgate_deploy::HostReport {
    report.hosts.iter().find(|h| h.host == name).unwrap_or_else(|| panic!("no report for {name}"))
}

pub fn readlink(lab: &Lab, host: &str, path: &str) -> String {
    lab.ssh(host, &format!("readlink -f {path}")).expect("ssh").trim().to_owned()
}

pub fn valid_on(lab: &Lab, host: &str, path: &str) -> bool {
    lab.ssh(host, &format!("nix-store --check-validity {path} 2>/dev/null && echo valid || echo invalid"))
        .expect("ssh")
        .trim()
        == "valid"
}

/// The host runs and has its profile on `system`, and a reboot (the boot
/// default) brings it back on `system`.
pub fn assert_on(lab: &Lab, host: &str, system: &str) {
    assert_eq!(readlink(lab, host, "/run/current-system"), system, "{host}: current system");
    assert_eq!(readlink(lab, host, "/nix/var/nix/profiles/system"), system, "{host}: profile");
    let status = lab.reboot(host).expect("reboot");
    assert_eq!(status.power, fleetgate_lab::Power::Running, "{host} boots its default: {status:?}");
    assert_eq!(readlink(lab, host, "/run/booted-system"), system, "{host}: the boot default is {system}");
    assert!(lab.ssh(host, "test -e /run/fleetgate/lock && echo locked || echo free").expect("ssh").contains("free"));
}

pub fn assert_known_good(report: &RunReport) {
    for h in &report.hosts {
        assert_eq!(h.standing, Standing::KnownGood, "{}: {}", h.host, h.message);
    }
    assert_ne!(report.exit_code, 3);
}

/// The SSH logins the host's sshd has accepted so far (this one included).
pub fn logins(lab: &Lab, host: &str) -> usize {
    let out = lab.ssh(host, "grep -c 'Accepted publickey' /var/log/sshd.log").expect("read sshd log");
    out.trim().parse().unwrap_or_else(|_| panic!("{host}: sshd log count {out:?}"))
}
