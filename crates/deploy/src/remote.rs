//! Talking to a target: connections (shared, or fresh when it matters that
//! a *new* SSH login works), scripts, and waiting with a deadline.

use std::time::{Duration, Instant};

use fleetgate_transport::{Output, Ssh, Transport, TransportError};

use crate::inventory::Host;
use crate::options::Timeouts;

/// Paths fleetgate uses on a target.
pub mod paths {
    /// The system profile.
    pub const PROFILE: &str = "/nix/var/nix/profiles/system";
    /// fleetgate's runtime directory (tmpfs: gone after a reboot).
    pub const RUN_DIR: &str = "/run/fleetgate";
    /// The deploy lock.
    pub const LOCK: &str = "/run/fleetgate/lock";
    /// GC roots fleetgate keeps.
    pub const GCROOTS: &str = "/nix/var/nix/gcroots/fleetgate";
    /// The last generation that booted healthy.
    pub const LAST_GOOD: &str = "/nix/var/nix/gcroots/fleetgate/last-good";
}

/// How fleetgate reaches one host.
pub struct Target<'a> {
    /// The host.
    pub host: &'a Host,
    /// Timeouts.
    pub timeouts: &'a Timeouts,
    shared: Option<Ssh>,
}

impl<'a> Target<'a> {
    /// A target; nothing is connected yet.
    #[must_use]
    pub fn new(host: &'a Host, timeouts: &'a Timeouts) -> Target<'a> {
        Target { host, timeouts, shared: None }
    }

    fn ssh(&self, multiplex: bool) -> Ssh {
        Ssh::new(self.host.ssh_target(), self.host.ssh_opts.clone())
            .with_connect_timeout(self.timeouts.connect)
            .with_multiplexing(multiplex)
    }

    /// The shared (ControlMaster) connection.
    pub fn shared(&mut self) -> &Ssh {
        let host = self.host;
        let timeouts = self.timeouts;
        self.shared.get_or_insert_with(|| {
            Ssh::new(host.ssh_target(), host.ssh_opts.clone())
                .with_connect_timeout(timeouts.connect)
                .with_multiplexing(true)
        })
    }

    /// Drops the shared connection (before a reboot, after losing it).
    pub fn disconnect(&mut self) {
        self.shared = None;
    }

    /// A connection of its own: a new SSH login.
    #[must_use]
    pub fn fresh(&self) -> Ssh {
        self.ssh(false)
    }

    /// Runs `script` over the shared connection; a lost connection is
    /// dropped so that the next call connects again.
    ///
    /// # Errors
    /// As [`Transport::run_script`].
    pub fn sh(&mut self, script: &str, timeout: Duration) -> Result<Output, TransportError> {
        let result = self.shared().run_script(script, timeout);
        if matches!(result, Err(TransportError::Unreachable { .. } | TransportError::Timeout { .. })) {
            self.disconnect();
        }
        result
    }

    /// Runs `script` and requires exit status 0; returns its stdout.
    ///
    /// # Errors
    /// As [`Target::sh`], and [`TransportError::CommandFailed`].
    pub fn sh_ok(&mut self, script: &str, timeout: Duration) -> Result<String, TransportError> {
        Ok(self.sh(script, timeout)?.check()?.stdout_text())
    }

    /// Runs `script` on a fresh connection.
    ///
    /// # Errors
    /// As [`Transport::run_script`].
    pub fn sh_fresh(&self, script: &str, timeout: Duration) -> Result<Output, TransportError> {
        self.fresh().run_script(script, timeout)
    }
}

/// Calls `attempt` until it returns `Some` or `deadline` passes, pausing
/// `every` between attempts (a remote state is polled, nothing local).
pub fn poll<T>(deadline: Instant, every: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(v) = attempt() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(every.min(deadline - now));
    }
}

/// The tail of a text, for messages.
#[must_use]
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The one-line form of a transport error for reports.
#[must_use]
pub fn why(e: &TransportError) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// `nix-env -p <profile> --set <system>`, then prints the profile link
/// (`system-N-link`).
#[must_use]
pub fn set_profile_script(system: &str) -> String {
    format!("set -e\nnix-env -p {p} --set {s} >&2\nreadlink {p}\n", p = paths::PROFILE, s = q(system))
}

/// Points the profile back at `generation` (or at `system` when the
/// generation number is unknown).
#[must_use]
pub fn restore_profile_script(generation: Option<u64>, system: &str) -> String {
    match generation {
        Some(n) => format!("nix-env -p {} --switch-generation {n} >&2", paths::PROFILE),
        None => format!("nix-env -p {} --set {} >&2", paths::PROFILE, q(system)),
    }
}

/// Shell-quotes a word.
#[must_use]
pub fn q(word: &str) -> String {
    fleetgate_transport::shell_quote(word)
}

/// The generation number in `system-12-link`.
#[must_use]
pub fn generation_number(link: &str) -> Option<u64> {
    link.rsplit('/').next()?.strip_prefix("system-")?.strip_suffix("-link")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_numbers() {
        assert_eq!(generation_number("system-12-link"), Some(12));
        assert_eq!(generation_number("/nix/var/nix/profiles/system-3-link"), Some(3));
        assert_eq!(generation_number("system"), None);
    }

    #[test]
    fn poll_gives_up_at_the_deadline() {
        let start = Instant::now();
        let got: Option<()> = poll(start + Duration::from_millis(50), Duration::from_millis(10), || None);
        assert!(got.is_none() && start.elapsed() >= Duration::from_millis(50));
        let mut n = 0;
        assert_eq!(
            poll(start + Duration::from_secs(5), Duration::from_millis(1), || {
                n += 1;
                (n == 3).then_some(n)
            }),
            Some(3)
        );
    }
}
