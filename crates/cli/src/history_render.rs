//! How `fleetgate history` shows what it read, in three styles:
//!
//! - [`Style::Table`] (a terminal): tables that fit its width, at least [`WIDTH`] columns — the run
//!   id (a unique prefix still names the run) and free text are shortened with
//!   `…` when a row would not fit — and wrapped paragraphs;
//! - [`Style::Plain`] (a pipe or file): one line per item, `key=value` fields,
//!   free text last, nothing shortened;
//! - [`Style::Json`]: one JSON document (`format` [`FORMAT`]).

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use fleetgate_deploy::history_query::{HostRecord, RunDetail, RunSummary};
use serde_json::json;

/// The width tables fit in when the terminal's is not known (or narrower).
pub const WIDTH: usize = 80;

/// Version of the JSON documents.
pub const FORMAT: u32 = 1;

/// How to show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Tables for a terminal this many columns wide.
    Table(usize),
    /// Plain lines.
    Plain,
    /// One JSON document.
    Json,
}

/// The runs, newest first.
#[must_use]
pub fn runs_view(runs: &[RunSummary], style: Style) -> String {
    match style {
        Style::Json => document(&json!({ "format": FORMAT, "runs": runs })),
        Style::Plain => runs.iter().map(|r| format!("{}\n", run_line(r))).collect(),
        Style::Table(_) if runs.is_empty() => "no deploy runs recorded yet\n".to_owned(),
        Style::Table(width) => {
            let mut rows = vec![row(["RUN", "STARTED (UTC)", "TOOK", "EXIT", "HOSTS"])];
            rows.extend(
                runs.iter().map(|r| {
                    [r.run_id.clone(), started_short(r.started_at), took(r.duration_ms), exit(r), outcomes(r)]
                }),
            );
            table(&rows, width, &[(4, 12), (0, 17)])
        }
    }
}

/// One run and its hosts.
#[must_use]
pub fn run_view(detail: &RunDetail, style: Style) -> String {
    let run = &detail.run;
    match style {
        Style::Json => {
            document(&json!({ "format": FORMAT, "run": run, "hosts": detail.hosts, "unrecorded": detail.unrecorded }))
        }
        Style::Plain => {
            let mut out = format!("{}\n", run_line(run));
            for h in &detail.hosts {
                host_lines(&mut out, h);
            }
            for h in &detail.unrecorded {
                let _ = writeln!(out, "{h} outcome=unrecorded message=the run ended before this host was recorded");
            }
            out
        }
        Style::Table(width) => {
            let mut out = wrap(
                &format!(
                    "run {}  started {} UTC  took {}  exit {}",
                    run.run_id,
                    started_long(run.started_at),
                    took(run.duration_ms),
                    exit(run)
                ),
                width,
                "",
            );
            out.push_str(&wrap(&format!("strategy {}  flake {}", run.strategy, run.flake), width, ""));
            let mut rows = vec![row(["HOST", "ACTION", "OUTCOME", "STANDING", "TOOK"])];
            rows.extend(detail.hosts.iter().map(|h| {
                let start = h.phases.iter().map(|p| p.start_ms).min();
                let end = h.phases.iter().map(|p| p.start_ms + p.duration_ms).max();
                let total = start.zip(end).map(|(s, e)| e.saturating_sub(s));
                [
                    h.host.clone(),
                    h.action.clone().unwrap_or_else(|| "-".to_owned()),
                    outcome(h),
                    standing(h),
                    took(total),
                ]
            }));
            rows.extend(
                detail.unrecorded.iter().map(|h| [h.clone(), "-".into(), "unrecorded".into(), "-".into(), "-".into()]),
            );
            out.push('\n');
            out.push_str(&table(&rows, width, &[(0, 12)]));
            for h in &detail.hosts {
                host_paragraph(&mut out, h, width);
            }
            if !detail.unrecorded.is_empty() {
                out.push('\n');
                out.push_str(&wrap(
                    &format!(
                        "unrecorded: {} (the run ended before these hosts were recorded; `fleetgate deploy --resume` retries them)",
                        detail.unrecorded.join(", ")
                    ),
                    width,
                    "",
                ));
            }
            out
        }
    }
}

/// One host across runs, newest first.
#[must_use]
pub fn host_view(host: &str, records: &[(RunSummary, HostRecord)], style: Style) -> String {
    match style {
        Style::Json => {
            let records: Vec<_> = records.iter().map(|(run, record)| json!({ "run": run, "record": record })).collect();
            document(&json!({ "format": FORMAT, "host": host, "records": records }))
        }
        Style::Plain => {
            let mut out = String::new();
            for (run, h) in records {
                let _ = writeln!(out, "{}", run_line(run));
                host_lines(&mut out, h);
            }
            out
        }
        Style::Table(_) if records.is_empty() => format!("no deploy run recorded {host}\n"),
        Style::Table(width) => {
            let mut rows = vec![row(["STARTED (UTC)", "RUN", "OUTCOME", "RUNNING"])];
            rows.extend(records.iter().map(|(run, h)| {
                [
                    started_short(run.started_at),
                    run.run_id.clone(),
                    outcome_and_standing(h),
                    short_system(h.running_system.as_deref()),
                ]
            }));
            table(&rows, width, &[(3, 12), (1, 17)])
        }
    }
}

fn document(value: &serde_json::Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()))
}

fn row<const N: usize>(cells: [&str; N]) -> [String; N] {
    cells.map(str::to_owned)
}

/// A table: columns padded to their widest cell, two spaces apart, the last one
/// not padded. When a row would be wider than `width`, the `shrink` columns
/// `(index, narrowest)` are shortened with `…`, in that order.
fn table<const N: usize>(rows: &[[String; N]], width: usize, shrink: &[(usize, usize)]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let total = |widths: &[usize; N]| widths.iter().sum::<usize>() + 2 * (N - 1);
    for &(column, narrowest) in shrink {
        let over = total(&widths).saturating_sub(width);
        widths[column] -= over.min(widths[column].saturating_sub(narrowest));
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
            let cell = shorten(cell, w);
            if i + 1 == N {
                line.push_str(&cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `text` in at most `width` characters, `…` marking a cut.
fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `text` wrapped at `width`, each line after `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let options = textwrap::Options::new(width)
        .initial_indent(indent)
        .subsequent_indent(indent)
        .word_separator(textwrap::WordSeparator::AsciiSpace)
        .word_splitter(textwrap::WordSplitter::NoHyphenation);
    textwrap::wrap(text, options).iter().map(|l| format!("{l}\n")).collect()
}

/// Below the table, per host: its phases with timings, then (unless it ended
/// well) its message and findings.
fn host_paragraph(out: &mut String, h: &HostRecord, width: usize) {
    let running =
        h.running_system.as_deref().map(|s| format!(", running {}", short_system(Some(s)))).unwrap_or_default();
    out.push('\n');
    out.push_str(&wrap(&format!("{}: {}{running}", h.host, outcome_and_standing(h)), width, ""));
    if !h.phases.is_empty() {
        let phases: Vec<String> = h
            .phases
            .iter()
            .map(|p| format!("{} {}{}", p.phase, took(Some(p.duration_ms)), if p.ok { "" } else { " ✘" }))
            .collect();
        out.push_str(&wrap(&phases.join(" · "), width, "  "));
    }
    for p in h.phases.iter().filter(|p| !p.ok && !p.detail.is_empty()) {
        out.push_str(&wrap(&format!("✘ {}: {}", p.phase, p.detail), width, "  "));
    }
    if !matches!(h.outcome.as_str(), "deployed" | "up-to-date") && !h.message.is_empty() {
        out.push_str(&wrap(&h.message, width, "  "));
    }
    for f in &h.findings {
        out.push_str(&wrap(&format!("{}[{}]: {}", f.severity, f.id, f.message), width, "  "));
    }
}

/// Plain lines of one host: its result, then one line per phase and finding.
fn host_lines(out: &mut String, h: &HostRecord) {
    let system = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_owned());
    let _ = writeln!(
        out,
        "{} run={} outcome={} standing={} action={} rolled_back={} previous={} new={} running={} message={}",
        h.host,
        h.run_id,
        h.outcome,
        h.standing,
        h.action.as_deref().unwrap_or("-"),
        if h.rolled_back { "yes" } else { "no" },
        system(&h.previous_system),
        system(&h.new_system),
        system(&h.running_system),
        one_line(&h.message)
    );
    for p in &h.phases {
        let _ = writeln!(
            out,
            "{} phase={} start_ms={} duration_ms={} ok={} detail={}",
            h.host,
            p.phase,
            p.start_ms,
            p.duration_ms,
            if p.ok { "yes" } else { "no" },
            one_line(&p.detail)
        );
    }
    for f in &h.findings {
        let _ = writeln!(out, "{} finding={} severity={} message={}", h.host, f.id, f.severity, one_line(&f.message));
    }
}

/// A run on one plain line.
fn run_line(r: &RunSummary) -> String {
    let mut fields = vec![
        r.run_id.clone(),
        format!("started={}", started_rfc3339(r.started_at)),
        format!("duration_ms={}", r.duration_ms.map_or_else(|| "-".to_owned(), |d| d.to_string())),
        format!("exit={}", exit(r)),
        format!("strategy={}", r.strategy),
        format!("hosts={}", if r.hosts.is_empty() { "-".to_owned() } else { r.hosts.join(",") }),
    ];
    fields.extend(r.outcomes.iter().map(|(o, n)| format!("{o}={n}")));
    fields.push(format!("flake={}", r.flake));
    fields.join(" ")
}

fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" / ")
}

fn started_rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// `2024-06-01 12:34`.
fn started_short(secs: u64) -> String {
    started_long(secs).chars().take(16).collect()
}

/// `2024-06-01 12:34:56`.
fn started_long(secs: u64) -> String {
    started_rfc3339(secs).replace('T', " ").trim_end_matches('Z').to_owned()
}

/// `0.4s`, `12.3s`, `4m05s`, `1h02m`; `-` when unknown.
fn took(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "-".to_owned() };
    let secs = ms / 1000;
    if secs < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

fn exit(r: &RunSummary) -> String {
    r.exit_code.map_or_else(|| "-".to_owned(), |c| c.to_string())
}

/// `2 deployed, 1 failed`.
fn outcomes(r: &RunSummary) -> String {
    let parts: Vec<String> = r.outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect();
    if parts.is_empty() { "-".to_owned() } else { parts.join(", ") }
}

fn outcome(h: &HostRecord) -> String {
    format!("{}{}", h.outcome, if h.rolled_back { " (rolled back)" } else { "" })
}

/// `failed (rolled back)`, and `, state UNKNOWN` when fleetgate could not tell.
fn outcome_and_standing(h: &HostRecord) -> String {
    let unknown = if h.standing == "unknown" { ", state UNKNOWN" } else { "" };
    format!("{}{unknown}", outcome(h))
}

fn standing(h: &HostRecord) -> String {
    if h.standing == "unknown" { "UNKNOWN".to_owned() } else { h.standing.clone() }
}

/// `/nix/store/<hash>-nixos-system-web1-25.05` → `nixos-system-web1-25.05`.
fn short_system(path: Option<&str>) -> String {
    path.map_or("-", |p| p.strip_prefix("/nix/store/").and_then(|name| name.get(33..)).unwrap_or(p)).to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fleetgate_deploy::history_query::{FindingRow, PhaseRow};

    use super::*;

    fn run(id: &str, started_at: u64, finished: Option<(u64, i32)>, outcomes: &[(&str, u64)]) -> RunSummary {
        RunSummary {
            run_id: id.to_owned(),
            flake: "git+file:///srv/fleet?ref=main&rev=8f3c0a7d5e1b2c4d6e8f0a1b3c5d7e9f1a2b3c4d".to_owned(),
            strategy: "canary".to_owned(),
            started_at,
            duration_ms: finished.map(|f| f.0),
            exit_code: finished.map(|f| f.1),
            hosts: outcomes.iter().map(|(o, _)| format!("{o}-host")).collect(),
            outcomes: outcomes.iter().map(|(o, n)| ((*o).to_owned(), *n)).collect::<BTreeMap<_, _>>(),
        }
    }

    fn record(host: &str, outcome: &str, phases: &[(&str, u64, bool)]) -> HostRecord {
        let mut start = 1_000;
        HostRecord {
            run_id: "1717240000-0a1b2c-4242".to_owned(),
            host: host.to_owned(),
            outcome: outcome.to_owned(),
            standing: "known-good".to_owned(),
            action: Some("boot".to_owned()),
            previous_system: None,
            new_system: None,
            running_system: Some(format!("/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-nixos-system-{host}-25.05")),
            rolled_back: false,
            message: String::new(),
            phases: phases
                .iter()
                .map(|(phase, ms, ok)| {
                    start += ms;
                    PhaseRow {
                        phase: (*phase).to_owned(),
                        start_ms: start - ms,
                        duration_ms: *ms,
                        ok: *ok,
                        detail: if *ok { String::new() } else { "no new boot_id within 300 s".to_owned() },
                    }
                })
                .collect(),
            findings: Vec::new(),
        }
    }

    fn widest(text: &str) -> usize {
        text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
    }

    #[test]
    fn the_run_list_fits_80_columns() {
        let runs = [
            run("1717245000-0d0e0f-4243", 1_717_245_000, None, &[("deployed", 1), ("unrecorded", 1)]),
            run(
                "1717240000-0a1b2c-4242",
                1_717_240_000,
                Some((361_900, 1)),
                &[("deployed", 12), ("failed", 1), ("skipped", 30), ("unreachable", 2), ("blocked", 1)],
            ),
            run("1717230000-0f0f0f-77", 1_717_230_000, Some((4_000_000, 0)), &[("up-to-date", 3)]),
        ];
        let table = runs_view(&runs, Style::Table(WIDTH));
        assert!(widest(&table) <= WIDTH, "{table}");
        insta::assert_snapshot!("table_runs", table);
        assert_eq!(runs_view(&[], Style::Table(WIDTH)), "no deploy runs recorded yet\n");
    }

    #[test]
    fn one_run_fits_80_columns_with_its_phases_and_why() {
        let mut web2 = record(
            "web2-with-a-rather-long-name.eu-central.example.com",
            "failed",
            &[
                ("lock", 80, true),
                ("copy", 9_000, true),
                ("reboot", 400, true),
                ("wait-boot", 300_000, false),
                ("power-cycle", 45_000, true),
            ],
        );
        web2.rolled_back = true;
        web2.message =
            "the host did not come back within 300 s from booting the new generation (hung in stage 1?); it \
                        was power-cycled and came back on the previous generation."
                .to_owned();
        web2.findings = vec![FindingRow {
            id: "switch.dbus-implementation-changed".to_owned(),
            severity: "warning".to_owned(),
            message: "dbus changes from dbus to dbus-broker: NixOS refuses to switch that live".to_owned(),
        }];
        let mut lost = record("db1", "failed", &[("activate", 2_000, false)]);
        lost.standing = "unknown".to_owned();
        lost.action = Some("switch".to_owned());
        lost.message = "the connection was lost during activation; the host's state is unknown".to_owned();
        let detail = RunDetail {
            run: run("1717240000-0a1b2c-4242", 1_717_240_000, Some((361_900, 3)), &[("deployed", 1), ("failed", 2)]),
            hosts: vec![
                record("web1", "deployed", &[("lock", 90, true), ("copy", 12_400, true), ("health", 1_020, true)]),
                web2,
                lost,
            ],
            unrecorded: vec!["db2".to_owned()],
        };
        let text = run_view(&detail, Style::Table(WIDTH));
        assert!(widest(&text) <= WIDTH, "{text}");
        insta::assert_snapshot!("table_run", text);
    }

    #[test]
    fn a_host_across_runs_fits_80_columns() {
        let mut failed = record("web2", "failed", &[]);
        failed.rolled_back = true;
        let records = [
            (run("1717245000-0d0e0f-4243", 1_717_245_000, None, &[("deployed", 1)]), record("web2", "deployed", &[])),
            (run("1717240000-0a1b2c-4242", 1_717_240_000, Some((361_900, 1)), &[("failed", 1)]), failed),
        ];
        let text = host_view("web2", &records, Style::Table(WIDTH));
        assert!(widest(&text) <= WIDTH, "{text}");
        insta::assert_snapshot!("table_host", text);
        assert_eq!(host_view("web9", &[], Style::Table(WIDTH)), "no deploy run recorded web9\n");
    }

    #[test]
    fn durations_read_as_a_human_would_say_them() {
        let took = |ms| took(Some(ms));
        assert_eq!([took(400), took(12_345), took(245_000), took(3_725_000)], ["0.4s", "12.3s", "4m05s", "1h02m"]);
        assert_eq!(super::took(None), "-");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }
}
