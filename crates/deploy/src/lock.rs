//! One deploy per host at a time: a lock *on the target*, so that two
//! operators (or two CI jobs) on different machines exclude each other.
//! `mkdir` is atomic; the directory holds the owner's description. The lock
//! lives in `/run` (tmpfs), so a reboot releases it — the deployer takes it
//! again when the host is back.

use std::time::Duration;

use fleetgate_transport::TransportError;

use crate::remote::{Target, paths, q};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it.
    #[error(
        "another deploy holds the lock on this host ({owner}); wait for it to finish — if it died, remove {} on the host",
        paths::LOCK
    )]
    Held {
        /// The owner's description.
        owner: String,
    },
    /// The host could not be asked.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// The owner line: `run=<id> by=<user>@<machine> pid=<pid>`.
#[must_use]
pub fn owner(run_id: &str) -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("run={run_id} by={user}@{} pid={}", machine.trim(), std::process::id())
}

fn acquire_script(run_id: &str, owner: &str) -> String {
    format!(
        "mkdir -p {dir}\n\
         if mkdir {lock} 2>/dev/null; then printf '%s\\n' {owner} > {lock}/owner; echo acquired; exit 0; fi\n\
         o=$(cat {lock}/owner 2>/dev/null)\n\
         case \"$o\" in {mine}*) echo acquired ;; *) echo \"held $o\" ;; esac\n",
        dir = paths::RUN_DIR,
        lock = paths::LOCK,
        owner = q(owner),
        mine = q(&format!("run={run_id} ")),
    )
}

/// Takes the lock for `run_id` (again, if this run already holds it).
///
/// # Errors
/// [`LockError::Held`] when another run holds it.
pub fn acquire(target: &mut Target<'_>, run_id: &str, timeout: Duration) -> Result<(), LockError> {
    let out = target.sh_ok(&acquire_script(run_id, &owner(run_id)), timeout)?;
    match out.trim().strip_prefix("held") {
        None => Ok(()),
        Some(o) => Err(LockError::Held {
            owner: if o.trim().is_empty() { "owner unknown".to_owned() } else { o.trim().to_owned() },
        }),
    }
}

/// Releases the lock if this run holds it.
///
/// # Errors
/// Transport errors.
pub fn release(target: &mut Target<'_>, run_id: &str, timeout: Duration) -> Result<(), TransportError> {
    let script = format!(
        "o=$(cat {lock}/owner 2>/dev/null)\ncase \"$o\" in {mine}*) rm -rf {lock} ;; esac\n",
        lock = paths::LOCK,
        mine = q(&format!("run={run_id} ")),
    );
    target.sh(&script, timeout)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// The script against a local directory standing in for /run.
    #[test]
    fn the_lock_excludes_other_runs_and_lets_its_owner_in_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let run = |script: String| {
            let script = script.replace(paths::RUN_DIR, &dir.path().display().to_string());
            let out = Command::new("sh").arg("-c").arg(&script).output().expect("sh");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        assert_eq!(run(acquire_script("r1", "run=r1 by=a@b pid=1")), "acquired");
        assert_eq!(run(acquire_script("r1", "run=r1 by=a@b pid=1")), "acquired");
        assert_eq!(run(acquire_script("r2", "run=r2 by=c@d pid=2")), "held run=r1 by=a@b pid=1");
        assert_eq!(run(acquire_script("r", "run=r by=c@d pid=2")), "held run=r1 by=a@b pid=1", "prefixes do not match");
    }
}
