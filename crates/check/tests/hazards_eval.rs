//! The hazard lints' one `nix eval` against real flakes: nixos-facter
//! imported or not, `reportPath` set or left at its default.

use std::path::Path;

use fleetgate_check::initrd::{Coverage, Need};
use fleetgate_check::{FlakeHost, hazards};
use fleetgate_system::SystemToplevel;

/// Configurations shaped like `nixosSystem`'s result: `config`, and
/// `options` with each option's `highestPrio` (1500: only the default).
const FLAKE: &str = r#"{
  outputs = { self }: {
    nixosConfigurations = {
      # nixos-facter not imported: no hardware.facter at all.
      plain = { config.hardware.enableRedistributableFirmware = true; config.boot.initrd.availableKernelModules = [ ]; };
      # Imported, reportPath set to null (the lab fixture's shape: no options).
      nullReport = { config.hardware.facter.reportPath = null; };
      # Declared by a module every configuration imports, never set.
      declaredOnly = {
        config.hardware.facter.reportPath = null;
        options.hardware.facter.reportPath.highestPrio = 1500;
      };
      # Set explicitly to a report that is not there.
      explicitMissing = {
        config.hardware.facter.reportPath = "/nonexistent/facter.json";
        options.hardware.facter.reportPath.highestPrio = 100;
      };
    };
  };
}
"#;

fn system(dir: &Path) -> SystemToplevel {
    let top = dir.join("system");
    std::fs::create_dir_all(&top).expect("mkdir");
    std::fs::write(top.join("nixos-version"), "25.05").expect("write");
    std::fs::write(top.join("kernel-params"), "boot.panic_on_fail panic=30").expect("write");
    SystemToplevel::open(&top).expect("opens")
}

/// [`FLAKE`] in a temporary directory, a system, and a root-disk coverage.
fn fleet() -> (tempfile::TempDir, std::path::PathBuf, SystemToplevel, Coverage) {
    let dir = tempfile::tempdir().expect("tempdir");
    let flake = dir.path().join("fleet");
    std::fs::create_dir_all(&flake).expect("mkdir");
    std::fs::write(flake.join("flake.nix"), FLAKE).expect("write");
    let new = system(dir.path());
    let coverage = Coverage {
        needs: vec![Need {
            what: "virtio1".into(),
            module: Some("virtio_blk".into()),
            builtin: false,
            missing: vec![],
            missing_soft: vec![],
            device: true,
        }],
        findings: vec![],
    };
    (dir, flake, new, coverage)
}

#[test]
fn the_facter_lint_only_concerns_configurations_that_use_nixos_facter() {
    let (_dir, flake, new, coverage) = fleet();
    let ids = |host: &str| -> Vec<String> {
        let fh = FlakeHost::parse(&format!("{}#{host}", flake.display())).expect("flake#host");
        hazards::lint(&fh, &new, &coverage).into_iter().map(|f| format!("{}: {}", f.id, f.message)).collect()
    };
    assert_eq!(ids("plain"), Vec::<String>::new());
    assert_eq!(ids("declaredOnly"), Vec::<String>::new());
    let found = ids("nullReport");
    assert!(
        found.len() == 1 && found[0].starts_with("hazard.facter-report-missing: hardware.facter.reportPath is null"),
        "{found:#?}"
    );
    let found = ids("explicitMissing");
    assert!(found.len() == 1 && found[0].contains("points at /nonexistent/facter.json"), "{found:#?}");
    let found = ids("absent");
    assert!(found.len() == 1 && found[0].starts_with("hazard.eval-failed: "), "{found:#?}");
    assert!(
        found[0].contains(": error: flake") && !found[0].contains("orDefault"),
        "Nix's message, not the command: {found:#?}"
    );
}

/// Issue 15: one `nix eval` for a fleet gives every host the findings its
/// own evaluation gives; a host that is not there fails the whole
/// evaluation (the deployer then evaluates host by host).
#[test]
fn one_evaluation_for_many_hosts_gives_each_host_its_own_findings() {
    let (_dir, flake, new, coverage) = fleet();
    let flake_ref = format!("path:{}", flake.display());
    let hosts: Vec<String> = ["plain", "nullReport", "declaredOnly", "explicitMissing"].map(String::from).to_vec();
    let all = hazards::evaluate_hosts(&flake_ref, &hosts).expect("one evaluation");
    assert_eq!(all.keys().cloned().collect::<Vec<_>>(), {
        let mut h = hosts.clone();
        h.sort();
        h
    });
    for host in &hosts {
        let fh = FlakeHost { flake: flake_ref.clone(), host: host.clone() };
        let ids = |fs: Vec<fleetgate_facts::Finding>| {
            fs.into_iter().map(|f| format!("{}: {}", f.id, f.message)).collect::<Vec<_>>()
        };
        assert_eq!(
            ids(hazards::lint_with(&fh, &all[host], &new, &coverage)),
            ids(hazards::lint(&fh, &new, &coverage)),
            "{host}"
        );
    }
    let with_absent = [hosts, vec!["absent".to_owned()]].concat();
    assert!(hazards::evaluate_hosts(&flake_ref, &with_absent).is_err());
}
