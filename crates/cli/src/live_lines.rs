//! Live lines on a terminal, one per key — a host for `fleetgate deploy` and
//! `rollback`, a phase for `fleetgate install` — as nextest and uv show work
//! that runs: a spinner, the key, the time since its line began and what it
//! does now; once done, `✔` or `✘` and a one-line summary, kept on screen.
//! Plain lines (stderr not a terminal) are each command's own: they carry
//! the time in the text instead.

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a spinner turns (and the elapsed time is redrawn).
const TICK: Duration = Duration::from_millis(120);

/// The live lines of one command run.
pub(crate) struct LiveLines {
    multi: MultiProgress,
    running: ProgressStyle,
    done: ProgressStyle,
    width: usize,
    tick: Option<Duration>,
    lines: BTreeMap<String, ProgressBar>,
}

impl LiveLines {
    /// Lines on stderr, their keys padded to `width`.
    pub(crate) fn stderr(width: usize) -> LiveLines {
        LiveLines::new(ProgressDrawTarget::stderr(), width, Some(TICK))
    }

    /// Lines drawn to `target`; with `tick`, spinners turn by themselves
    /// (without, a line is redrawn only when it changes: for tests).
    pub(crate) fn new(target: ProgressDrawTarget, width: usize, tick: Option<Duration>) -> LiveLines {
        let style = |template: &str| {
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
        };
        LiveLines {
            multi: MultiProgress::with_draw_target(target),
            running: style("{spinner} {prefix:<12} {elapsed:>4} {wide_msg}"),
            // The whole line, wrapped rather than cut at the terminal's width.
            done: style("  {prefix:<12} {elapsed:>4} {msg}"),
            width,
            tick,
            lines: BTreeMap::new(),
        }
    }

    /// A new line for `key`, its time counted from now, showing `what`.
    pub(crate) fn add(&mut self, key: &str, what: impl Into<String>) {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(self.running.clone());
        bar.set_prefix(format!("{key:<width$}", width = self.width));
        bar.set_message(what.into());
        if let Some(every) = self.tick {
            bar.enable_steady_tick(every);
        }
        if let Some(old) = self.lines.insert(key.to_owned(), bar) {
            old.abandon();
        }
    }

    /// What `key`'s line shows now (a key without a line is ignored).
    pub(crate) fn show(&self, key: &str, what: impl Into<String>) {
        if let Some(bar) = self.lines.get(key) {
            bar.set_message(what.into());
        }
    }

    /// `key`'s line is done: `✔` or `✘`, then `summary`.
    pub(crate) fn finish(&self, key: &str, ok: bool, summary: &str) {
        if let Some(bar) = self.lines.get(key) {
            bar.set_style(self.done.clone());
            bar.finish_with_message(format!("{} {summary}", if ok { "✔" } else { "✘" }));
        }
    }

    /// Leaves every line not yet done as it is (the run ended without it).
    pub(crate) fn abandon_unfinished(&self) {
        for bar in self.lines.values().filter(|b| !b.is_finished()) {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The screen's non-blank lines, the elapsed column (wall clock) cut out.
    fn screen(term: &indicatif::InMemoryTerm) -> Vec<String> {
        term.contents()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let time = words.iter().position(|w| w.ends_with('s') && w[..w.len() - 1].parse::<u64>().is_ok());
                words
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| Some(*i) != time)
                    .map(|(_, w)| *w)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    /// As `deploy` uses them: a line per host from the start, each updated
    /// and finished on its own, in the order they were added.
    #[test]
    fn each_key_keeps_its_line_and_ends_with_its_mark() {
        let term = indicatif::InMemoryTerm::new(10, 100);
        let draw = ProgressDrawTarget::term_like(Box::new(term.clone()));
        let mut lines = LiveLines::new(draw, 4, None);
        lines.add("web1", "waiting");
        lines.add("db1", "waiting");
        lines.show("db1", "copy 1.0 MiB / 4.0 MiB");
        lines.show("nope", "ignored");
        lines.finish("web1", true, "switched");
        assert_eq!(screen(&term), ["web1 ✔ switched", "⠁ db1 copy 1.0 MiB / 4.0 MiB"]);
        lines.finish("db1", false, "rolled back: health check failed");
        lines.abandon_unfinished();
        assert_eq!(screen(&term), ["web1 ✔ switched", "db1 ✘ rolled back: health check failed"]);
    }
}
