//! `--help` shows every default (read from the library's own `Default`s).

use std::process::Command;

use fleetgate_deploy::DeployOptions;

#[test]
fn deploy_help_shows_the_defaults_the_run_starts_from() {
    // Wide enough that clap does not wrap: one option, one line.
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["deploy", "--help"])
        .env("COLUMNS", "300")
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let d = DeployOptions::default();
    let line = |flag: &str| help.lines().find(|l| l.trim_start().starts_with(flag)).unwrap_or_default().to_owned();
    assert!(
        line("--strategy").contains(&format!("[default: {}; fleetgate.toml: deploy.strategy]", d.strategy.as_str()))
    );
    assert!(line("--max-parallel").contains(&format!("[default: {};", d.max_parallel)));
    assert!(line("--wave-size").contains(&format!("[default: {};", d.wave_size)));
    assert!(line("--max-failures").contains("[default: no limit;"));
    assert!(line("--confirm-timeout").contains(&format!("[default: {};", d.timeouts.confirm.as_secs())));
    assert!(line("--reboot-timeout").contains(&format!("[default: {};", d.timeouts.reboot.as_secs())));
    insta::assert_snapshot!("deploy_help", help);
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate")).args(["history", "--help"]).output().expect("runs");
    insta::assert_snapshot!("history_help", String::from_utf8_lossy(&out.stdout));
}
