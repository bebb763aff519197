//! How `fleetgate` ends: its exit codes, stated once for every command, and
//! the one place that prints what escaped a command — a clap usage error or a
//! command's error — as miette text on stderr and, with `--json`, as exactly
//! one JSON document on stdout.
//!
//! The JSON document of a failure has the shape `fleetgate channel` uses for
//! its own failures (docs/channel.md):
//! `{"result":"failed","error":…,"help":…,"usage":…,"exit_code":2}` (`help` and
//! `usage` only when there is one).

use std::ffi::OsString;
use std::process::ExitCode;

use serde_json::{Map, Value, json};

/// Something was attempted and failed, or was refused (`check`: blocked).
/// `deploy`'s codes 0, 1 and 3 come with its report
/// ([`fleetgate_deploy::report::exit_code`]) and agree with these.
pub const EXIT_FAILED: u8 = 1;
/// Bad arguments, configuration or input, or an I/O error before anything was
/// done (clap's usage errors too): nothing was attempted.
pub const EXIT_USAGE: u8 = 2;

/// Every exit code of `fleetgate` and what it means, for the manual page's
/// EXIT STATUS.
pub fn meanings() -> [(i32, &'static str); 4] {
    use fleetgate_deploy::report::{EXIT_OK, EXIT_UNKNOWN};
    [
        (EXIT_OK, "done: the system will boot (check), every host deployed or up to date (deploy)"),
        (
            i32::from(EXIT_FAILED),
            "attempted and failed or refused: the plan is blocked (check); some hosts failed, were blocked, \
             unreachable or skipped, every host is on a known-good generation (deploy); a promotion failed (channel)",
        ),
        (
            i32::from(EXIT_USAGE),
            "bad arguments, configuration or input, or an I/O error before anything was done: nothing was done",
        ),
        (EXIT_UNKNOWN, "deploy: some host's state is unknown, a human must look (the report says what is known)"),
    ]
}

/// Whether the command line asks for JSON: a `--json` before any `--`. Used
/// only when clap could not parse the line, so that even a usage error is one
/// JSON document.
pub fn wants_json(args: &[OsString]) -> bool {
    args.iter().skip(1).take_while(|a| *a != "--").any(|a| a == "--json")
}

/// Prints a clap error (help and version included) and gives the exit code.
/// Help and version go out as clap prints them; an error goes to stderr as
/// clap renders it, and with `json` also as one JSON document on stdout.
pub fn clap_error(error: &clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    let shows_text = matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
    if shows_text || !json {
        // Nothing useful to do when the terminal is gone.
        let _ = error.print();
        return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(EXIT_USAGE));
    }
    let _ = error.print();
    print_json(&usage_json(&error.render().to_string()));
    ExitCode::from(EXIT_USAGE)
}

/// The JSON document of a usage error, from clap's rendered (plain) text:
/// `error: …` (with its indented lines), `tip: …` lines, `Usage: …`.
pub fn usage_json(rendered: &str) -> Value {
    let mut error = Vec::new();
    let mut tips = Vec::new();
    let mut usage = Vec::new();
    let mut section = &mut error;
    for paragraph in rendered.split("\n\n") {
        let trimmed = paragraph.trim_start();
        let (target, text) = if let Some(rest) = trimmed.strip_prefix("error:") {
            (&mut error, rest)
        } else if let Some(rest) = trimmed.strip_prefix("tip:") {
            (&mut tips, rest)
        } else if let Some(rest) = trimmed.strip_prefix("Usage:") {
            (&mut usage, rest)
        } else if trimmed.starts_with("For more information") {
            continue;
        } else {
            (section, paragraph)
        };
        target.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned));
        section = target;
    }
    let mut doc = Map::new();
    doc.insert("result".into(), "failed".into());
    doc.insert("error".into(), error.join(" ").into());
    if !tips.is_empty() {
        doc.insert("help".into(), tips.join(" ").into());
    }
    if !usage.is_empty() {
        doc.insert("usage".into(), usage.join("\n").into());
    }
    doc.insert("exit_code".into(), EXIT_USAGE.into());
    Value::Object(doc)
}

/// Prints a command's error (nothing was done: exit 2): miette's report on
/// stderr and, with `json`, one JSON document on stdout.
pub fn command_error(report: &miette::Report, json: bool) -> ExitCode {
    eprintln!("{report:?}");
    if json {
        print_json(&error_json(report));
    }
    ExitCode::from(EXIT_USAGE)
}

/// The JSON document of a command's error: its message and causes on one
/// line, each once ([`fleetgate_check::error_chain`]), and its help.
pub fn error_json(report: &miette::Report) -> Value {
    let error: &(dyn std::error::Error + 'static) = report.as_ref();
    let mut doc = json!({ "result": "failed", "error": fleetgate_check::error_chain(error) });
    if let Some(help) = report.help() {
        doc["help"] = help.to_string().into();
    }
    doc["exit_code"] = EXIT_USAGE.into();
    doc
}

/// One JSON document, one line, on stdout.
pub fn print_json(doc: &Value) {
    use std::io::Write as _;
    // A closed stdout must not turn into a panic; the exit code still tells.
    let _ = writeln!(std::io::stdout().lock(), "{doc}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn json_is_wanted_before_a_double_dash_only() {
        assert!(wants_json(&os(&["fleetgate", "deploy", "--bogus", "--json"])));
        assert!(!wants_json(&os(&["fleetgate", "deploy", "--", "--json"])));
        assert!(!wants_json(&os(&["--json"])), "argv[0] is the program");
        assert!(!wants_json(&os(&["fleetgate", "deploy", "--jsonx"])));
    }

    #[test]
    fn one_set_of_exit_codes() {
        let e = clap::Error::new(clap::error::ErrorKind::UnknownArgument);
        assert_eq!(e.exit_code(), i32::from(EXIT_USAGE));
        assert_eq!(fleetgate_deploy::report::EXIT_FAILED, i32::from(EXIT_FAILED));
        let usage_codes = [fleetgate_deploy::report::EXIT_OK, fleetgate_deploy::report::EXIT_UNKNOWN];
        assert!(!usage_codes.contains(&i32::from(EXIT_USAGE)), "deploy's own codes never mean usage");
    }

    #[test]
    fn usage_text_splits_into_error_help_and_usage() {
        let text = "error: the following required arguments were not provided:\n  --target <T>\n\n\
                    Usage: fleetgate facts --target <T>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_json(text),
            json!({"result":"failed","error":"the following required arguments were not provided: --target <T>",
                   "usage":"fleetgate facts --target <T>","exit_code":2})
        );
        let text = "error: unexpected argument '--bogus' found\n\n  tip: to pass '--bogus' as a value, use '-- --bogus'\n\n\
                    Usage: fleetgate deploy [OPTIONS] [TARGETS]...\n";
        assert_eq!(usage_json(text)["help"], "to pass '--bogus' as a value, use '-- --bogus'");
    }

    #[test]
    fn error_json_names_each_cause_once_and_the_help() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let report =
            miette::Report::from_err(io).wrap_err("cannot read x: no such file").wrap_err("history unreadable");
        let doc = error_json(&report);
        assert_eq!(doc["error"], "history unreadable: cannot read x: no such file");
        assert_eq!(doc["exit_code"], 2);
        let report = miette::miette!(help = "pass --history FILE", "no history");
        assert_eq!(error_json(&report)["help"], "pass --history FILE");
    }
}
