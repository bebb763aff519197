//! Log lines a client can cause at will (a bad webhook signature, a refused connection)
//! are written at most once per interval, with the number left out since the last one:
//! an attacker sending thousands of bad requests a second must not fill the journal.
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One kind of line, rate-limited.
#[derive(Debug)]
pub struct RateLimitedLine {
    interval: Duration,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// When a line was last written.
    last: Option<Instant>,
    /// Lines left out since.
    suppressed: u64,
}

impl RateLimitedLine {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, state: Mutex::new(Window::default()) }
    }

    /// The line to write now (`line`, with the count of those left out before it), or
    /// `None` if it is to be left out.
    pub fn admit(&self, now: Instant, line: &str) -> Option<String> {
        let Ok(mut w) = self.state.lock() else {
            return Some(line.to_owned());
        };
        if w.last.is_some_and(|last| now.saturating_duration_since(last) < self.interval) {
            w.suppressed += 1;
            return None;
        }
        w.last = Some(now);
        Some(match std::mem::take(&mut w.suppressed) {
            0 => line.to_owned(),
            n => format!("{line} ({n} more like it were not logged since the last one)"),
        })
    }

    /// How many were left out since the last line written, as a line of its own (for
    /// shutdown); `None` if none were.
    pub fn flush(&self) -> Option<String> {
        let mut w = self.state.lock().ok()?;
        match std::mem::take(&mut w.suppressed) {
            0 => None,
            n => Some(format!("{n} more such line(s) were not logged")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_then_the_count_of_those_left_out() {
        let limit = RateLimitedLine::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.admit(t0, "bad signature").as_deref(), Some("bad signature"));
        for i in 1..=49 {
            assert_eq!(limit.admit(t0 + Duration::from_millis(i * 100), "bad signature"), None);
        }
        let next = limit.admit(t0 + Duration::from_secs(10), "bad signature");
        assert_eq!(next.as_deref(), Some("bad signature (49 more like it were not logged since the last one)"));
        assert_eq!(limit.flush(), None);
        assert_eq!(limit.admit(t0 + Duration::from_secs(11), "bad signature"), None);
        assert_eq!(limit.flush().as_deref(), Some("1 more such line(s) were not logged"));
        assert_eq!(limit.flush(), None);
    }
}
