//! What the facts script costs on a host, counted rather than timed: the
//! programs it starts (every other step is a shell builtin), whatever the
//! number of records — and the builtins that replaced those programs print
//! what the programs printed (records with tabs or newlines in a value, the
//! last line of a file without a newline).

use std::path::Path;
use std::process::Command;

/// The script with its `PATH=` line replaced.
fn script_with_path(path: &str) -> String {
    fleetgate_facts::SCRIPT
        .lines()
        .map(|l| if l.starts_with("PATH=") { format!("PATH={path}") } else { l.to_owned() })
        .collect::<Vec<_>>()
        .join("\n")
}

fn which(program: &str) -> Option<String> {
    let out = Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && path.starts_with('/')).then_some(path)
}

fn shells() -> Vec<&'static str> {
    let found: Vec<&str> = ["dash", "bash", "busybox"].into_iter().filter(|s| which(s).is_some()).collect();
    assert!(!found.is_empty(), "no shell to run the script");
    found
}

fn shell(sh: &str) -> Command {
    let mut cmd = Command::new(sh);
    if sh == "busybox" {
        cmd.arg("sh");
    }
    cmd
}

#[test]
fn the_script_starts_a_handful_of_programs_whatever_the_number_of_records() {
    // Every program the script may run, as a wrapper that logs its name and
    // runs the real one.
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("ran.log");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    for tool in ["readlink", "df", "tail", "tr", "blkid", "timeout", "uname", "sed", "head", "cat", "pwd", "printf"] {
        let Some(real) = which(tool).filter(|p| Path::new(p).is_file()) else { continue };
        let wrapper = bin.join(tool);
        std::fs::write(&wrapper, format!("#!/bin/sh\necho {tool} >> '{}'\nexec '{real}' \"$@\"\n", log.display()))
            .expect("write");
        std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    }
    for sh in shells() {
        let _ = std::fs::remove_file(&log);
        let out =
            shell(sh).arg("-c").arg(script_with_path(&bin.display().to_string())).env_clear().output().expect("runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let records = stdout.lines().count();
        assert!(stdout.ends_with("end\n"), "{sh}: {stdout}");
        let ran = std::fs::read_to_string(&log).unwrap_or_default();
        let programs: Vec<&str> = ran.lines().collect();
        // readlink (the links, the profile), df, blkid under timeout, and
        // tail + tr for each of at most three EFI variables.
        assert!(programs.len() <= 11, "{sh}: {} records cost {} programs: {programs:?}", records, programs.len());
        assert!(
            !programs.contains(&"sed") && !programs.contains(&"head") && !programs.contains(&"uname"),
            "{programs:?}"
        );
        let facts = fleetgate_facts::parse("local", &stdout);
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
        assert_eq!(facts.kernel_release.as_deref(), Some(release.trim()), "{sh}");
        assert!(!facts.root_chain.is_empty(), "{sh}: the root chain, with builtins only: {:#?}", facts.findings);
        // Resolved with `cd -P`, as `readlink -f` would.
        assert!(!facts.block_devices.is_empty(), "{sh}");
        for b in &facts.block_devices {
            let sysfs = b.sysfs.as_deref().unwrap_or_default();
            assert!(sysfs.starts_with("/sys/devices/") && sysfs.ends_with(&format!("/{}", b.name)), "{sh}: {b:?}");
        }
    }
}

/// The script's record printer and file reader, on their own.
fn helpers(body: &str) -> String {
    let script = fleetgate_facts::SCRIPT;
    let start = script.find("have() {").expect("helpers in the script");
    let end = script.find("o version 1").expect("first record");
    format!("{}{body}\n", &script[start..end])
}

#[test]
fn values_with_tabs_or_newlines_become_one_field_of_one_record() {
    for sh in shells() {
        let body = "o tag \"$(printf 'a\\tb')\" \"$(printf 'c\\nd\\re')\" plain ''";
        let out = shell(sh).arg("-c").arg(helpers(body)).output().expect("runs");
        assert!(out.status.success(), "{sh}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "tag\ta b\tc d e\tplain\t\n", "{sh}");
    }
}

#[test]
fn a_files_last_line_and_its_newline_are_told_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = dir.path().join("sys");
    std::fs::create_dir(&sys).expect("mkdir");
    std::fs::write(sys.join("kernel-params"), "root=fstab loglevel=4\n\nlast").expect("write");
    std::fs::write(sys.join("nixos-version"), "25.05\n").expect("write");
    std::fs::write(sys.join("system"), "").expect("write");
    // The system-file loop of the script, on this directory.
    let script = fleetgate_facts::SCRIPT;
    let start = script.find("  for f in kernel-params").expect("system files loop");
    let end = start + script[start..].find("\n  done\n").expect("its end") + 8;
    for sh in shells() {
        let body = format!("s=current; sp='{}'\n{}", sys.display(), &script[start..end]);
        let out = shell(sh).arg("-c").arg(helpers(&body)).output().expect("runs");
        assert!(out.status.success(), "{sh}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "system-file\tcurrent\tkernel-params\n\
             system-line\tcurrent\tkernel-params\troot=fstab loglevel=4\n\
             system-line\tcurrent\tkernel-params\t\n\
             system-line\tcurrent\tkernel-params\tlast\n\
             system-file\tcurrent\tnixos-version\n\
             system-line\tcurrent\tnixos-version\t25.05\n\
             system-eol\tcurrent\tnixos-version\n\
             system-file\tcurrent\tsystem\n",
            "{sh}"
        );
    }
}
