//! One promotion per repository at a time: an exclusive `flock` on a lock file next to
//! the mirror, waited for with a timeout. The kernel drops it if the process dies.
//!
//! A lock file may be removed by its holder ([`RepoLock::remove`], when a failed
//! promotion cleans up the mirror it created). A waiter that then gets the lock holds it
//! on a file no longer at the path, so after each `flock` the descriptor is compared
//! with the path (device and inode); on a mismatch it starts over on the new file.
use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};

use crate::error::ChannelError;

/// A held lock; released on drop.
#[derive(Debug)]
pub struct RepoLock {
    file: File,
    path: PathBuf,
}

/// True if `file` is the file now at `path`.
fn still_at(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(held), Ok(now)) => held.dev() == now.dev() && held.ino() == now.ino(),
        _ => false,
    }
}

impl RepoLock {
    /// Takes the lock at `path` (created, with its directory, if absent), waiting at
    /// most `timeout`.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<Self, ChannelError> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| ChannelError::io("creating the lock's directory", dir, e))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(|e| ChannelError::io("opening lock file", path, e))?;
            loop {
                match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                    Ok(()) if still_at(&file, path) => return Ok(Self { file, path: path.to_owned() }),
                    // Removed (or replaced) by the previous holder: lock the new file.
                    Ok(()) => break,
                    Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {}
                    Err(e) => return Err(ChannelError::io("locking", path, e.into())),
                }
                if Instant::now() >= deadline {
                    return Err(ChannelError::LockTimeout { path: path.to_owned(), waited: timeout });
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }

    /// Removes the lock file, then releases the lock.
    pub fn remove(self) -> Result<(), ChannelError> {
        std::fs::remove_file(&self.path).map_err(|e| ChannelError::io("removing lock file", &self.path, e))
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

    #[test]
    fn a_waiter_does_not_keep_a_lock_on_a_removed_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/lock");
        let first = RepoLock::acquire(&p, Duration::from_secs(1)).unwrap();
        // A waiter that opened the file before it was removed.
        let stale = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        first.remove().unwrap();
        assert!(!p.exists());
        flock(&stale, FlockOperation::NonBlockingLockExclusive).unwrap();
        assert!(!still_at(&stale, &p));
        // The next holder gets a lock on a file at the path, while the stale one is held.
        let second = RepoLock::acquire(&p, Duration::from_secs(1)).unwrap();
        assert!(still_at(&second.file, &p));
    }
}
