//! The human form of a [`Report`]: the verdict first, then each finding with
//! its evidence and fix, then what to do next.

use std::fmt::Write as _;

use crate::{Decision, Report};

/// Renders one finding, indented (the renderer `fleetgate facts` uses too).
pub use fleetgate_facts::render_finding;

/// Renders a report for a terminal.
#[must_use]
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "target:   {}", report.target);
    let _ = writeln!(out, "system:   {}", report.system);
    if let Some(c) = &report.current {
        let _ = writeln!(out, "current:  {c}");
    }
    if let Some(b) = &report.booted {
        if report.current.as_ref() != Some(b) {
            let _ = writeln!(out, "booted:   {b}");
        }
    }
    let verdict = match report.decision {
        Decision::Switch => "SWITCH — it will boot, and can switch live",
        Decision::Boot => "BOOT — it will boot; deploy with `boot` and reboot",
        Decision::Blocked => "BLOCKED — do not deploy",
    };
    let _ = writeln!(out, "decision: {verdict}");
    out.push('\n');
    for f in &report.findings {
        render_finding(&mut out, f);
    }
    if !report.findings.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(out, "next: {}", report.next_step);
    out
}
