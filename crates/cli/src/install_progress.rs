//! How `fleetgate install` shows its phases on stderr while they run.
//!
//! - On a terminal: a live line per phase (deploy's [`LiveLines`]): a
//!   spinner, the phase, the time it has run and what it does or waits for
//!   against its deadline (`⠙ kexec   41s waiting for the installer to boot
//!   (deadline 600 s)`); once done, `✔ proven (41 s)` or `✘ failed (…)` with
//!   the error's first line.
//! - Otherwise (a log, CI) and with `--json` (a program reads stdout then):
//!   one plain line per phase event, `kexec: started`, `kexec: proven (41 s)`.
//!
//! Either way the report — plain lines, or the one JSON document — goes to
//! stdout once the install ends.

use std::io::Write;
use std::time::Duration;

use fleetgate_install::Phase;
use fleetgate_install::protocol::Observer;
use fleetgate_install::report::{PhaseRecord, PhaseResult};

use crate::live_lines::LiveLines;

/// The progress display of one install.
pub(crate) enum Progress {
    /// Plain lines on stderr.
    Plain(PlainLines<std::io::Stderr>),
    /// Live lines on the terminal.
    Live(Box<LivePhases>),
}

impl Progress {
    /// Live lines when stderr is a terminal and no program reads the output
    /// (`--json`); plain lines otherwise.
    pub(crate) fn new(json: bool) -> Progress {
        use std::io::IsTerminal as _;
        if json || !std::io::stderr().is_terminal() {
            Progress::Plain(PlainLines(std::io::stderr()))
        } else {
            Progress::Live(Box::new(LivePhases::new(LiveLines::stderr(PHASE_WIDTH))))
        }
    }

    /// The observer the protocol reports to.
    pub(crate) fn observer(&mut self) -> &mut dyn Observer {
        match self {
            Progress::Plain(p) => p,
            Progress::Live(l) => l.as_mut(),
        }
    }

    /// The install ended: a phase line still running is left as it is.
    pub(crate) fn end(self) {
        if let Progress::Live(l) = self {
            l.lines.abandon_unfinished();
        }
    }
}

/// The longest phase name (`pre-flight`).
const PHASE_WIDTH: usize = 10;

/// One plain line per phase event, to `W` (stderr; a buffer in tests).
pub(crate) struct PlainLines<W: Write>(pub(crate) W);

impl<W: Write> Observer for PlainLines<W> {
    fn started(&mut self, phase: Phase, _: Duration) {
        let _ = writeln!(self.0, "{phase}: started");
    }

    fn finished(&mut self, record: &PhaseRecord) {
        let word = match record.result {
            PhaseResult::Skipped | PhaseResult::NotReached => return,
            PhaseResult::Proven => "proven",
            PhaseResult::Refused => "refused",
            PhaseResult::Failed => "failed",
        };
        let _ = writeln!(self.0, "{}: {word} ({} s)", record.phase, record.seconds);
    }
}

/// A live line per phase that runs.
pub(crate) struct LivePhases {
    lines: LiveLines,
    /// The running phase's deadline.
    deadline: Duration,
}

impl LivePhases {
    pub(crate) fn new(lines: LiveLines) -> LivePhases {
        LivePhases { lines, deadline: Duration::ZERO }
    }

    /// `what (deadline 600 s)`.
    fn against_deadline(&self, what: &str) -> String {
        format!("{what} (deadline {} s)", self.deadline.as_secs())
    }
}

impl Observer for LivePhases {
    fn started(&mut self, phase: Phase, deadline: Duration) {
        self.deadline = deadline;
        let text = self.against_deadline("started");
        self.lines.add(phase.as_str(), text);
    }

    fn doing(&mut self, phase: Phase, what: &str) {
        self.lines.show(phase.as_str(), self.against_deadline(what));
    }

    fn finished(&mut self, record: &PhaseRecord) {
        let (ok, word) = match record.result {
            PhaseResult::Skipped | PhaseResult::NotReached => return,
            PhaseResult::Proven => (true, "proven"),
            PhaseResult::Refused => (false, "refused"),
            PhaseResult::Failed => (false, "failed"),
        };
        let mut summary = format!("{word} ({} s)", record.seconds);
        if let Some(first) = record.error.as_deref().and_then(|e| e.lines().next()) {
            summary.push_str(": ");
            summary.push_str(first);
        }
        self.lines.finish(record.phase.as_str(), ok, &summary);
    }
}

#[cfg(test)]
mod tests {
    use fleetgate_install::fake::{FakeSystem, FakeTarget, KexecEffect, plan};
    use fleetgate_install::install;

    use super::*;

    /// The plain progress lines of an install against the fake target.
    fn plain(target: &mut FakeTarget, phases: &str) -> String {
        let mut lines = PlainLines(Vec::new());
        install(target, &FakeSystem::default(), &plan(phases), &mut lines);
        String::from_utf8(lines.0).expect("utf-8")
    }

    #[test]
    fn plain_lines_of_a_full_install() {
        insta::assert_snapshot!(plain(&mut FakeTarget::new(), "kexec,disko,install,reboot"));
    }

    #[test]
    fn plain_lines_of_a_kexec_that_does_nothing() {
        let mut target = FakeTarget::new();
        target.kexec = KexecEffect::Nothing;
        insta::assert_snapshot!(plain(&mut target, "kexec,disko,install,reboot"));
    }

    #[test]
    fn plain_lines_of_a_resume_name_only_the_phases_that_run() {
        insta::assert_snapshot!(plain(&mut FakeTarget::in_installer(), "install,reboot"));
    }

    /// The screen of a terminal the live lines drew on, line by line, with
    /// the spinner's frame and the elapsed time (wall clock) left out.
    fn screen(term: &indicatif::InMemoryTerm) -> Vec<String> {
        let spinner = |c: char| "⠁⠂⠄⡀⢀⠠⠐⠈".contains(c) || c == ' ';
        term.contents()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let l = l.trim_start_matches(spinner);
                let (phase, rest) = l.split_at(l.find(' ').unwrap_or(l.len()));
                let rest = rest.trim_start();
                let after_time = rest.split_once(' ').map_or("", |(_, r)| r);
                format!("{phase} | {after_time}")
            })
            .collect()
    }

    #[test]
    fn a_terminal_shows_a_live_line_per_phase() {
        let term = indicatif::InMemoryTerm::new(20, 120);
        let draw = indicatif::ProgressDrawTarget::term_like(Box::new(term.clone()));
        let mut live = LivePhases::new(LiveLines::new(draw, PHASE_WIDTH, None));
        live.started(Phase::PreFlight, Duration::from_secs(600));
        live.finished(&PhaseRecord {
            phase: Phase::PreFlight,
            result: PhaseResult::Proven,
            seconds: 3,
            proof: Vec::new(),
            error: None,
        });
        live.started(Phase::Kexec, Duration::from_secs(120));
        live.doing(Phase::Kexec, "waiting for the installer to boot");
        assert_eq!(
            screen(&term),
            ["pre-flight | ✔ proven (3 s)", "kexec | waiting for the installer to boot (deadline 120 s)"]
        );
        live.finished(&PhaseRecord {
            phase: Phase::Kexec,
            result: PhaseResult::Failed,
            seconds: 120,
            proof: Vec::new(),
            error: Some("the machine still runs the old OS (boot id boot-1)\nmore".into()),
        });
        assert_eq!(
            screen(&term),
            [
                "pre-flight | ✔ proven (3 s)",
                "kexec | ✘ failed (120 s): the machine still runs the old OS (boot id boot-1)"
            ]
        );
    }

    /// A whole install against the fake target, drawn live: the phases that
    /// ran, each with its mark, and the error that stopped it.
    #[test]
    fn a_terminal_shows_where_an_install_stopped() {
        let term = indicatif::InMemoryTerm::new(20, 400);
        let draw = indicatif::ProgressDrawTarget::term_like(Box::new(term.clone()));
        let mut live = LivePhases::new(LiveLines::new(draw, PHASE_WIDTH, None));
        let mut target = FakeTarget::new();
        target.kexec = KexecEffect::Nothing;
        install(&mut target, &FakeSystem::default(), &plan("kexec,disko,install,reboot"), &mut live);
        live.lines.abandon_unfinished();
        let shown = screen(&term);
        assert_eq!(shown.len(), 2, "only the phases that ran: {shown:?}");
        assert_eq!(shown[0], "pre-flight | ✔ proven (2 s)");
        assert_eq!(
            shown[1],
            "kexec | ✘ failed (5 s): kexec reported success but the old OS still runs: boot id boot-1 unchanged, kernel 6.1.0-28-amd64, and `fleetgate.install=0123456789abcdef0123456789abcdef` is not in /proc/cmdline, and no kernel is loaded for kexec (/sys/kernel/kexec_loaded is 0): the tarball's kexec loaded nothing, so nothing will boot"
        );
    }
}
