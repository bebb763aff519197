//! `nix/module.nix` evaluated with the real NixOS module system (nixpkgs'
//! `lib.evalModules`, from `../shared/nixpkgs-lib`) under the Nix this
//! project runs (2.8): the units and timers it generates, their defaults,
//! the hardening, the boot-time resume unit — and the configuration file it
//! writes is one this agent accepts. A definition of the wrong type fails.
//! And flake.nix's outputs (package, overlay, modules), with that lib as nixpkgs.

use std::path::{Path, PathBuf};
use std::process::Command;

use fleetgate_agent::config::{AgentConfig, ConfigFile, Flags, ManifestLocation};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository")
}

/// nixpkgs' lib: `$FLEETGATE_NIXPKGS_LIB`, else the workplace's copy beside the
/// repository, else at its fixed place (a clone elsewhere, e.g. `git clone . /tmp/x`).
fn nixpkgs_lib() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("FLEETGATE_NIXPKGS_LIB")
        .map(PathBuf::from)
        .into_iter()
        .chain([repo().join("../shared/nixpkgs-lib/lib"), PathBuf::from("/work/shared/nixpkgs-lib/lib")])
        .collect();
    let found = candidates.iter().find(|lib| lib.join("default.nix").exists());
    found.cloned().unwrap_or_else(|| panic!("nixpkgs' lib is expected at one of {candidates:?} (see its README)"))
}

/// Evaluates the module with `user` (a NixOS module's text); Ok(JSON) or Err(Nix's stderr).
fn eval(user: &str) -> Result<Value, String> {
    eval_file("nix/tests/eval-module.nix", &["--arg", "userConfig", user])
}

/// `nix-instantiate --eval --strict --json FILE --arg lib <nixpkgs' lib> ARGS…`.
fn eval_file(file: &str, args: &[&str]) -> Result<Value, String> {
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(repo().join(file))
        .arg("--arg")
        .arg("lib")
        .arg(format!("import {}", nixpkgs_lib().display()))
        .args(args)
        .env("NIX_PATH", "")
        .output()
        .expect("nix-instantiate runs");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const KEY: &str = "cache.example.org-1:fjYcuZjQVdZgKGeDy4UPE6TZkOtzYO0yGbMmrsf7aMc=";

fn minimal(extra: &str) -> String {
    format!(
        "{{ services.fleetgate.agent = {{ enable = true; server = \"https://fleet.example.org\"; trustedKeys = [ \"{KEY}\" ]; cache = \"https://cache.example.org\"; {extra} }}; }}"
    )
}

/// The configuration file the module writes, as the agent reads it.
fn agent_config(v: &Value) -> AgentConfig {
    let text = v["etc"]["fleetgate/agent.json"]["text"].as_str().expect("the config file");
    AgentConfig::resolve(ConfigFile::parse(text).expect("the agent parses it"), Flags::default()).expect("valid")
}

#[test]
fn defaults_are_a_timer_a_hardened_oneshot_and_the_boot_resume_unit() {
    let v = eval(&minimal("")).expect("evaluates");
    let agent = &v["services"]["fleetgate-agent"];
    assert_eq!(agent["restartIfChanged"], false);
    assert_eq!(agent["unitConfig"]["X-StopOnRemoval"], false);
    let sc = &agent["serviceConfig"];
    assert_eq!(sc["Type"], "oneshot");
    assert_eq!(
        sc["ExecStart"],
        "/nix/store/11111111111111111111111111111111-fleetgate-0.1.0/bin/fleetgate agent --config /etc/fleetgate/agent.json --once"
    );
    for (k, want) in [("ProtectHome", true), ("PrivateTmp", true), ("NoNewPrivileges", true)] {
        assert_eq!(sc[k], want, "{k}");
    }
    assert!(sc.get("DynamicUser").is_none(), "it must run as root");
    assert_eq!(sc["LoadCredential"], serde_json::json!([]));
    assert_eq!(agent["wantedBy"], serde_json::json!([]), "the timer starts it");
    let timer = &v["timers"]["fleetgate-agent"];
    assert_eq!(timer["wantedBy"], serde_json::json!(["timers.target"]));
    assert_eq!(
        timer["timerConfig"],
        serde_json::json!({ "OnCalendar": "*:0/15", "RandomizedDelaySec": "0", "FixedRandomDelay": false, "Persistent": true })
    );
    let resume = &v["services"]["fleetgate-resume"];
    assert_eq!(resume["wantedBy"], serde_json::json!(["multi-user.target"]));
    assert_eq!(resume["serviceConfig"]["Type"], "oneshot");
    assert!(
        resume["serviceConfig"]["ExecStart"].as_str().is_some_and(|e| e.ends_with("/bin/fleetgate resume-pending"))
    );
    assert_eq!(resume["restartIfChanged"], false);
    assert!(agent["after"].as_array().is_some_and(|a| a.iter().any(|u| u == "fleetgate-resume.service")));
    assert_eq!(v["failedAssertions"], serde_json::json!([]));
    // The file it writes is one the agent takes: hostName from networking.hostName.
    let c = agent_config(&v);
    assert_eq!(c.host.as_str(), "web1");
    assert_eq!(c.manifest, ManifestLocation::Http("https://fleet.example.org/v1/hosts/web1/manifest".into()));
    assert!(!c.reboot.allow && c.reboot.window.is_none());
    assert!(c.token.is_none());
}

#[test]
fn daemon_mode_window_reboots_and_the_token_as_a_credential() {
    let v = eval(&minimal(
        "mode = \"daemon\"; pollInterval = \"1m\"; allowReboot = true; rebootWindow = { lower = \"01:00\"; upper = \"05:00\"; };
         randomizedDelaySec = \"10min\"; tokenFile = \"/run/secrets/fleetgate-token\"; healthUnits = [ \"sshd.service\" ];
         hostName = \"db1\"; settings.metrics.textfile = \"/var/lib/node-exporter/fleetgate.prom\";",
    ))
    .expect("evaluates");
    let agent = &v["services"]["fleetgate-agent"];
    let sc = &agent["serviceConfig"];
    assert_eq!((sc["Type"].as_str(), sc["Restart"].as_str()), (Some("simple"), Some("always")));
    assert!(sc["ExecStart"].as_str().is_some_and(|e| e.contains("--exit-when-changed /etc/fleetgate/agent.json")
        && e.contains("--exit-when-changed /etc/systemd/system/fleetgate-agent.service")
        && !e.contains("--once")));
    assert_eq!(sc["LoadCredential"], serde_json::json!(["token:/run/secrets/fleetgate-token"]));
    assert_eq!(agent["wantedBy"], serde_json::json!(["multi-user.target"]));
    assert!(v["timers"].get("fleetgate-agent").is_none(), "no timer in daemon mode");
    let c = agent_config(&v);
    assert_eq!(c.host.as_str(), "db1");
    assert!(c.reboot.allow);
    assert_eq!(c.reboot.window.map(|w| w.describe()).as_deref(), Some("01:00-05:00"));
    assert_eq!(c.reboot.randomized_delay, std::time::Duration::from_secs(600));
    assert_eq!(c.poll_interval, std::time::Duration::from_secs(60));
    assert_eq!(c.health.units, ["sshd.service"]);
    assert_eq!(c.metrics.textfile.as_deref(), Some(Path::new("/var/lib/node-exporter/fleetgate.prom")));
    assert!(matches!(c.token, Some(fleetgate_channel::secret::SecretSource::Credential(ref n)) if n == "token"));
}

#[test]
fn wrong_types_and_missing_settings_fail() {
    for (bad, what) in [
        ("allowReboot = \"yes\";", "allowReboot"),
        ("rebootWindow = { lower = \"1am\"; upper = \"05:00\"; };", "lower"),
        ("mode = \"cron\";", "mode"),
        ("persistent = 1;", "persistent"),
    ] {
        let err = eval(&minimal(bad)).expect_err(bad);
        assert!(err.contains(what) && err.contains("is not of type"), "{bad}: {err}");
    }
    let err = eval("{ services.fleetgate.agent = { enable = true; server = \"https://f\"; cache = \"https://c\"; }; }")
        .expect_err("trustedKeys is required");
    assert!(err.contains("trustedKeys"), "{err}");
    let v = eval(&format!(
        "{{ services.fleetgate.agent = {{ enable = true; trustedKeys = [ \"{KEY}\" ]; cache = [ \"https://c\" ]; }}; }}"
    ))
    .expect("evaluates");
    assert!(v["failedAssertions"][0].as_str().is_some_and(|m| m.contains("set `server`")), "{v:#}");
    // Disabled: nothing at all.
    let off = eval("{ services.fleetgate.agent.enable = false; }").expect("evaluates");
    assert_eq!((off["services"].clone(), off["timers"].clone()), (serde_json::json!({}), serde_json::json!({})));
}

/// flake.nix's outputs, evaluated with nixpkgs' lib as its input (nothing
/// fetched, nothing built): a package per system built by `rustPlatform`
/// from Cargo.lock, the same through the overlay, `nixosModules.agent` the
/// module with the overlay, `nixosModules.default` the same.
#[test]
fn the_flake_has_the_package_the_overlay_and_the_agent_module() {
    let v = eval_file("nix/tests/eval-flake.nix", &[]).unwrap_or_else(|e| panic!("flake.nix evaluates: {e}"));
    assert_eq!(v["systems"], serde_json::json!(["aarch64-linux", "x86_64-linux"]));
    let package = serde_json::json!({
        "pname": "fleetgate",
        "version": env!("CARGO_PKG_VERSION"),
        "cargoBuildFlags": ["--package", "fleetgate"],
        "doCheck": false,
        "builtByRustPlatform": true,
        "lockFile": "Cargo.lock",
        "mainProgram": "fleetgate",
    });
    assert_eq!(v["default"], package);
    assert_eq!(v["overlay"], package, "pkgs.fleetgate from the overlay");
    assert_eq!(v["sameAsDefault"], true);
    assert_eq!(v["agentModuleImports"], serde_json::json!(["module.nix"]));
    assert_eq!(v["agentModuleOverlays"], 1, "the module brings pkgs.fleetgate");
    assert_eq!(v["defaultModuleIsAgent"], true);
}
