//! Shared connections logged in ahead of the hosts' turns (issue 15).
//!
//! The SSH login of a host's shared connection (its ControlMaster) is the
//! longest step of its lock phase, and it changes nothing on the host. So
//! while the fleet evaluates and builds, and while the canary deploys, a few
//! workers log in the next hosts in deploy order; a host's deploy then takes
//! its connection already up ([`Ahead::take`]) and starts with the lock.
//!
//! Bounds: at most `workers` logins at once, and at most `window`
//! connections logged in but not yet taken, so a fleet of thousands never
//! holds thousands of idle logins. A login that fails is not an error here:
//! the host's own first command logs in again and reports it. [`Ahead::stop`]
//! (a failed canary, the run's end) ends the workers; connections never
//! taken close when the [`Ahead`] is dropped.
//!
//! States of a host's slot: `waiting` (a connector, not logged in) →
//! `opened` (logged in, or tried) → `taken` (its deploy has it). A deploy
//! may take a slot in any state: a login in progress is waited for (it is
//! the login the deploy would make itself), one not yet started is skipped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::fleet::in_parallel;
use crate::inventory::Inventory;
use crate::options::Timeouts;
use crate::remote::{self, SshConnector};

/// One host's connection until its deploy takes it.
struct Slot {
    conn: Option<SshConnector>,
    opened: bool,
}

/// Connections opened ahead, by host.
pub struct Ahead {
    slots: BTreeMap<String, Mutex<Slot>>,
    /// Logged in (or being logged in) and not taken yet.
    pending: Mutex<usize>,
    room: Condvar,
    window: usize,
    stopped: AtomicBool,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ahead {
    /// Connectors for `hosts` (nothing connected); a host whose SSH target
    /// is invalid gets none (its deploy reports the error).
    #[must_use]
    pub fn new(inventory: &Inventory, hosts: &[String], t: &Timeouts, window: usize) -> Ahead {
        let slots = hosts
            .iter()
            .filter_map(|name| {
                let host = inventory.hosts.get(name)?;
                let target = host.ssh_target().ok()?;
                let slot = Slot { conn: Some(remote::connector(host, target, t)), opened: false };
                Some((name.clone(), Mutex::new(slot)))
            })
            .collect();
        Ahead {
            slots,
            pending: Mutex::new(0),
            room: Condvar::new(),
            window: window.max(1),
            stopped: AtomicBool::new(false),
        }
    }

    /// Logs in `order`'s hosts one after the other, `workers` at a time,
    /// keeping at most the window logged in and not taken; returns once
    /// every host was tried or taken, or [`Ahead::stop`] was called.
    pub fn open(&self, order: &[String], workers: usize) {
        in_parallel(order, workers, |name| {
            let Some(slot) = self.slots.get(name) else { return };
            {
                let pending = locked(&self.pending);
                let mut pending = self
                    .room
                    .wait_while(pending, |n| *n >= self.window && !self.stopped.load(Ordering::SeqCst))
                    .unwrap_or_else(PoisonError::into_inner);
                if self.stopped.load(Ordering::SeqCst) {
                    return;
                }
                *pending += 1;
            }
            let mut slot = locked(slot);
            match slot.conn.as_mut() {
                Some(conn) if !self.stopped.load(Ordering::SeqCst) => {
                    // A failed login is retried by the host's first command, which reports it.
                    let _ = conn.connect_shared();
                    slot.opened = true;
                }
                _ => self.release(),
            }
        });
    }

    fn release(&self) {
        let mut pending = locked(&self.pending);
        *pending = pending.saturating_sub(1);
        self.room.notify_all();
    }

    /// The connector of `host` (logged in if its turn came already); `None`
    /// when it was taken, or the host has none.
    pub fn take(&self, host: &str) -> Option<SshConnector> {
        let mut slot = locked(self.slots.get(host)?);
        let conn = slot.conn.take();
        if std::mem::take(&mut slot.opened) {
            self.release();
        }
        conn
    }

    /// Stops logging in more hosts (the workers return).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _pending = locked(&self.pending);
        self.room.notify_all();
    }

    /// How many hosts' connections are logged in and not yet taken.
    #[must_use]
    pub fn waiting(&self) -> usize {
        *locked(&self.pending)
    }
}

/// Calls [`Ahead::stop`] when dropped: the workers end with the run,
/// whichever way it ends.
pub struct StopOnDrop<'a>(pub &'a Ahead);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{FileConfig, HealthSettings};
    use crate::inventory::Host;

    /// Hosts whose SSH port refuses at once (nothing listens on port 1), so a
    /// login ahead fails fast and touches no known_hosts file.
    fn refusing(n: usize) -> (Inventory, Vec<String>) {
        let names: Vec<String> = (1..=n).map(|i| format!("h{i}")).collect();
        let hosts = names
            .iter()
            .map(|name| {
                let host = Host {
                    name: name.clone(),
                    hostname: "127.0.0.1".to_owned(),
                    ssh_user: None,
                    ssh_port: Some(1),
                    ssh_opts: vec!["-F".to_owned(), "/dev/null".to_owned()],
                    tags: Vec::new(),
                    power_cycle: None,
                    health: HealthSettings::default(),
                };
                (name.clone(), host)
            })
            .collect::<BTreeMap<_, _>>();
        let inventory =
            Inventory { flake: "path:/x".to_owned(), hosts, config: FileConfig::default(), config_path: None };
        (inventory, names)
    }

    #[test]
    fn every_host_is_taken_once_and_the_workers_end_when_all_are_taken() {
        let (inventory, names) = refusing(4);
        let ahead = Ahead::new(&inventory, &names, &Timeouts::default(), 1);
        std::thread::scope(|s| {
            let workers = s.spawn(|| ahead.open(&names, 2));
            for name in &names {
                // Taken whether its login ran, runs (waited for) or was not reached.
                assert!(ahead.take(name).is_some(), "{name}");
                assert!(ahead.take(name).is_none(), "{name} twice");
            }
            // With a window of 1 the workers would wait forever for room if a
            // taken connection were not released.
            workers.join().expect("workers");
        });
        assert_eq!(ahead.waiting(), 0);
        assert!(ahead.take("unknown").is_none());
    }

    #[test]
    fn no_more_than_the_window_is_logged_in_and_stop_ends_the_workers() {
        let (inventory, names) = refusing(5);
        let ahead = Ahead::new(&inventory, &names, &Timeouts::default(), 2);
        std::thread::scope(|s| {
            let workers = s.spawn(|| ahead.open(&names, 3));
            // Nobody takes anything: the workers stop at the window until stopped.
            ahead.stop();
            workers.join().expect("workers");
        });
        assert!(ahead.waiting() <= 2, "{} logged in ahead, window 2", ahead.waiting());
        // Stopped before their turn or not, every host still has its connector.
        assert!(names.iter().all(|n| ahead.take(n).is_some()));
        assert_eq!(ahead.waiting(), 0);
    }

    #[test]
    fn a_host_with_a_bad_target_has_no_connection_ahead() {
        let (mut inventory, names) = refusing(1);
        if let Some(h) = inventory.hosts.get_mut("h1") {
            h.hostname = "-oProxyCommand=x".to_owned();
        }
        let ahead = Ahead::new(&inventory, &names, &Timeouts::default(), 1);
        ahead.open(&names, 1);
        assert!(ahead.take("h1").is_none());
    }
}
