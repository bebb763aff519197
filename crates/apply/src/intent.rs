//! The pending intent: what a verified reboot is waiting for, written on the
//! host (atomically) before the reboot, so that whoever sees the host come
//! back — the waiting deployer, the next deploy, or the host itself at boot —
//! finishes the same protocol ([`crate::reboot::resume`]).
//!
//! File: `/var/lib/fleetgate/pending.json` ([`PATH`]), JSON, [`FORMAT`] 1:
//!
//! ```json
//! { "format": 1, "run_id": "…", "new": "/nix/store/…", "fallback": "/nix/store/…",
//!   "fallback_generation": 41, "boot_id_before": "…", "deadline_unix": 1700000300,
//!   "verified": { "booted": "/nix/store/…", "units": ["sshd.service"], "commands": [],
//!                 "baseline": "running", "tcp": ["cache.example.org:443"] } }
//! ```
//!
//! `tcp` (added for the agent) is written only when non-empty and read as
//! empty when absent: intents of either version read the same everywhere.

use serde::{Deserialize, Serialize};

/// Where the intent lives on a host (persistent: it must survive the reboot).
pub const PATH: &str = "/var/lib/fleetgate/pending.json";

/// The version of the file.
pub const FORMAT: u32 = 1;

/// The largest intent file read (a bound on bad input).
pub const MAX_BYTES: u64 = 64 * 1024;

/// What "verified" means for this reboot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// The system that must have booted (`/run/booted-system`).
    pub booted: String,
    /// Units that must be active.
    #[serde(default)]
    pub units: Vec<String>,
    /// Commands that must exit 0 on the host.
    #[serde(default)]
    pub commands: Vec<String>,
    /// `systemctl is-system-running` before the reboot; no worse after.
    #[serde(default)]
    pub baseline: String,
    /// `host:port` the host itself must reach over TCP after the boot (the
    /// agent's server and binary caches: networking is what a bad
    /// generation breaks first). Absent in intents of older fleetgates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<String>,
}

/// A verified reboot in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingIntent {
    /// [`FORMAT`].
    pub format: u32,
    /// The run that rebooted the host.
    pub run_id: String,
    /// The system booted once.
    pub new: String,
    /// The default entry's system, kept in place: where a failure goes back to.
    pub fallback: String,
    /// Its profile generation, if known.
    pub fallback_generation: Option<u64>,
    /// The boot id before the reboot.
    pub boot_id_before: String,
    /// Seconds since the epoch after which a host that did not come back on
    /// `new` counts as failed.
    pub deadline_unix: u64,
    /// What must hold to bless `new`.
    pub verified: Verified,
}

/// Why a pending intent cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    /// Not the JSON of an intent.
    #[error("{PATH} does not parse")]
    Parse(#[from] serde_json::Error),
    /// Written by a fleetgate of another format.
    #[error("{PATH} has format {found}, this fleetgate reads {FORMAT}")]
    Format {
        /// The file's format.
        found: u32,
    },
}

impl PendingIntent {
    /// Parses the file's text.
    ///
    /// # Errors
    /// [`IntentError`] when it is not an intent of [`FORMAT`].
    pub fn parse(text: &str) -> Result<PendingIntent, IntentError> {
        let intent: PendingIntent = serde_json::from_str(text)?;
        if intent.format != FORMAT {
            return Err(IntentError::Format { found: intent.format });
        }
        Ok(intent)
    }

    /// The file's text.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_formats() {
        let i = PendingIntent {
            format: FORMAT,
            run_id: "r1".into(),
            new: "/nix/store/n".into(),
            fallback: "/nix/store/o".into(),
            fallback_generation: Some(4),
            boot_id_before: "b".into(),
            deadline_unix: 9,
            verified: Verified { booted: "/nix/store/n".into(), ..Verified::default() },
        };
        assert_eq!(PendingIntent::parse(&i.to_json()).expect("parses"), i);
        let other = i.to_json().replace("\"format\": 1", "\"format\": 2");
        assert!(matches!(PendingIntent::parse(&other), Err(IntentError::Format { found: 2 })));
        assert!(PendingIntent::parse("{").is_err());
    }
}
