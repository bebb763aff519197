//! How `fleetgate channel` shows a promotion's progress on stderr: on a terminal, one live
//! line (the step, with the bytes sent during the upload) and detail lines above it;
//! otherwise — logs, CI, `--json` — plain lines, each with the time since the start, and
//! the upload's bytes once, when it is done.
use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::progress::{Progress, Step, human_bytes};

/// The display of one command run.
pub(super) enum Display {
    /// Plain lines.
    Plain {
        /// When the command started.
        start: Instant,
    },
    /// A live line.
    Live {
        /// The line.
        bar: indicatif::ProgressBar,
        /// The current step's text (the byte count is appended to it).
        step: Mutex<String>,
    },
}

/// Prefix of every line, as the server's log lines have.
const PREFIX: &str = "fleetgate channel:";

impl Display {
    /// Live on a terminal unless `json` (a program reads the output then).
    pub(super) fn new(json: bool) -> Self {
        if json || !std::io::stderr().is_terminal() {
            return Self::Plain { start: Instant::now() };
        }
        Self::live(indicatif::ProgressDrawTarget::stderr())
    }

    fn live(target: indicatif::ProgressDrawTarget) -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(None, target);
        let style = indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(120));
        Self::Live { bar, step: Mutex::new(String::new()) }
    }

    /// A plain line: `fleetgate channel: [  12.3s] text`.
    fn plain_line(start: Instant, text: &str) -> String {
        format!("{PREFIX} [{:>6.1}s] {text}", start.elapsed().as_secs_f64())
    }
}

impl Progress for Display {
    fn step(&self, step: Step, detail: &str) {
        let text = format!("{step}: {detail}");
        match self {
            Self::Plain { start } => eprintln!("{}", Self::plain_line(*start, &text)),
            Self::Live { bar, step } => {
                bar.set_message(text.clone());
                if let Ok(mut s) = step.lock() {
                    *s = text;
                }
            }
        }
    }

    fn bytes(&self, done: u64, total: Option<u64>) {
        if let Self::Live { bar, step } = self {
            let sent = match total {
                Some(total) => format!("{} / {}", human_bytes(done), human_bytes(total.max(done))),
                None => human_bytes(done),
            };
            let step = step.lock().map(|s| s.clone()).unwrap_or_default();
            bar.set_message(format!("{step} — {sent}"));
        }
    }

    fn note(&self, line: &str) {
        match self {
            Self::Plain { start } => eprintln!("{}", Self::plain_line(*start, line)),
            Self::Live { bar, .. } => bar.println(format!("{PREFIX} {line}")),
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        if let Self::Live { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_line_shows_the_step_and_the_bytes_sent() {
        let display = Display::live(indicatif::ProgressDrawTarget::hidden());
        let Display::Live { bar, .. } = &display else { panic!("not live") };
        display.step(Step::Upload, "/nix/store/x-sys to file:///cache");
        assert_eq!(bar.message(), "[2/5] uploading the closure: /nix/store/x-sys to file:///cache");
        display.bytes(1536, Some(4 << 20));
        assert_eq!(
            bar.message(),
            "[2/5] uploading the closure: /nix/store/x-sys to file:///cache — 1.50 KiB / 4.00 MiB"
        );
        display.bytes(10, None);
        assert!(bar.message().ends_with(" — 10 B"), "{}", bar.message());
        display.step(Step::Verify, "2 paths");
        assert_eq!(bar.message(), "[3/5] verifying the cache: 2 paths");
    }

    #[test]
    fn plain_lines_carry_the_time_since_the_start() {
        let line = Display::plain_line(Instant::now(), "[1/5] checking the commit: r has c");
        assert_eq!(line, "fleetgate channel: [   0.0s] [1/5] checking the commit: r has c");
    }
}
