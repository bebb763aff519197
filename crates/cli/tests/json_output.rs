//! With `--json`, every command prints exactly one JSON document on stdout —
//! also when it fails, clap's usage errors included — and exits as documented
//! (2: bad arguments or input, nothing done). Without `--json`, errors go to
//! stderr only. Through the real binary.

use std::path::Path;

use serde_json::Value;

mod support;
use support::{Run, fleetgate as command, run};

fn fleetgate(state: &Path, args: &[&str]) -> Run {
    run(command().args(args).env("XDG_STATE_HOME", state).env("HOME", state))
}

/// The one JSON document of stdout (fails unless there is exactly one).
fn one_document(run: &Run) -> Value {
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&run.stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", run.stdout, run.stderr));
    assert_eq!(docs.len(), 1, "exactly one JSON document:\n{}", run.stdout);
    docs.into_iter().next().unwrap_or_default()
}

/// Runs a failing command with `--json`: exit 2, one document on stdout (the
/// temporary directory's path replaced), the human error still on stderr.
fn failure(args: &[&str]) -> String {
    let tmp = tempfile::tempdir().expect("tmp");
    let run = fleetgate(tmp.path(), args);
    assert_eq!(run.code, 2, "exit 2 for {args:?}; stderr:\n{}", run.stderr);
    let doc = one_document(&run);
    assert_eq!(doc["result"], "failed");
    assert_eq!(doc["exit_code"], 2);
    assert!(!run.stderr.trim().is_empty(), "the human error stays on stderr");
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.replace(&tmp.path().display().to_string(), "[TMP]")
}

#[test]
fn usage_errors_are_one_json_document_for_every_command() {
    insta::assert_snapshot!("usage_facts_missing_target", failure(&["facts", "--json"]));
    insta::assert_snapshot!("usage_check_missing_system", failure(&["check", "--json", "--target", "local"]));
    insta::assert_snapshot!("usage_deploy_unknown_argument", failure(&["deploy", "--json", "--bogus"]));
    insta::assert_snapshot!("usage_deploy_bad_number", failure(&["deploy", "--json", "--max-parallel", "many"]));
    insta::assert_snapshot!("usage_history_bad_limit", failure(&["history", "--json", "--limit", "0"]));
    insta::assert_snapshot!("usage_channel_promote_missing", failure(&["channel", "promote", "--json"]));
    insta::assert_snapshot!("usage_unknown_command", failure(&["bogus", "--json"]));
}

#[test]
fn command_errors_are_one_json_document_for_every_command() {
    insta::assert_snapshot!(
        "error_facts_missing_file",
        failure(&["facts", "--json", "--target", "/nonexistent/web1.facts.json"])
    );
    insta::assert_snapshot!(
        "error_check_missing_system",
        failure(&["check", "--json", "--system", "/nonexistent/system", "--target", "local"])
    );
    insta::assert_snapshot!("error_deploy_zero_parallel", failure(&["deploy", "--json", "--max-parallel", "0"]));
    insta::assert_snapshot!("error_history_missing", failure(&["history", "--json"]));
}

#[test]
fn without_json_errors_go_to_stderr_only() {
    let tmp = tempfile::tempdir().expect("tmp");
    for args in [&["deploy", "--bogus"][..], &["history"], &["deploy", "--max-parallel", "0"]] {
        let run = fleetgate(tmp.path(), args);
        assert_eq!((run.code, run.stdout.as_str()), (2, ""), "{args:?}");
        assert!(!run.stderr.is_empty());
    }
}

#[test]
fn help_and_version_are_text_and_exit_0_even_with_json() {
    let tmp = tempfile::tempdir().expect("tmp");
    let run = fleetgate(tmp.path(), &["deploy", "--json", "--help"]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.starts_with("Push a flake to hosts"), "{}", run.stdout);
    let run = fleetgate(tmp.path(), &["--version"]);
    assert_eq!((run.code, run.stdout.trim()), (0, concat!("fleetgate ", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn a_json_after_double_dash_is_an_argument_not_a_request_for_json() {
    let tmp = tempfile::tempdir().expect("tmp");
    let run = fleetgate(tmp.path(), &["history", "--bogus", "--", "--json"]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
}
