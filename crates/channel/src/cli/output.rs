//! What `fleetgate channel` prints: results (human lines or one JSON document), errors
//! (miette, fixed width off a terminal), and clap's usage errors for front ends.
use std::ffi::OsString;
use std::io::{IsTerminal as _, Write};
use std::process::ExitCode;

use crate::error::ChannelError;
use crate::promote::PromoteOutcome;
use crate::sync::HostSync;

/// True if a command line asks for JSON output (`--json` before any `--`). Used when
/// clap itself refused the command line, so there are no parsed arguments to ask.
pub fn wants_json(args: &[OsString]) -> bool {
    args.iter().take_while(|a| *a != "--").any(|a| a == "--json")
}

/// The JSON document of a command line clap refused: `{"result":"failed","error":…,
/// "exit_code":2}`, the same shape as every other channel failure. `error` is clap's
/// message without the `error:` prefix, the usage and the `--help` hint.
pub fn usage_error_json(e: &clap::Error) -> serde_json::Value {
    let text = e.render().to_string();
    let message = text.split("\nUsage:").next().unwrap_or(&text);
    let message = message.strip_prefix("error: ").unwrap_or(message);
    // One line: a list introduced by `…:` continues with spaces, other lines (clap's
    // `tip:`) are separate sentences.
    let mut one_line = String::new();
    for line in message.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !one_line.is_empty() {
            one_line.push_str(if one_line.ends_with(':') { " " } else { "; " });
        }
        one_line.push_str(line);
    }
    let message = one_line;
    serde_json::json!({ "result": "failed", "error": message, "exit_code": EXIT_USAGE })
}

/// What a front end does when clap refuses the command line of a channel command:
/// `--help` and `--version` print as usual; an error goes to stderr as clap renders it
/// and, with `--json`, also as one JSON document on stdout ([`usage_error_json`]).
/// `args` are the arguments after the program name.
pub fn usage_error(e: &clap::Error, args: &[OsString]) -> ExitCode {
    if !e.use_stderr() {
        // --help, --version: not errors.
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if wants_json(args) {
        print_json(&mut std::io::stdout(), &usage_error_json(e));
    }
    let _ = e.print();
    ExitCode::from(EXIT_USAGE)
}

/// Exit code of bad input and configuration, clap's usage errors included.
pub const EXIT_USAGE: u8 = 2;

/// Prints the error (miette, on stderr) and returns its exit code.
pub fn report(e: ChannelError) -> ExitCode {
    let code = e.exit_code();
    eprint!("{}", render(e));
    ExitCode::from(code)
}

/// The error as miette draws it: in colour for a terminal, without colour and at a
/// fixed width (100 columns) for logs, so that CI logs and tests see the same text.
fn render(e: ChannelError) -> String {
    let report = miette::Report::new(e);
    if std::io::stderr().is_terminal() {
        return format!("{report:?}\n");
    }
    let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor()).with_width(100);
    let mut text = String::new();
    if handler.render_report(&mut text, report.as_ref()).is_err() {
        text = format!("{}\n", report.chain().map(ToString::to_string).collect::<Vec<_>>().join(": "));
    }
    text
}

/// The JSON document of a failure.
pub(super) fn error_json(e: &ChannelError) -> serde_json::Value {
    serde_json::json!({
        "result": "failed",
        "error": e.chain(),
        "exit_code": e.exit_code(),
    })
}

/// The JSON document of a promotion: `{"result":"promoted", …the outcome…}`.
pub(super) fn outcome_json(o: &PromoteOutcome) -> serde_json::Value {
    tagged(serde_json::to_value(o).unwrap_or_default(), "result", "promoted")
}

/// `v` (an object) with one more member.
pub(super) fn tagged(mut v: serde_json::Value, key: &str, value: &str) -> serde_json::Value {
    if let Some(map) = v.as_object_mut() {
        map.insert(key.into(), value.into());
    }
    v
}

pub(super) fn print_json(out: &mut dyn Write, v: &serde_json::Value) {
    // A closed stdout must not turn a promotion into a failure.
    let _ = writeln!(out, "{v}");
}

pub(super) fn print_outcome(out: &mut dyn Write, o: &PromoteOutcome) {
    let _ = writeln!(out, "{}: {}", o.branch, o.movement.describe(&o.commit));
}

pub(super) fn print_skip(out: &mut dyn Write, json: bool, reason: &str) {
    if json {
        print_json(out, &serde_json::json!({ "result": "skipped", "reason": reason }));
    } else {
        let _ = writeln!(out, "skipped: {reason}");
    }
}

/// Prints the per-host results of a sync; the exit code is the worst of the failures'
/// ([`ChannelError::exit_code`]), 0 if none failed.
pub(super) fn report_sync(
    out: &mut dyn Write,
    json: bool,
    commit: &crate::commit::CommitId,
    results: Vec<(String, HostSync)>,
) -> ExitCode {
    let mut code = 0u8;
    let mut hosts = Vec::new();
    for (host, r) in results {
        match r {
            HostSync::Promoted(o) if json => hosts.push(tagged(outcome_json(&o), "host", &host)),
            HostSync::Promoted(o) => print_outcome(out, &o),
            HostSync::NotCached(p) => {
                if json {
                    hosts.push(serde_json::json!({
                        "host": host, "result": "not_cached", "system": p,
                    }));
                } else {
                    let _ = writeln!(out, "{host}: {p} not in the cache, skipped");
                }
            }
            HostSync::Failed(e) => {
                code = code.max(e.exit_code());
                if json {
                    hosts.push(tagged(error_json(&e), "host", &host));
                } else {
                    let _ = writeln!(out, "{host}: failed");
                }
                eprint!("{host}: {}", render(e));
            }
        }
    }
    if json {
        print_json(
            out,
            &serde_json::json!({
                "result": if code == 0 { "synced" } else { "failed" },
                "commit": commit,
                "exit_code": code,
                "hosts": hosts,
            }),
        );
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::CommitId;

    fn sync_report(results: Vec<(String, HostSync)>) -> (ExitCode, serde_json::Value) {
        let commit = CommitId::parse(&"a".repeat(40)).unwrap();
        let mut out = Vec::new();
        let code = report_sync(&mut out, true, &commit, results);
        (code, serde_json::from_slice(&out).unwrap())
    }

    #[test]
    fn sync_json_lists_every_host_and_the_exit_code_is_the_worst_failure() {
        let store = "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-sys".to_owned();
        let (code, v) = sync_report(vec![("beta".into(), HostSync::NotCached(store.clone()))]);
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(v["result"], "synced");
        assert_eq!(v["commit"], "a".repeat(40));
        assert_eq!(v["hosts"][0]["host"], "beta");
        assert_eq!(v["hosts"][0]["result"], "not_cached");
        assert_eq!(v["hosts"][0]["system"], store.as_str());

        let not_found = ChannelError::CommitNotFound { commit: "a".repeat(40), repo: "r".into() };
        let (code, v) = sync_report(vec![
            ("beta".into(), HostSync::NotCached(store)),
            ("gamma".into(), HostSync::Failed(not_found)),
        ]);
        assert_eq!(code, ExitCode::FAILURE);
        assert_eq!(v["result"], "failed");
        assert_eq!(v["hosts"][1]["host"], "gamma");
        assert_eq!(v["hosts"][1]["exit_code"], 1);
        assert!(v["hosts"][1]["error"].as_str().unwrap().contains("is not in r"), "{v}");

        let bad = ChannelError::BadHost { host: "-x".into() };
        let not_found = ChannelError::CommitNotFound { commit: "a".repeat(40), repo: "r".into() };
        let (code, v) =
            sync_report(vec![("gamma".into(), HostSync::Failed(not_found)), ("-x".into(), HostSync::Failed(bad))]);
        assert_eq!(code, ExitCode::from(2));
        assert_eq!(v["exit_code"], 2);
    }

    #[test]
    fn exit_codes_separate_bad_input_from_failed_promotions() {
        assert_eq!(ChannelError::BadHost { host: "x".into() }.exit_code(), 2);
        assert_eq!(ChannelError::Config("--repo is required".into()).exit_code(), 2);
        assert_eq!(ChannelError::HydraEvent("x".into()).exit_code(), 2);
        let diverged = ChannelError::Diverged { branch: "b".into(), current: "c".into(), commit: "d".into() };
        assert_eq!(diverged.exit_code(), 1);
        assert_eq!(ChannelError::Database("locked".into()).exit_code(), 1);
    }
}
