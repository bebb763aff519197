//! The deadline of a whole check. Every read in a check is bounded and
//! every external command has a timeout of its own; this is the last line:
//! whatever the work is waiting for, the caller gets an answer in time.
//!
//! The work runs on a thread of its own; when the deadline passes first,
//! the caller gets [`Unfinished::TimedOut`] at once and the thread is left
//! to end on its own (its reads and commands are bounded, so it does), its
//! result dropped.

use std::sync::mpsc;
use std::time::Duration;

/// Why [`within`] has no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfinished {
    /// The deadline passed first.
    TimedOut(Duration),
    /// The work ended without a result (it panicked), or could not start.
    Stopped,
}

/// Runs `work` on its own thread and waits at most `deadline` for its
/// result.
///
/// # Errors
/// [`Unfinished`] when there is no result in time.
pub fn within<T: Send + 'static>(
    deadline: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Unfinished> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new().name("fleetgate-check".to_owned()).spawn(move || {
        // The receiver is gone when the deadline passed: nothing to do.
        let _ = tx.send(work());
    });
    if spawned.is_err() {
        return Err(Unfinished::Stopped);
    }
    match rx.recv_timeout(deadline) {
        Ok(value) => Ok(value),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(Unfinished::TimedOut(deadline)),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Unfinished::Stopped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_in_time_is_returned() {
        assert_eq!(within(Duration::from_secs(60), || 42), Ok(42));
    }

    #[test]
    fn work_that_never_ends_is_cut_at_the_deadline() {
        // The work waits for a message that is only sent after `within`
        // returned: it cannot finish first.
        let (release, wait) = mpsc::channel::<()>();
        let result = within(Duration::from_millis(50), move || wait.recv().is_ok());
        assert_eq!(result, Err(Unfinished::TimedOut(Duration::from_millis(50))));
        drop(release);
    }

    #[test]
    fn work_that_panics_has_stopped() {
        let result: Result<(), _> = within(Duration::from_secs(60), || panic!("a bug"));
        assert_eq!(result, Err(Unfinished::Stopped));
    }
}
