//! `fleetgate check --json` and `fleetgate facts --json` print exactly one
//! JSON document on stdout whatever goes wrong inside them (exit 2), and
//! hostile files are refused at once, never read forever.

use std::process::Command;

use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn fleetgate(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate")).args(args).output().expect("fleetgate runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The one JSON document of a failed run, after checking it is the only one.
fn failure(run: &Run) -> Value {
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    let mut docs = serde_json::Deserializer::from_str(&run.stdout).into_iter::<Value>();
    let doc =
        docs.next().unwrap_or_else(|| panic!("no JSON on stdout: {:?} / {}", run.stdout, run.stderr)).expect("JSON");
    assert!(docs.next().is_none(), "more than one document: {}", run.stdout);
    assert_eq!(doc["result"], "failed", "{doc:#}");
    assert_eq!(doc["exit_code"], 2, "{doc:#}");
    assert!(doc["error"].as_str().is_some_and(|e| !e.is_empty() && !e.contains('\n')), "{doc:#}");
    // The human report stays on stderr.
    assert!(!run.stderr.is_empty());
    doc
}

#[test]
fn every_error_inside_check_and_facts_is_one_json_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let system = dir.path().join("system");
    std::fs::create_dir(&system).expect("mkdir");
    std::fs::write(system.join("nixos-version"), "25.05").expect("write");
    let system = system.display().to_string();

    let doc = failure(&fleetgate(&["check", "--system", "/nonexistent", "--target", "local", "--json"]));
    assert!(doc["error"].as_str().is_some_and(|e| e.starts_with("cannot read the system /nonexistent")), "{doc:#}");
    // The hint works on Nix 2.8: no --print-out-paths, features named.
    let help = doc["help"].as_str().unwrap_or_default();
    assert!(
        help.contains("--extra-experimental-features 'nix-command flakes' build") && !help.contains("print-out-paths")
    );

    let doc = failure(&fleetgate(&["check", "--system", &system, "--target", "web1", "--json"]));
    assert!(doc["help"].as_str().is_some_and(|h| h.contains("try `--target ssh://web1`")), "{doc:#}");

    let doc = failure(&fleetgate(&["check", "--system", &system, "--target", "local", "--flake", "web1", "--json"]));
    assert!(doc["error"].as_str().is_some_and(|e| e.contains("--flake wants FLAKE#HOST")), "{doc:#}");

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{").expect("write");
    let doc = failure(&fleetgate(&["facts", "--target", &bad.display().to_string(), "--json"]));
    // The cause once, in the one line.
    assert_eq!(doc["error"].as_str().unwrap_or_default().matches("EOF while parsing").count(), 1, "{doc:#}");

    let doc = failure(&fleetgate(&["facts", "--target", "/nonexistent/facts.json", "--json"]));
    assert!(doc["error"].as_str().is_some_and(|e| e.contains("/nonexistent/facts.json")), "{doc:#}");

    // Without --json, nothing on stdout.
    let run = fleetgate(&["facts", "--target", "/nonexistent/facts.json"]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
}

#[test]
fn fifos_and_devices_are_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A FIFO as the facts target: opening it would wait for a writer.
    for (target, says) in fleetgate_files::testing::hostile_files(dir.path(), "facts") {
        let doc = failure(&fleetgate(&["facts", "--target", &target.display().to_string(), "--json"]));
        assert!(doc["error"].as_str().is_some_and(|e| e.contains(says)), "{doc:#}");
    }
    // boot.json as a link to /dev/zero: read to the end, it never ends.
    let system = dir.path().join("system");
    std::fs::create_dir(&system).expect("mkdir");
    std::os::unix::fs::symlink("/dev/zero", system.join("boot.json")).expect("link");
    let doc = failure(&fleetgate(&["check", "--system", &system.display().to_string(), "--target", "local", "--json"]));
    assert!(
        doc["error"].as_str().is_some_and(|e| e.contains("system/boot.json is a character device, not a regular file")),
        "{doc:#}"
    );
}
