//! When the daemon polls next: every `poll_interval` with ±20 % jitter (a
//! fleet started together does not poll together), and after failures
//! exponentially longer — `poll_interval · 2^failures`, capped at
//! `max_backoff` — with "equal jitter" (half fixed, half random). Never a
//! tight loop: the shortest wait is 80 % of the poll interval, itself ≥ 1 s.

use std::time::Duration;

/// The wait before the next poll after `failures` failed polls in a row.
#[must_use]
pub fn next_poll(interval: Duration, max_backoff: Duration, failures: u32) -> Duration {
    if failures == 0 {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let spread = ms / 5;
        return Duration::from_millis(ms - spread + fastrand::u64(0..=spread.saturating_mul(2)));
    }
    let grown = interval.saturating_mul(2u32.saturating_pow(failures.min(20)));
    let d = grown.min(max_backoff.max(interval));
    let half = u64::try_from(d.as_millis() / 2).unwrap_or(u64::MAX);
    Duration::from_millis(half + fastrand::u64(0..=half))
}

/// The first poll after start: at a random point of the first interval (a
/// fleet that boots at once does not poll at once), but soon after a boot
/// when a verified reboot waits to be reported (`soon`).
#[must_use]
pub fn first_poll(interval: Duration, soon: bool) -> Duration {
    if soon {
        return Duration::ZERO;
    }
    let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=ms / 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_jitter_and_back_off_to_the_cap() {
        let i = Duration::from_secs(300);
        let max = Duration::from_secs(3600);
        for _ in 0..200 {
            let d = next_poll(i, max, 0);
            assert!(d >= Duration::from_secs(240) && d <= Duration::from_secs(360), "{d:?}");
            let d = next_poll(i, max, 1);
            assert!(d >= Duration::from_secs(300) && d <= Duration::from_secs(600), "{d:?}");
            let d = next_poll(i, max, 30);
            assert!(d >= Duration::from_secs(1800) && d <= max, "{d:?}");
            assert!(first_poll(i, false) <= Duration::from_secs(75));
        }
        assert_eq!(first_poll(i, true), Duration::ZERO);
        // A cap below the interval never makes polls more frequent.
        assert!(next_poll(i, Duration::from_secs(1), 5) >= Duration::from_secs(150));
    }
}
