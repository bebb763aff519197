//! Waiting for a boot: the probes after a kexec or a reboot, each with
//! the time left, ending at the deadline with the last complete answer.

use std::time::{Duration, Instant};

use crate::target::{Look, TargetError, Waited};

/// The least time worth giving a probe of the target: one given less fails
/// on a slow machine for want of time, and would stand as "did not answer"
/// for a machine that answered all along (found on a TCG guest: a seed-001
/// kexec, the old OS answering every probe, reported as unknown).
pub(crate) const MIN_PROBE: Duration = Duration::from_secs(10);

/// How [`poll_for_boot`] paces its probes.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// No probe starts with less than this left.
    pub min_probe: Duration,
    /// The pause between probes.
    pub pause: Duration,
}

/// Probes (`probe(time left)`) until a boot other than `old_boot_id`
/// answers or `timeout` passes. The verdict at the deadline is the last
/// *complete* probe's: no probe starts with less than
/// [`Pacing::min_probe`] left (one started then fails for want of time).
pub fn poll_for_boot(
    old_boot_id: &str,
    timeout: Duration,
    pacing: Pacing,
    mut probe: impl FnMut(Duration) -> Result<Look, TargetError>,
) -> Waited {
    let until = Instant::now() + timeout;
    let mut last = Waited::Unreachable("not asked yet".into());
    let mut asked = false;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        // The first probe runs whatever is left: a short one beats none.
        if left.is_zero() || (asked && left < pacing.min_probe) {
            return last;
        }
        asked = true;
        last = match probe(left) {
            Ok(look) if look.boot_id != old_boot_id => return Waited::NewBoot(look),
            Ok(look) => Waited::SameBoot(look),
            Err(e) => Waited::Unreachable(e.line()),
        };
        std::thread::sleep(until.saturating_duration_since(Instant::now()).min(pacing.pause));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(boot_id: &str) -> Look {
        Look { boot_id: boot_id.into(), ..Look::default() }
    }

    /// Regression (seed 001 on a TCG guest): the old OS answered every
    /// probe, but the last probe started with too little time left failed,
    /// and the wait reported "did not answer" (unknown) instead of "same
    /// boot" (old OS untouched).
    #[test]
    fn a_probe_starved_of_time_does_not_overwrite_the_last_answer() {
        let pacing = Pacing { min_probe: Duration::from_millis(150), pause: Duration::from_millis(20) };
        let mut probes = 0;
        let waited = poll_for_boot("old", Duration::from_millis(400), pacing, |left| {
            probes += 1;
            if left < Duration::from_millis(150) {
                Err(TargetError::Lost("ssh: connect timed out".into()))
            } else {
                std::thread::sleep(Duration::from_millis(30));
                Ok(look("old"))
            }
        });
        assert!(matches!(waited, Waited::SameBoot(ref l) if l.boot_id == "old"), "{waited:?}");
        assert!(probes >= 2, "{probes}");
        let waited = poll_for_boot("old", Duration::from_millis(400), pacing, |_| Ok(look("new")));
        assert!(matches!(waited, Waited::NewBoot(ref l) if l.boot_id == "new"), "{waited:?}");
        let waited =
            poll_for_boot("old", Duration::from_millis(100), pacing, |_| Err(TargetError::Lost("down".into())));
        assert!(matches!(waited, Waited::Unreachable(ref e) if e.contains("down")), "{waited:?}");
    }
}
