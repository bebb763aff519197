//! The phases of an install and the set `--phases` selects.
//!
//! nixos-anywhere's `--phases` takes a comma-separated subset of
//! `kexec,disko,install,reboot` (`src/nixos-anywhere.sh`, the `phases`
//! array); fleetgate takes the same names and adds `pre-flight`, which is
//! read-only and always runs.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One phase, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Facts, `check` against the hardware, the layout against the root spec.
    PreFlight,
    /// Into the installer.
    Kexec,
    /// Partitioning and formatting.
    Disko,
    /// Closure copied, boot loader installed.
    Install,
    /// First boot of the installed system.
    Reboot,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 5] = [Phase::PreFlight, Phase::Kexec, Phase::Disko, Phase::Install, Phase::Reboot];

    /// Its name on the command line and in reports.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PreFlight => "pre-flight",
            Phase::Kexec => "kexec",
            Phase::Disko => "disko",
            Phase::Install => "install",
            Phase::Reboot => "reboot",
        }
    }

    /// How long the phase may take unless told otherwise.
    #[must_use]
    pub fn default_deadline(self) -> Duration {
        Duration::from_secs(match self {
            Phase::PreFlight => 600,
            Phase::Kexec => 600,
            Phase::Disko => 1800,
            Phase::Install => 3600,
            Phase::Reboot => 900,
        })
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--phases` that cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhasesError {
    /// A name that is not a phase.
    #[error("unknown phase {0:?} (the phases are kexec, disko, install, reboot)")]
    Unknown(String),
    /// `pre-flight` is not selectable: it always runs.
    #[error("pre-flight always runs (it changes nothing); name only kexec, disko, install, reboot")]
    PreFlightNamed,
    /// Nothing named.
    #[error("no phase named")]
    Empty,
}

/// The phases to run besides `pre-flight` (which always runs): a validated,
/// ordered subset of kexec, disko, install, reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    selected: [bool; 5],
}

impl Default for Phases {
    /// All of them (nixos-anywhere's default).
    fn default() -> Phases {
        Phases { selected: [true; 5] }
    }
}

impl Phases {
    /// Parses `kexec,disko,install,reboot` or any subset (order and
    /// repetitions do not matter; the phases always run in their order).
    ///
    /// # Errors
    /// [`PhasesError`].
    pub fn parse(text: &str) -> Result<Phases, PhasesError> {
        let mut selected = [false; 5];
        selected[0] = true;
        let mut any = false;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == Phase::PreFlight.as_str() {
                return Err(PhasesError::PreFlightNamed);
            }
            let phase = Phase::ALL
                .iter()
                .position(|p| p.as_str() == name)
                .ok_or_else(|| PhasesError::Unknown(name.to_owned()))?;
            selected[phase] = true;
            any = true;
        }
        if !any {
            return Err(PhasesError::Empty);
        }
        Ok(Phases { selected })
    }

    /// These phases and every later one (what resumes from `phase`).
    #[must_use]
    pub fn from(phase: Phase) -> Phases {
        let mut selected = [false; 5];
        for (i, p) in Phase::ALL.iter().enumerate() {
            selected[i] = *p == Phase::PreFlight || *p >= phase;
        }
        Phases { selected }
    }

    /// Whether `phase` runs.
    #[must_use]
    pub fn contains(&self, phase: Phase) -> bool {
        Phase::ALL.iter().position(|p| *p == phase).is_some_and(|i| self.selected[i])
    }

    /// The `--phases` value (without `pre-flight`).
    #[must_use]
    pub fn arg(&self) -> String {
        Phase::ALL[1..].iter().filter(|p| self.contains(**p)).map(|p| p.as_str()).collect::<Vec<_>>().join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_parse_like_nixos_anywhere() {
        let p = Phases::parse("reboot,install").expect("valid");
        assert_eq!(p.arg(), "install,reboot");
        assert!(p.contains(Phase::PreFlight), "pre-flight always runs");
        assert!(!p.contains(Phase::Kexec));
        assert_eq!(Phases::default().arg(), "kexec,disko,install,reboot");
        assert_eq!(Phases::parse("kexec,nope"), Err(PhasesError::Unknown("nope".into())));
        assert_eq!(Phases::parse("pre-flight"), Err(PhasesError::PreFlightNamed));
        assert_eq!(Phases::parse(" , "), Err(PhasesError::Empty));
        assert_eq!(Phases::from(Phase::Install).arg(), "install,reboot");
        assert_eq!(Phases::from(Phase::Kexec), Phases::default());
    }
}
