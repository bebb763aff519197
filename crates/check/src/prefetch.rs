//! What a check reads of the new system alone, started before the host's
//! facts are in. The new kernel's module metadata and the new initrd's
//! module listing do not depend on the host; reading them (decompressing the
//! initrd above all: ~140 ms for Debian's 31 MB zstd initrd) takes longer
//! than reading a host's facts, so `fleetgate check` reads them while the
//! facts are read (issue 15: `check` of a real Debian initrd system against
//! `lsinitramfs`).
//!
//! [`Prefetch::start`] reads each on a thread of its own (through the same
//! [`crate::memo`]s a check uses); [`crate::check_prefetched`] takes what a
//! thread read when the check asks for the *same path*, and reads for
//! itself otherwise — a prefetch changes when a value is read, never which
//! value: it is the result of the same function for the same path. A thread
//! that ended without a result (it panicked) is as if there had been no
//! prefetch: the check reads again, so its error (or value) is its own.
//!
//! Every read on these threads is bounded as the check's own are (the
//! initrd reader's limits, the module metadata's size caps); a prefetch the
//! check never asks for (the facts failed, another system) is left to end
//! on its own, its result dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use fleetgate_initrd::KernelModules;
use fleetgate_kmod::{KmodError, ModuleIndex};
use fleetgate_system::SystemToplevel;

use crate::initrd::{read_initrd_modules, read_module_index};

/// A module index read (or its error).
pub(crate) type IndexRead = Result<Arc<ModuleIndex>, KmodError>;
/// An initrd's module listing read (or its error).
pub(crate) type InitrdRead = Result<Arc<KernelModules>, fleetgate_initrd::Error>;

/// Reads started early; see the module documentation.
#[derive(Debug, Default)]
pub struct Prefetch {
    index: Option<Pending<IndexRead>>,
    initrd: Option<Pending<InitrdRead>>,
}

#[derive(Debug)]
struct Pending<T> {
    path: PathBuf,
    thread: JoinHandle<T>,
}

impl Prefetch {
    /// No prefetch: every read is the check's own.
    #[must_use]
    pub fn none() -> Prefetch {
        Prefetch::default()
    }

    /// Starts reading `new`'s module metadata and its initrd's module
    /// listing, each on a thread of its own. What cannot be started (no
    /// modules directory, no initrd, no thread) is simply not prefetched:
    /// the check finds out for itself.
    #[must_use]
    pub fn start(new: &SystemToplevel) -> Prefetch {
        let index = new.kernel_modules_dir().ok().and_then(|dir| {
            let path = dir.clone();
            spawn("fleetgate-check-modules", path, move || read_module_index(&dir))
        });
        let initrd = new.initrd_path().map(Path::to_path_buf).and_then(|initrd| {
            let path = initrd.clone();
            spawn("fleetgate-check-initrd", path, move || read_initrd_modules(&initrd))
        });
        Prefetch { index, initrd }
    }

    /// The module metadata read from `dir`, if a prefetch read that path
    /// and ended with a result.
    pub(crate) fn module_index(&mut self, dir: &Path) -> Option<IndexRead> {
        take(&mut self.index, dir)
    }

    /// The module listing read from the initrd at `path`, if a prefetch read
    /// that path and ended with a result.
    pub(crate) fn initrd_modules(&mut self, path: &Path) -> Option<InitrdRead> {
        take(&mut self.initrd, path)
    }
}

fn spawn<T: Send + 'static>(
    name: &str,
    path: PathBuf,
    read: impl FnOnce() -> T + Send + 'static,
) -> Option<Pending<T>> {
    let thread = std::thread::Builder::new().name(name.to_owned()).spawn(read).ok()?;
    Some(Pending { path, thread })
}

fn take<T>(slot: &mut Option<Pending<T>>, path: &Path) -> Option<T> {
    let pending = slot.take()?;
    if pending.path != path {
        return None;
    }
    pending.thread.join().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending<T: Send + 'static>(path: &str, value: T) -> Option<Pending<T>> {
        spawn("test", PathBuf::from(path), move || value)
    }

    #[test]
    fn a_prefetch_is_taken_once_and_only_for_its_own_path() {
        let mut slot = pending("/nix/store/a-initrd", 7);
        assert_eq!(
            take(&mut slot, Path::new("/nix/store/other-initrd")),
            None,
            "another path: not its value (and the prefetch is dropped)"
        );
        assert_eq!(take(&mut slot, Path::new("/nix/store/a-initrd")), None, "dropped: the check reads for itself");
        let mut slot = pending("/nix/store/a-initrd", 7);
        assert_eq!(take(&mut slot, Path::new("/nix/store/a-initrd")), Some(7));
        assert_eq!(take(&mut slot, Path::new("/nix/store/a-initrd")), None);
    }

    #[test]
    fn a_prefetch_that_panicked_gives_nothing_so_the_check_reads_itself() {
        let mut slot: Option<Pending<u8>> = spawn("test", PathBuf::from("/x"), || panic!("a bug in a reader"));
        assert_eq!(take(&mut slot, Path::new("/x")), None);
    }

    #[test]
    fn no_prefetch_has_nothing() {
        let mut none = Prefetch::none();
        assert!(none.module_index(Path::new("/x")).is_none());
        assert!(none.initrd_modules(Path::new("/x")).is_none());
    }
}
