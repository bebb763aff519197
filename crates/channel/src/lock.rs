//! One promotion per repository at a time: an exclusive `flock` on a lock file next to
//! the mirror, waited for with a timeout. The kernel drops it if the process dies.
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};

use crate::error::ChannelError;

/// A held lock; released on drop.
#[derive(Debug)]
pub struct RepoLock {
    file: File,
}

impl RepoLock {
    /// Takes the lock at `path` (created if absent), waiting at most `timeout`.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<Self, ChannelError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| ChannelError::io("opening lock file", path, e))?;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Self { file }),
                Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {}
                Err(e) => {
                    return Err(ChannelError::io("locking", path, e.into()));
                }
            }
            if Instant::now() >= deadline {
                return Err(ChannelError::LockTimeout { path: path.to_owned(), waited: timeout });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        let _ = flock(&self.file, FlockOperation::Unlock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_times_out_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let first = RepoLock::acquire(&p, Duration::from_secs(1)).unwrap();
        let e = RepoLock::acquire(&p, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e, ChannelError::LockTimeout { .. }), "{e}");
        drop(first);
        RepoLock::acquire(&p, Duration::from_millis(50)).unwrap();
    }
}
