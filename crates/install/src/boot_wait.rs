//! Waiting for a boot: the probes after a kexec or a reboot, each with
//! the time left, ending at the deadline with the last complete answer.

use std::time::{Duration, Instant};

use crate::target::{Look, SameBootEnds, TargetError, Waited};

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
/// With [`SameBootEnds::NothingLoadedForKexec`], an answer of the old boot
/// with no kernel loaded for kexec ends the wait at once ([`SameBootEnds`]).
pub fn poll_for_boot(
    old_boot_id: &str,
    same_boot_ends: SameBootEnds,
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
            Ok(look) if same_boot_ends.ends_with(&look) => return Waited::SameBoot(look),
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
        let waited = poll_for_boot("old", SameBootEnds::AtDeadline, Duration::from_millis(400), pacing, |left| {
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
        let waited =
            poll_for_boot("old", SameBootEnds::AtDeadline, Duration::from_millis(400), pacing, |_| Ok(look("new")));
        assert!(matches!(waited, Waited::NewBoot(ref l) if l.boot_id == "new"), "{waited:?}");
        let waited = poll_for_boot("old", SameBootEnds::AtDeadline, Duration::from_millis(100), pacing, |_| {
            Err(TargetError::Lost("down".into()))
        });
        assert!(matches!(waited, Waited::Unreachable(ref e) if e.contains("down")), "{waited:?}");
    }

    fn old_boot(kexec_loaded: Option<bool>) -> Look {
        Look { kexec_loaded, ..look("old") }
    }

    /// Seed 001 without the deadline: after a `run` that returned, the old
    /// boot answering with nothing loaded for kexec is final at once; with
    /// a kernel loaded (a `kexec -e` still to come), or no way to tell, or
    /// after a reboot, only the deadline ends the wait.
    #[test]
    fn the_old_boot_with_nothing_loaded_for_kexec_ends_the_wait_at_once() {
        let pacing = Pacing { min_probe: Duration::from_millis(10), pause: Duration::from_millis(20) };
        let long = Duration::from_secs(3600);
        let mut probes = 0;
        let waited = poll_for_boot("old", SameBootEnds::NothingLoadedForKexec, long, pacing, |_| {
            probes += 1;
            Ok(old_boot(Some(false)))
        });
        assert_eq!(probes, 1);
        assert!(matches!(waited, Waited::SameBoot(ref l) if l.kexec_loaded == Some(false)), "{waited:?}");

        let short = Duration::from_millis(200);
        for (ends, loaded) in [
            (SameBootEnds::NothingLoadedForKexec, Some(true)),
            (SameBootEnds::NothingLoadedForKexec, None),
            (SameBootEnds::AtDeadline, Some(false)),
        ] {
            let mut probes = 0;
            let started = std::time::Instant::now();
            let waited = poll_for_boot("old", ends, short, pacing, |_| {
                probes += 1;
                Ok(old_boot(loaded))
            });
            assert!(matches!(waited, Waited::SameBoot(_)), "{ends:?} {loaded:?}: {waited:?}");
            let near_deadline = short - pacing.min_probe;
            assert!(
                probes >= 2 && started.elapsed() >= near_deadline,
                "{ends:?} {loaded:?}: ended before the deadline"
            );
        }
    }
}
