//! `--help` shows every default (read from the library's own `Default`s),
//! `fleetgate completions SHELL` prints scripts the shells accept and that
//! complete, and `fleetgate man` prints manual pages groff renders without a
//! warning — all generated from the one command definition.

use std::path::Path;
use std::process::{Command, Output};

use fleetgate_deploy::DeployOptions;

fn fleetgate(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate")).args(args).output().expect("fleetgate runs");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8(fleetgate(args).stdout).expect("UTF-8")
}

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
    insta::assert_snapshot!("history_help", stdout(&["history", "--help"]));
}

#[test]
fn bash_completion_completes_commands_and_options() {
    let script = stdout(&["completions", "bash"]);
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("fleetgate.bash");
    std::fs::write(&file, &script).expect("write");
    let complete = |words: &str| -> String {
        let probe = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _fleetgate fleetgate \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        let out = Command::new("bash").args(["--norc", "-c", &probe]).output().expect("bash");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let commands = complete("fleetgate h");
    assert_eq!(commands.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>(), ["history", "help"]);
    assert!(complete("fleetgate deploy --max-").lines().any(|l| l == "--max-parallel"));
    assert!(complete("fleetgate history --").lines().any(|l| l == "--limit"));
    assert!(complete("fleetgate completions ''").lines().any(|l| l == "zsh"));
}

#[test]
fn every_shell_gets_a_script() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout(&["completions", shell]);
        assert!(script.contains("max-parallel") && script.contains("history"), "{shell}");
    }
    let bash = Command::new("bash").args(["-n", "-c", &stdout(&["completions", "bash"])]).status().expect("bash");
    assert!(bash.success(), "bash accepts the script");
}

/// Renders a page with groff (preconv for UTF-8), failing on any warning.
fn render(page: &Path) -> String {
    let out = Command::new("groff")
        .args(["-Kutf8", "-man", "-Tutf8", "-ww", "-P-cbou", "-rHY=0", "-rLL=200n"])
        .arg(page)
        .output()
        .expect("groff");
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && warnings.is_empty(), "{}: {warnings}", page.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn man_pages_render_and_say_the_exit_codes_and_defaults() {
    let tmp = tempfile::tempdir().expect("tmp");
    let top = tmp.path().join("printed.1");
    std::fs::write(&top, fleetgate(&["man"]).stdout).expect("write");
    let text = render(&top);
    for wanted in ["EXIT STATUS", "fleetgate-history(1)", "history.sqlite", "known-good generation"] {
        assert!(text.contains(wanted), "{wanted} in:\n{text}");
    }
    assert!(!text.contains("fleetgate-help"), "no page for clap's help subcommand");

    let dir = tmp.path().join("man1");
    fleetgate(&["man", "--dir", dir.to_str().expect("UTF-8")]);
    let mut pages: Vec<String> =
        std::fs::read_dir(&dir).expect("ls").map(|e| e.expect("entry").file_name().to_string_lossy().into()).collect();
    pages.sort();
    for page in ["fleetgate.1", "fleetgate-deploy.1", "fleetgate-history.1", "fleetgate-channel-promote.1"] {
        assert!(pages.iter().any(|p| p == page), "{page} in {pages:?}");
    }
    assert!(!pages.iter().any(|p| p.contains("help")), "{pages:?}");
    for page in &pages {
        render(&dir.join(page));
    }
    assert_eq!(std::fs::read(dir.join("fleetgate.1")).expect("read"), std::fs::read(&top).expect("read"));
    let deploy = render(&dir.join("fleetgate-deploy.1")).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(deploy.contains("[default: 4; fleetgate.toml: deploy.max_parallel]"), "{deploy}");
}
