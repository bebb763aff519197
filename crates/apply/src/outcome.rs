//! How an apply ends ([`Outcome`]), where the host stands ([`Standing`]),
//! the steps it went through ([`Step`]) and how progress is reported
//! ([`Observer`]).

use serde::{Deserialize, Serialize};

/// The steps of the engine, in the order they can happen. Front ends map
/// them to their own phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Setting the profile, installing entries, arming the one-time boot, the watchdog.
    Activate,
    /// Health checks.
    Health,
    /// Confirming a live switch.
    Confirm,
    /// Rebooting.
    Reboot,
    /// Waiting for a new boot.
    WaitBoot,
    /// The power-cycle hook.
    PowerCycle,
    /// Making the new generation the default.
    Bless,
    /// Going back to the fallback.
    Rollback,
}

/// Where the host is at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    /// Running, and booting by default into, a generation known to be good.
    KnownGood,
    /// fleetgate cannot tell: a human must look.
    Unknown,
}

/// How the one restore path ended. Typed so that it cannot be dropped: a
/// failed restore is [`Restored::Unknown`], never known-good.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Restored {
    /// Profile and default entry are the fallback's again (verified).
    RolledBack,
    /// The restore failed or could not be verified.
    Unknown {
        /// Why.
        why: String,
    },
}

/// How an apply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Live switch: the new system runs, proved healthy, is the default, and
    /// the watchdog confirmed (verified from the host).
    Switched,
    /// Verified reboot: the new system booted once, proved healthy and is the
    /// default now (verified from the host).
    Blessed,
    /// Refused before anything that matters changed: the host runs and boots
    /// what it did before.
    Refused {
        /// The step.
        at: Step,
        /// Why.
        why: String,
    },
    /// The new system failed; the host is back on the fallback, which is the
    /// default (verified from the host).
    RolledBack {
        /// The step that failed.
        at: Step,
        /// Why.
        why: String,
    },
    /// Where the host stands cannot be told.
    Unknown {
        /// The step.
        at: Step,
        /// Why, and what to do.
        why: String,
    },
}

impl Outcome {
    /// Where the host stands.
    #[must_use]
    pub fn standing(&self) -> Standing {
        match self {
            Outcome::Unknown { .. } => Standing::Unknown,
            _ => Standing::KnownGood,
        }
    }

    /// The new system is in place.
    #[must_use]
    pub fn is_applied(&self) -> bool {
        matches!(self, Outcome::Switched | Outcome::Blessed)
    }

    /// The step it ended at, for failures.
    #[must_use]
    pub fn step(&self) -> Option<Step> {
        match self {
            Outcome::Refused { at, .. } | Outcome::RolledBack { at, .. } | Outcome::Unknown { at, .. } => Some(*at),
            _ => None,
        }
    }

    /// The sentence for the report.
    #[must_use]
    pub fn message(&self) -> String {
        match self {
            Outcome::Switched => "switched live, healthy, confirmed, and the boot default".to_owned(),
            Outcome::Blessed => "booted the new generation once, healthy, now the default".to_owned(),
            Outcome::Refused { why, .. } => format!("{why}. The host runs the previous generation."),
            Outcome::RolledBack { why, .. } => format!("{why}. Nothing is left to repair by hand."),
            Outcome::Unknown { why, .. } => why.clone(),
        }
    }
}

/// Receives the engine's progress.
pub trait Observer {
    /// A step begins.
    fn step(&mut self, step: Step);
    /// A line worth showing.
    fn info(&mut self, text: &str);
    /// A wait goes on: what is waited for and the seconds left.
    fn waiting(&mut self, what: &str, left_secs: u64);
}

/// An observer that drops everything.
#[derive(Debug, Default)]
pub struct Silent;

impl Observer for Silent {
    fn step(&mut self, _: Step) {}
    fn info(&mut self, _: &str) {}
    fn waiting(&mut self, _: &str, _: u64) {}
}
