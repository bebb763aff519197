//! `fleetgate.toml`, the optional file beside `flake.nix` that adds what a
//! flake does not say: tags, health checks, a power-cycle command, the
//! rollout strategy. Every field is optional; see `docs/deploy.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DeployError;

/// The file name looked for beside `flake.nix`.
pub const FILE_NAME: &str = "fleetgate.toml";

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Rollout settings (command-line flags override them).
    #[serde(default)]
    pub deploy: DeploySettings,
    /// Settings every host starts from.
    #[serde(default)]
    pub defaults: HostSettings,
    /// Per-host settings, merged over `defaults`.
    #[serde(default)]
    pub hosts: BTreeMap<String, HostSettings>,
}

/// `[deploy]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySettings {
    /// `all`, `canary` or `waves`.
    pub strategy: Option<String>,
    /// Hosts deployed at the same time.
    pub max_parallel: Option<usize>,
    /// Stop starting hosts after this many failed.
    pub max_failures: Option<usize>,
    /// Hosts per wave (`waves`).
    pub wave_size: Option<usize>,
    /// Canary hosts (default: the first selected host).
    #[serde(default)]
    pub canary: Vec<String>,
    /// Seconds the target waits for a confirmation after a live switch.
    pub confirm_timeout_secs: Option<u64>,
    /// Seconds to wait for a host to come back from a reboot.
    pub reboot_timeout_secs: Option<u64>,
    /// Seconds the facts of a host may take (one SSH round trip, a few
    /// hundred short processes on the host; slow hosts need more).
    pub facts_timeout_secs: Option<u64>,
    /// Let targets fetch paths from their substituters during the copy.
    pub substitute_on_destination: Option<bool>,
}

/// Settings of a host (or the defaults of all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    /// Address or ssh alias (default: deploy-rs `hostname`, else the name).
    pub hostname: Option<String>,
    /// Login user (default: deploy-rs `sshUser`, else ssh's choice).
    pub ssh_user: Option<String>,
    /// Port.
    pub ssh_port: Option<u16>,
    /// Extra `ssh` options (default: deploy-rs `sshOpts`).
    pub ssh_opts: Option<Vec<String>>,
    /// Tags for `--on @tag`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// A command run on this machine to power-cycle the host when it does
    /// not come back from a reboot; `{host}` and `{hostname}` are replaced.
    pub power_cycle: Option<String>,
    /// Health checks; a host's list adds to the defaults' list.
    #[serde(default)]
    pub health: HealthSettings,
}

/// `health`: what must hold before a new generation is confirmed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// systemd units that must be active.
    #[serde(default)]
    pub units: Vec<String>,
    /// Shell commands run on the target that must exit 0.
    #[serde(default)]
    pub commands: Vec<String>,
    /// `host:port` that must accept a TCP connection from this machine
    /// (`{hostname}` is replaced).
    #[serde(default)]
    pub tcp: Vec<String>,
    /// `http://` URLs that must answer 2xx to this machine (`{hostname}`
    /// is replaced).
    #[serde(default)]
    pub http: Vec<String>,
}

impl HealthSettings {
    /// `self` followed by `more`.
    #[must_use]
    pub fn merged(&self, more: &HealthSettings) -> HealthSettings {
        let join = |a: &[String], b: &[String]| a.iter().chain(b).cloned().collect();
        HealthSettings {
            units: join(&self.units, &more.units),
            commands: join(&self.commands, &more.commands),
            tcp: join(&self.tcp, &more.tcp),
            http: join(&self.http, &more.http),
        }
    }
}

impl FileConfig {
    /// Parses the text of a `fleetgate.toml`.
    ///
    /// # Errors
    /// [`DeployError::Config`] with toml's message (line and column).
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, DeployError> {
        toml::from_str(text).map_err(|e| DeployError::Config { path: path.to_owned(), message: e.to_string() })
    }

    /// Reads `dir/fleetgate.toml`; an absent file is an empty config.
    ///
    /// # Errors
    /// [`DeployError::ReadConfig`], [`DeployError::Config`].
    pub fn load_beside(dir: &Path) -> Result<(FileConfig, Option<PathBuf>), DeployError> {
        let path = dir.join(FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((FileConfig::parse(&text, &path)?, Some(path))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((FileConfig::default(), None)),
            Err(source) => Err(DeployError::ReadConfig { path, source }),
        }
    }

    /// The settings of `host`: its own over the defaults.
    #[must_use]
    pub fn host(&self, host: &str) -> HostSettings {
        let d = &self.defaults;
        let Some(h) = self.hosts.get(host) else {
            return d.clone();
        };
        HostSettings {
            hostname: h.hostname.clone().or_else(|| d.hostname.clone()),
            ssh_user: h.ssh_user.clone().or_else(|| d.ssh_user.clone()),
            ssh_port: h.ssh_port.or(d.ssh_port),
            ssh_opts: h.ssh_opts.clone().or_else(|| d.ssh_opts.clone()),
            tags: d.tags.iter().chain(&h.tags).cloned().collect(),
            power_cycle: h.power_cycle.clone().or_else(|| d.power_cycle.clone()),
            health: d.health.merged(&h.health),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_settings_merge_over_defaults() {
        let text = r#"
[deploy]
strategy = "canary"
max_parallel = 3
confirm_timeout_secs = 30

[defaults]
ssh_user = "root"
power_cycle = "provider-cli reset {host}"
health.units = ["sshd.service"]

[hosts.web1]
hostname = "10.0.0.1"
tags = ["web"]
health.tcp = ["{hostname}:443"]
health.units = ["nginx.service"]
"#;
        let config = FileConfig::parse(text, Path::new("fleetgate.toml")).expect("valid");
        assert_eq!(config.deploy.strategy.as_deref(), Some("canary"));
        let web1 = config.host("web1");
        assert_eq!(web1.hostname.as_deref(), Some("10.0.0.1"));
        assert_eq!(web1.ssh_user.as_deref(), Some("root"));
        assert_eq!(web1.power_cycle.as_deref(), Some("provider-cli reset {host}"));
        assert_eq!(web1.health.units, ["sshd.service", "nginx.service"]);
        assert_eq!(web1.health.tcp, ["{hostname}:443"]);
        assert_eq!(config.host("db1").health.units, ["sshd.service"]);
    }

    #[test]
    fn facts_timeout_comes_from_the_file() {
        let config = FileConfig::parse("[deploy]\nfacts_timeout_secs = 300\n", Path::new("f.toml")).expect("valid");
        let options = crate::DeployOptions::from_settings(&config.deploy).expect("options");
        assert_eq!(options.timeouts.facts, std::time::Duration::from_secs(300));
        let default = crate::DeployOptions::from_settings(&DeploySettings::default()).expect("options");
        assert_eq!(default.timeouts.facts, std::time::Duration::from_secs(60));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_place() {
        let err = FileConfig::parse("[defaults]\nssh_usr = \"root\"\n", Path::new("f.toml")).expect_err("typo");
        let text = err.to_string();
        assert!(text.contains("ssh_usr") && text.contains("line 2"), "{text}");
    }
}
