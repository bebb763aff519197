//! How a run behaves: strategy, parallelism, safety switches, timeouts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::DeploySettings;
use crate::error::DeployError;

/// How hosts are rolled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Every host at once (up to `max_parallel`).
    All,
    /// The canary hosts first, all the way through verification; then the
    /// rest at once.
    Canary,
    /// The canary hosts first, then waves of `wave_size`, each finished
    /// before the next starts.
    Waves,
}

impl Strategy {
    /// Parses `all`, `canary`, `waves`.
    ///
    /// # Errors
    /// [`DeployError::Usage`].
    pub fn parse(s: &str) -> Result<Strategy, DeployError> {
        match s {
            "all" => Ok(Strategy::All),
            "canary" => Ok(Strategy::Canary),
            "waves" => Ok(Strategy::Waves),
            _ => Err(DeployError::Usage(format!("unknown strategy {s:?}: use all, canary or waves"))),
        }
    }

    /// The strategy's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::All => "all",
            Strategy::Canary => "canary",
            Strategy::Waves => "waves",
        }
    }
}

/// Every wait fleetgate does, bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// SSH `ConnectTimeout`.
    pub connect: Duration,
    /// A short remote command (lock, profile, boot loader).
    pub command: Duration,
    /// Gathering facts.
    pub facts: Duration,
    /// `nix copy`.
    pub copy: Duration,
    /// `switch-to-configuration` on the target.
    pub activation: Duration,
    /// How long the target waits for the confirmation of a live switch
    /// before it rolls back by itself (counted from the end of activation).
    pub confirm: Duration,
    /// How long health checks may take to pass.
    pub health: Duration,
    /// How long a host may take to come back from a reboot.
    pub reboot: Duration,
    /// The power-cycle command.
    pub power_cycle: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(10),
            command: Duration::from_secs(120),
            facts: Duration::from_secs(60),
            copy: Duration::from_secs(3600),
            activation: Duration::from_secs(600),
            confirm: Duration::from_secs(90),
            health: Duration::from_secs(60),
            reboot: Duration::from_secs(300),
            power_cycle: Duration::from_secs(300),
        }
    }
}

/// Options of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployOptions {
    /// Rollout strategy.
    pub strategy: Strategy,
    /// Hosts deployed at the same time.
    pub max_parallel: usize,
    /// Stop starting hosts once this many failed (`None`: never stop).
    pub max_failures: Option<usize>,
    /// Hosts per wave.
    pub wave_size: usize,
    /// Canary hosts (default: the first selected host).
    pub canary: Vec<String>,
    /// Deploy blocked plans anyway.
    pub force: bool,
    /// Always use a verified reboot, even when a switch would do.
    pub reboot: bool,
    /// Reboot even when the boot loader cannot boot a generation once.
    pub allow_unverified_reboot: bool,
    /// `nix copy --substitute-on-destination`.
    pub substitute_on_destination: bool,
    /// Stop after planning: push nothing.
    pub dry_run: bool,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// How many times the power-cycle command is tried.
    pub power_cycle_attempts: u32,
}

impl Default for DeployOptions {
    fn default() -> DeployOptions {
        DeployOptions {
            strategy: Strategy::All,
            max_parallel: 4,
            max_failures: None,
            wave_size: 4,
            canary: Vec::new(),
            force: false,
            reboot: false,
            allow_unverified_reboot: false,
            substitute_on_destination: false,
            dry_run: false,
            timeouts: Timeouts::default(),
            power_cycle_attempts: 3,
        }
    }
}

impl DeployOptions {
    /// The defaults with `fleetgate.toml`'s `[deploy]` applied.
    ///
    /// # Errors
    /// [`DeployError::Usage`] for an unknown strategy.
    pub fn from_settings(s: &DeploySettings) -> Result<DeployOptions, DeployError> {
        let mut o = DeployOptions::default();
        if let Some(strategy) = &s.strategy {
            o.strategy = Strategy::parse(strategy)?;
        }
        if let Some(n) = s.max_parallel {
            o.max_parallel = n;
        }
        o.max_failures = s.max_failures.or(o.max_failures);
        if let Some(n) = s.wave_size {
            o.wave_size = n;
        }
        o.canary.clone_from(&s.canary);
        if let Some(secs) = s.confirm_timeout_secs {
            o.timeouts.confirm = Duration::from_secs(secs);
        }
        if let Some(secs) = s.reboot_timeout_secs {
            o.timeouts.reboot = Duration::from_secs(secs);
        }
        if let Some(secs) = s.facts_timeout_secs {
            o.timeouts.facts = Duration::from_secs(secs.max(1));
        }
        if let Some(b) = s.substitute_on_destination {
            o.substitute_on_destination = b;
        }
        Ok(o)
    }

    /// Checks the merged options (command-line flags over `fleetgate.toml`):
    /// zero or absurd values are refused whichever source they came from.
    ///
    /// # Errors
    /// [`DeployError::Usage`] naming the flag and the `fleetgate.toml` key.
    pub fn validate(&self) -> Result<(), DeployError> {
        let usage = |m: String| Err(DeployError::Usage(m));
        if self.max_parallel == 0 {
            return usage("--max-parallel (fleetgate.toml: max_parallel) must be at least 1".to_owned());
        }
        if self.wave_size == 0 {
            return usage("--wave-size (fleetgate.toml: wave_size) must be at least 1".to_owned());
        }
        const DAY: u64 = 24 * 3600;
        let checks = [
            (
                "--confirm-timeout",
                "confirm_timeout_secs",
                self.timeouts.confirm,
                5,
                "every live switch would roll back",
            ),
            (
                "--reboot-timeout",
                "reboot_timeout_secs",
                self.timeouts.reboot,
                5,
                "every verified reboot would be power-cycled",
            ),
        ];
        for (flag, key, value, min, why) in checks {
            if value.as_secs() < min {
                return usage(format!(
                    "{flag} (fleetgate.toml: {key}) is {} s; it must be at least {min} s: with less, {why}",
                    value.as_secs()
                ));
            }
            if value.as_secs() > DAY {
                return usage(format!("{flag} (fleetgate.toml: {key}) is {} s, more than a day", value.as_secs()));
            }
        }
        let t = &self.timeouts;
        for (name, value) in [
            ("connect", t.connect),
            ("command", t.command),
            ("facts", t.facts),
            ("copy", t.copy),
            ("activation", t.activation),
            ("health", t.health),
            ("power-cycle", t.power_cycle),
        ] {
            if value.is_zero() {
                return usage(format!("the {name} timeout must not be 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10: `reboot_timeout_secs = 0` in fleetgate.toml was accepted
    /// while `--reboot-timeout 0` was refused.
    #[test]
    fn zero_timeouts_are_refused_whatever_their_source() {
        for text in ["reboot_timeout_secs = 0", "confirm_timeout_secs = 0", "max_parallel = 0", "wave_size = 0"] {
            let config = crate::config::FileConfig::parse(&format!("[deploy]\n{text}\n"), std::path::Path::new("f"))
                .expect("parses");
            let o = DeployOptions::from_settings(&config.deploy).expect("merges");
            let err = o.validate().expect_err(text);
            let key = text.split(' ').next().unwrap_or_default();
            assert!(err.to_string().contains(key), "{err}");
        }
        let mut o = DeployOptions::default();
        assert!(o.validate().is_ok());
        o.timeouts.reboot = Duration::from_secs(0);
        assert!(o.validate().expect_err("flag").to_string().contains("--reboot-timeout"));
        o.timeouts.reboot = Duration::from_secs(90 * 24 * 3600);
        assert!(o.validate().is_err());
    }
}
