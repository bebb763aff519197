//! The process groups of children running right now, so that a process that must exit
//! before they finish (a server past its shutdown deadline) can kill them instead of
//! leaving them running with nobody to enforce their timeouts:
//! [`kill_running_children`].
use std::collections::BTreeSet;
use std::sync::Mutex;

use rustix::process::{Pid, Signal};

static LIVE: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// A child's group, registered while the child runs (until it has been reaped).
pub(crate) struct LiveGroup(Option<i32>);

impl LiveGroup {
    pub(crate) fn register(group: Option<Pid>) -> LiveGroup {
        let raw = group.map(Pid::as_raw_nonzero).map(i32::from);
        if let Some(raw) = raw {
            LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(raw);
        }
        LiveGroup(raw)
    }
}

impl Drop for LiveGroup {
    fn drop(&mut self) {
        if let Some(raw) = self.0 {
            LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&raw);
        }
    }
}

/// How many children started through this crate are running now.
#[must_use]
pub fn running_children() -> usize {
    LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
}

/// Sends SIGKILL to the process group of every child started through this crate that is
/// still running, and returns how many groups were signalled. Their callers then see
/// the children end (killed) and return as usual. For a process about to exit anyway.
pub fn kill_running_children() -> usize {
    let groups: Vec<i32> = LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().copied().collect();
    groups
        .into_iter()
        .filter_map(Pid::from_raw)
        .filter(|g| rustix::process::kill_process_group(*g, Signal::KILL).is_ok())
        .count()
}
