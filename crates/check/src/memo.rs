//! What `check` reads from the Nix store, kept for the process: a deploy
//! checks every host against its new system, and the hosts of a fleet share
//! kernels and initrds, so the second host's check would decompress the same
//! initrd and parse the same module metadata again (issue 15: ~40 ms of a
//! ~45 ms check, per host).
//!
//! Only paths that resolve into `/nix/store` are kept: a store path never
//! changes once valid. Should one be garbage-collected and built again, it
//! is a new file: the key holds the device, inode and change time of what
//! was read, so a rebuilt path is read again. At most [`CAPACITY`] values
//! are kept (the oldest goes first): a process that checks many kernels
//! holds a bounded amount of memory.

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// How many values one memo keeps.
pub const CAPACITY: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    path: PathBuf,
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl Key {
    /// The key of `path`: `None` when it is not in the Nix store (or cannot
    /// be looked at), so it is not kept.
    fn of(path: &Path) -> Option<Key> {
        let path = std::fs::canonicalize(path).ok()?;
        if !path.starts_with("/nix/store/") {
            return None;
        }
        let m = std::fs::metadata(&path).ok()?;
        Some(Key { path, dev: m.dev(), ino: m.ino(), ctime: (m.ctime(), m.ctime_nsec()) })
    }
}

/// Values read from store paths, by path.
#[derive(Debug)]
pub struct Memo<T> {
    kept: Mutex<VecDeque<(Key, Arc<T>)>>,
}

impl<T> Memo<T> {
    /// An empty memo.
    #[must_use]
    pub const fn new() -> Memo<T> {
        Memo { kept: Mutex::new(VecDeque::new()) }
    }

    /// The value read from `path`: kept from an earlier `read` of the same
    /// store path, or `read` now (and kept when it succeeds and `path` is in
    /// the store).
    ///
    /// # Errors
    /// What `read` returns.
    pub fn get_or_read<E>(&self, path: &Path, read: impl FnOnce() -> Result<T, E>) -> Result<Arc<T>, E> {
        let key = Key::of(path);
        if let Some(k) = &key {
            let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, v)) = kept.iter().find(|(have, _)| have == k) {
                return Ok(Arc::clone(v));
            }
        }
        let value = Arc::new(read()?);
        if let Some(k) = key {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            if kept.len() >= CAPACITY {
                kept.pop_front();
            }
            kept.push_back((k, Arc::clone(&value)));
        }
        Ok(value)
    }
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_reads(memo: &Memo<usize>, path: &Path, reads: &mut usize) -> usize {
        *memo
            .get_or_read(path, || {
                *reads += 1;
                Ok::<_, ()>(*reads)
            })
            .expect("read")
    }

    #[test]
    fn store_paths_are_read_once_and_other_paths_every_time() {
        let memo = Memo::new();
        let mut reads = 0;
        // A store path (any will do: /nix/store itself resolves into it only
        // with a trailing component, so take one that exists).
        // Set-up installs Nix: its store holds paths.
        let p = std::fs::read_dir("/nix/store")
            .expect("a Nix store")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| Key::of(p).is_some())
            .expect("a store path");
        assert_eq!(count_reads(&memo, &p, &mut reads), 1);
        assert_eq!(count_reads(&memo, &p, &mut reads), 1, "kept");
        let tmp = tempfile::tempdir().expect("tmp");
        let before = reads;
        count_reads(&memo, tmp.path(), &mut reads);
        count_reads(&memo, tmp.path(), &mut reads);
        assert_eq!(reads, before + 2, "not in the store: read every time");
    }

    #[test]
    fn failures_are_not_kept_and_the_memo_is_bounded() {
        let memo: Memo<usize> = Memo::new();
        let entries: Vec<PathBuf> = std::fs::read_dir("/nix/store")
            .expect("a Nix store")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| Key::of(p).is_some())
            .take(CAPACITY + 2)
            .collect();
        assert_eq!(entries.len(), CAPACITY + 2, "store paths to keep");
        assert!(memo.get_or_read(&entries[0], || Err::<usize, _>("broken")).is_err());
        let mut reads = 0;
        assert_eq!(count_reads(&memo, &entries[0], &mut reads), 1, "a failure was not kept");
        for p in &entries[1..] {
            count_reads(&memo, p, &mut reads);
        }
        assert_eq!(memo.kept.lock().expect("lock").len(), CAPACITY);
        // The oldest went first: the first path is read again.
        let before = reads;
        count_reads(&memo, &entries[0], &mut reads);
        assert_eq!(reads, before + 1);
    }
}
