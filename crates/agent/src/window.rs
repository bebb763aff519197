//! When the agent may reboot: `system.autoUpgrade`'s `rebootWindow`
//! (nixpkgs `nixos/modules/tasks/auto-upgrade.nix`), with the same
//! semantics — `HH:MM` local times, the current time strictly between them;
//! when `lower` is not before `upper` the window crosses midnight — and its
//! `randomizedDelaySec`, a random delay before the reboot that never reaches
//! past the window's end.

use std::time::Duration;

/// A reboot window, in minutes after local midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    lower: u16,
    upper: u16,
}

fn minutes(text: &str) -> Result<u16, String> {
    let bad = || format!("{text:?} is not a time of day as HH:MM (e.g. \"01:00\")");
    let b = text.as_bytes();
    if b.len() != 5 || b[2] != b':' || !b.iter().enumerate().all(|(i, c)| i == 2 || c.is_ascii_digit()) {
        return Err(bad());
    }
    let h: u16 = text[..2].parse().map_err(|_| bad())?;
    let m: u16 = text[3..].parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn hhmm(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

impl Window {
    /// Parses `lower` and `upper` (`HH:MM`).
    ///
    /// # Errors
    /// Which one is not a time of day.
    pub fn parse(lower: &str, upper: &str) -> Result<Window, String> {
        Ok(Window { lower: minutes(lower)?, upper: minutes(upper)? })
    }

    /// Whether `now` (minutes after local midnight) is inside: strictly after
    /// `lower` and strictly before `upper`, across midnight when `lower`
    /// is not before `upper` — exactly autoUpgrade's string comparisons.
    #[must_use]
    pub fn contains(&self, now: u16) -> bool {
        if self.lower < self.upper {
            now > self.lower && now < self.upper
        } else {
            now < self.upper || now > self.lower
        }
    }

    /// How long from `now` until the window closes (`None` when outside).
    #[must_use]
    pub fn left(&self, now: u16) -> Option<Duration> {
        if !self.contains(now) {
            return None;
        }
        let until = if self.upper > now { self.upper - now } else { self.upper + 24 * 60 - now };
        Some(Duration::from_secs(u64::from(until) * 60))
    }

    /// `01:00-05:00`.
    #[must_use]
    pub fn describe(&self) -> String {
        format!("{}-{}", hhmm(self.lower), hhmm(self.upper))
    }
}

/// Minutes after local midnight now (the system's time zone: `TZ`, else
/// `/etc/localtime`, as `date` reads it); UTC when the zone cannot be read.
#[must_use]
pub fn local_minute_of_day() -> u16 {
    let now = jiff::Zoned::now();
    u16::from(now.hour().unsigned_abs()) * 60 + u16::from(now.minute().unsigned_abs())
}

/// The delay before a reboot: random in `[0, max]`, but at most half of
/// what is left of the window (`left`), so the reboot still happens inside it.
#[must_use]
pub fn reboot_delay(max: Duration, left: Option<Duration>) -> Duration {
    let cap = left.map_or(max, |l| max.min(l / 2));
    if cap.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_millis(fastrand::u64(0..=u64::try_from(cap.as_millis()).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: &str) -> u16 {
        minutes(t).expect("a time")
    }

    #[test]
    fn inside_is_strictly_between_as_auto_upgrade_compares() {
        let w = Window::parse("01:00", "05:00").expect("valid");
        assert!(
            !w.contains(at("01:00")) && w.contains(at("01:01")) && w.contains(at("04:59")) && !w.contains(at("05:00"))
        );
        assert!(!w.contains(at("12:00")));
        assert_eq!(w.left(at("04:00")), Some(Duration::from_secs(3600)));
        assert_eq!(w.left(at("06:00")), None);
        // Across midnight.
        let n = Window::parse("23:00", "02:00").expect("valid");
        assert!(
            n.contains(at("23:30")) && n.contains(at("00:10")) && !n.contains(at("12:00")) && !n.contains(at("02:00"))
        );
        assert_eq!(n.left(at("23:30")), Some(Duration::from_secs(150 * 60)));
        // lower == upper: every minute but that one (autoUpgrade's else branch).
        let all = Window::parse("03:00", "03:00").expect("valid");
        assert!(all.contains(at("12:00")) && !all.contains(at("03:00")));
        assert_eq!(w.describe(), "01:00-05:00");
    }

    #[test]
    fn times_must_be_hh_mm() {
        for bad in ["1:00", "24:00", "12:60", "12-00", "", "ab:cd", "001:0"] {
            assert!(Window::parse(bad, "05:00").is_err(), "{bad}");
        }
    }

    #[test]
    fn the_delay_stays_inside_the_window() {
        for _ in 0..100 {
            let d = reboot_delay(Duration::from_secs(600), Some(Duration::from_secs(120)));
            assert!(d <= Duration::from_secs(60), "{d:?}");
            assert!(reboot_delay(Duration::from_secs(600), None) <= Duration::from_secs(600));
        }
        assert_eq!(reboot_delay(Duration::ZERO, None), Duration::ZERO);
        assert!(local_minute_of_day() < 24 * 60);
    }
}
