//! The agent's configuration: a file (TOML, or the JSON the NixOS module
//! writes) and command-line flags, merged once into a checked
//! [`AgentConfig`] (flags win). Nothing downstream parses text again.
//!
//! ```toml
//! host = "web1"                                  # default: this machine's host name
//! server = "https://fleet.example.org"           # `channel serve`: manifests and reports
//! # manifest = "https://cdn.example.org/fleetgate/hosts/{host}.json"   # or file:///…/{host}.json
//! trusted_keys = ["cache.example.org-1:AbC…="]   # who may sign manifests (key text or a file)
//! caches = ["https://cache.example.org"]
//! # cache_keys = […]                             # who may sign narinfos (default: trusted_keys)
//! token_file = "/run/secrets/fleetgate-token"    # or token_credential = "token"
//! poll_interval = "5m"
//!
//! [reboot]
//! allow = true
//! window = { lower = "01:00", upper = "05:00" }
//! randomized_delay = "10m"
//!
//! [health]
//! units = ["sshd.service"]
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetgate_channel::HostName;
use fleetgate_channel::secret::SecretSource;
use fleetgate_nix::{PublicKey, StoreUri};
use serde::Deserialize;

use crate::window::Window;

/// Where the state lives by default (with the engine's pending intent).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/fleetgate";
/// The default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/fleetgate/agent.toml";
/// The largest configuration file read.
pub const MAX_CONFIG: u64 = 256 << 10;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML/JSON of the configuration.
    #[error("the configuration {} is not valid: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A setting is missing or wrong.
    #[error("{setting}: {problem}")]
    Invalid {
        /// The setting (`server`, `reboot.window`…).
        setting: &'static str,
        /// What is wrong, and what to give instead.
        problem: String,
    },
}

fn invalid(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { setting, problem: problem.into() }
}

/// A duration in a file: seconds (`300`) or humantime text (`"5m"`, `"1h 30m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "DurationText")]
pub struct Span(pub Duration);

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationText {
    Secs(u64),
    Text(String),
}

impl TryFrom<DurationText> for Span {
    type Error = String;
    fn try_from(v: DurationText) -> Result<Span, String> {
        match v {
            DurationText::Secs(s) => Ok(Span(Duration::from_secs(s))),
            DurationText::Text(t) => parse_span(&t).map(Span),
        }
    }
}

/// Parses `300`, `"5m"`, `"1h 30m"`.
///
/// # Errors
/// What is wrong with the text.
pub fn parse_span(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{text:?} is not a duration ({e}); write 300, \"5m\" or \"1h 30m\""))
}

/// The configuration file as written (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// This host's name in the channel (its manifest's `host`).
    pub host: Option<String>,
    /// `channel serve`'s base URL.
    pub server: Option<String>,
    /// Where the manifest is, if not at the server: `http(s)://…` or `file:///…`, `{host}` replaced.
    pub manifest: Option<String>,
    /// Keys that may sign manifests.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// Binary caches holding the closures.
    #[serde(default)]
    pub caches: Vec<String>,
    /// Keys that may sign the caches' narinfos (default: `trusted_keys`).
    #[serde(default)]
    pub cache_keys: Vec<String>,
    /// The report token, from a file.
    pub token_file: Option<PathBuf>,
    /// The report token, from `$CREDENTIALS_DIRECTORY/<name>`.
    pub token_credential: Option<String>,
    /// Where the agent keeps its state.
    pub state_dir: Option<PathBuf>,
    /// Where `nix`, `nix-store` are (default: `PATH`, then `/run/current-system/sw/bin`).
    pub nix_bin_dir: Option<PathBuf>,
    /// Between two polls (jittered).
    pub poll_interval: Option<Span>,
    /// The longest wait after failures.
    pub max_backoff: Option<Span>,
    /// A manifest older than this is flagged stale.
    pub stale_after: Option<Span>,
    /// A report at least this often, even when nothing changed.
    pub report_every: Option<Span>,
    /// Reboots.
    #[serde(default)]
    pub reboot: RebootFile,
    /// Health checks.
    #[serde(default)]
    pub health: HealthFile,
    /// Time limits.
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: MetricsFile,
}

/// `[reboot]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebootFile {
    /// Whether the agent may reboot the host (default false).
    pub allow: Option<bool>,
    /// `{ lower = "01:00", upper = "05:00" }`.
    pub window: Option<WindowFile>,
    /// A random delay before a reboot, at most this long.
    pub randomized_delay: Option<Span>,
}

/// `reboot.window`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowFile {
    /// `HH:MM`.
    pub lower: String,
    /// `HH:MM`.
    pub upper: String,
}

/// `[health]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    /// Units that must be active.
    #[serde(default)]
    pub units: Vec<String>,
    /// Commands that must exit 0.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Whether the server and caches must still be reachable (default true).
    pub reach: Option<bool>,
    /// How long health checks may take to pass.
    pub timeout: Option<Span>,
}

/// `[timeouts]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// One HTTP request.
    pub http: Option<Span>,
    /// Fetching a closure.
    pub realise: Option<Span>,
    /// `switch-to-configuration`.
    pub activation: Option<Span>,
    /// The magic rollback window.
    pub confirm: Option<Span>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    /// A Prometheus textfile (node_exporter's textfile collector).
    pub textfile: Option<PathBuf>,
    /// A loopback address to serve `/metrics` on.
    pub listen: Option<String>,
}

impl ConfigFile {
    /// Reads a configuration file: JSON if it starts with `{`, else TOML.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let bytes = fleetgate_nix::read_small_file(path, MAX_CONFIG).map_err(|e| {
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
            ConfigError::Read { path: path.to_owned(), reason: format!("{e}{cause}") }
        })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ConfigError::Parse { path: path.to_owned(), reason: "not UTF-8 text".into() })?;
        ConfigFile::parse(&text).map_err(|reason| ConfigError::Parse { path: path.to_owned(), reason })
    }

    /// Parses the text of a configuration file.
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| e.to_string())
        } else {
            toml::from_str(text).map_err(|e| e.to_string())
        }
    }
}

/// Flags given on the command line; each wins over the file.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--host`.
    pub host: Option<String>,
    /// `--server`.
    pub server: Option<String>,
    /// `--manifest`.
    pub manifest: Option<String>,
    /// `--trusted-key` (replaces the file's list when given).
    pub trusted_keys: Vec<String>,
    /// `--cache`.
    pub caches: Vec<String>,
    /// `--cache-key`.
    pub cache_keys: Vec<String>,
    /// `--token-file`.
    pub token_file: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--allow-reboot`.
    pub allow_reboot: bool,
    /// `--poll-interval`.
    pub poll_interval: Option<Duration>,
}

/// Where the manifest is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestLocation {
    /// An `http(s)://` URL (conditional GET).
    Http(String),
    /// A file on this host.
    File(PathBuf),
}

/// Reboot policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootPolicy {
    /// Whether the agent may reboot at all.
    pub allow: bool,
    /// When it may (`None`: any time).
    pub window: Option<Window>,
    /// The longest random delay before rebooting.
    pub randomized_delay: Duration,
}

/// Health checks after a switch or boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Units that must be active.
    pub units: Vec<String>,
    /// Commands that must exit 0.
    pub commands: Vec<String>,
    /// `host:port` the host must reach (server, caches).
    pub reach: Vec<String>,
    /// How long they may take to pass.
    pub timeout: Duration,
}

/// Time limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// One HTTP request (whole).
    pub http: Duration,
    /// Fetching a closure.
    pub realise: Duration,
    /// `switch-to-configuration`.
    pub activation: Duration,
    /// The magic rollback window.
    pub confirm: Duration,
    /// A short command (facts, state).
    pub command: Duration,
}

/// Metrics outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Textfile to write after every poll.
    pub textfile: Option<PathBuf>,
    /// Loopback address to serve on.
    pub listen: Option<SocketAddr>,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The host.
    pub host: HostName,
    /// `channel serve`'s base URL, if any (reports go there).
    pub server: Option<String>,
    /// Where the manifest is.
    pub manifest: ManifestLocation,
    /// Manifest signers.
    pub trusted_keys: Vec<PublicKey>,
    /// Binary caches.
    pub caches: Vec<StoreUri>,
    /// Narinfo signers.
    pub cache_keys: Vec<PublicKey>,
    /// The report token.
    pub token: Option<SecretSource>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Where Nix's binaries are.
    pub nix_bin_dir: Option<PathBuf>,
    /// Between polls.
    pub poll_interval: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Staleness threshold.
    pub stale_after: Duration,
    /// Heartbeat report interval.
    pub report_every: Duration,
    /// Reboots.
    pub reboot: RebootPolicy,
    /// Health checks.
    pub health: HealthPolicy,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Metrics.
    pub metrics: MetricsConfig,
}

fn http_url(setting: &'static str, url: &str) -> Result<String, ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid(setting, format!("{url:?} is not an http:// or https:// URL")))?;
    if rest.is_empty() || rest.contains(char::is_whitespace) || rest.split('/').next().is_some_and(|a| a.contains('@'))
    {
        return Err(invalid(setting, format!("{url:?}: give a plain URL (no spaces, no credentials)")));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// `host:port` of an `http(s)://` URL (default port 80/443).
#[must_use]
pub fn authority(url: &str) -> Option<String> {
    let (rest, port) = match url.split_once("://")? {
        ("https", r) => (r, 443),
        ("http", r) => (r, 80),
        _ => return None,
    };
    let auth = rest.split(['/', '?']).next()?;
    if auth.is_empty() {
        return None;
    }
    let has_port = match auth.rsplit_once(':') {
        Some((h, p)) => !h.ends_with(':') && p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')),
        None => false,
    };
    Some(if has_port { auth.to_owned() } else { format!("{auth}:{port}") })
}

fn keys(setting: &'static str, texts: &[String]) -> Result<Vec<PublicKey>, ConfigError> {
    texts
        .iter()
        .map(|t| {
            if t.starts_with('/') {
                PublicKey::from_file(Path::new(t)).map_err(|e| {
                    let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
                    invalid(setting, format!("{e}{cause}"))
                })
            } else {
                PublicKey::parse(t).map_err(|e| invalid(setting, format!("{e} (give `name:base64`, as in nix.conf)")))
            }
        })
        .collect()
}

fn this_host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty())
}

fn span(v: Option<Span>, default: Duration) -> Duration {
    v.map_or(default, |s| s.0)
}

impl AgentConfig {
    /// Merges the file and the flags and checks everything.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting and what to give.
    pub fn resolve(file: ConfigFile, flags: Flags) -> Result<AgentConfig, ConfigError> {
        let host_text = flags.host.or(file.host).or_else(this_host_name).ok_or_else(|| {
            invalid("host", "no host name: give `host = \"web1\"` (its manifest's host, networking.hostName)")
        })?;
        let host = HostName::parse(&host_text).map_err(|e| invalid("host", e.to_string()))?;
        let server = flags.server.or(file.server).map(|s| http_url("server", &s)).transpose()?;
        let manifest_text = flags.manifest.or(file.manifest);
        let manifest = match (&manifest_text, &server) {
            (Some(m), _) => {
                let m = m.replace("{host}", host.as_str());
                match m.strip_prefix("file://") {
                    Some(p) if p.starts_with('/') => ManifestLocation::File(PathBuf::from(p)),
                    Some(_) => return Err(invalid("manifest", format!("{m:?}: a file:// URL needs an absolute path"))),
                    None => ManifestLocation::Http(http_url("manifest", &m)?),
                }
            }
            (None, Some(s)) => ManifestLocation::Http(format!("{s}/v1/hosts/{}/manifest", host.as_str())),
            (None, None) => {
                return Err(invalid(
                    "server",
                    "no manifest source: give `server` (channel serve's URL) or `manifest` (an http(s):// or file:// URL)",
                ));
            }
        };
        let key_texts = if flags.trusted_keys.is_empty() { file.trusted_keys } else { flags.trusted_keys };
        let trusted_keys = keys("trusted_keys", &key_texts)?;
        if trusted_keys.is_empty() {
            return Err(invalid(
                "trusted_keys",
                "no trusted key: give the public key that signs the manifests (`name:base64`)",
            ));
        }
        let cache_texts = if flags.caches.is_empty() { file.caches } else { flags.caches };
        let caches = cache_texts
            .iter()
            .map(|c| StoreUri::parse(c).map_err(|e| invalid("caches", e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        if caches.is_empty() {
            return Err(invalid("caches", "no binary cache: give the cache the channel promotes into"));
        }
        if let Some(bad) = caches.iter().find(|c| !c.is_binary_cache()) {
            return Err(invalid("caches", format!("{bad} is not a binary cache (file://, http(s)://, s3://)")));
        }
        let cache_key_texts = if flags.cache_keys.is_empty() { file.cache_keys } else { flags.cache_keys };
        let cache_keys =
            if cache_key_texts.is_empty() { trusted_keys.clone() } else { keys("cache_keys", &cache_key_texts)? };
        let token = match (flags.token_file.or(file.token_file), file.token_credential) {
            (Some(_), Some(_)) => {
                return Err(invalid("token_file", "give token_file or token_credential, not both"));
            }
            (Some(f), None) => Some(SecretSource::File(f)),
            (None, Some(c)) => Some(SecretSource::Credential(c)),
            (None, None) => None,
        };
        let reboot = RebootPolicy {
            allow: flags.allow_reboot || file.reboot.allow.unwrap_or(false),
            window: file
                .reboot
                .window
                .map(|w| Window::parse(&w.lower, &w.upper).map_err(|e| invalid("reboot.window", e)))
                .transpose()?,
            randomized_delay: span(file.reboot.randomized_delay, Duration::ZERO),
        };
        let mut reach = Vec::new();
        if file.health.reach.unwrap_or(true) {
            let urls = server.iter().cloned().chain(match &manifest {
                ManifestLocation::Http(u) => Some(u.clone()),
                ManifestLocation::File(_) => None,
            });
            for a in urls.chain(caches.iter().map(|c| c.base().to_owned())).filter_map(|u| authority(&u)) {
                if !reach.contains(&a) {
                    reach.push(a);
                }
            }
        }
        let health = HealthPolicy {
            units: file.health.units,
            commands: file.health.commands,
            reach,
            timeout: span(file.health.timeout, Duration::from_secs(120)),
        };
        let timeouts = Timeouts {
            http: span(file.timeouts.http, Duration::from_secs(30)),
            realise: span(file.timeouts.realise, Duration::from_secs(3600)),
            activation: span(file.timeouts.activation, Duration::from_secs(600)),
            confirm: span(file.timeouts.confirm, Duration::from_secs(90)),
            command: Duration::from_secs(120),
        };
        let listen = file
            .metrics
            .listen
            .map(|l| {
                let addr: SocketAddr =
                    l.parse().map_err(|_| invalid("metrics.listen", format!("{l:?} is not ip:port")))?;
                if addr.ip().is_loopback() {
                    Ok(addr)
                } else {
                    Err(invalid("metrics.listen", format!("{addr} is not a loopback address (127.0.0.1 or ::1)")))
                }
            })
            .transpose()?;
        let poll_interval = flags.poll_interval.unwrap_or_else(|| span(file.poll_interval, Duration::from_secs(300)));
        if poll_interval < Duration::from_secs(1) {
            return Err(invalid("poll_interval", "at least 1 s"));
        }
        Ok(AgentConfig {
            host,
            server,
            manifest,
            trusted_keys,
            caches,
            cache_keys,
            token,
            state_dir: flags.state_dir.or(file.state_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            nix_bin_dir: file.nix_bin_dir,
            poll_interval,
            max_backoff: span(file.max_backoff, Duration::from_secs(3600)).max(poll_interval),
            stale_after: span(file.stale_after, Duration::from_secs(7 * 24 * 3600)),
            report_every: span(file.report_every, Duration::from_secs(3600)),
            reboot,
            health,
            timeouts,
            metrics: MetricsConfig { textfile: file.metrics.textfile, listen },
        })
    }

    /// The agent's own directory under the state directory.
    #[must_use]
    pub fn agent_dir(&self) -> PathBuf {
        self.state_dir.join("agent")
    }

    /// The report URL, when there is a server.
    #[must_use]
    pub fn report_url(&self) -> Option<String> {
        self.server.as_ref().map(|s| format!("{s}/v1/hosts/{}/report", self.host.as_str()))
    }
}

/// A valid configuration for unit tests (host `web1`, a server, one key, one cache).
#[cfg(test)]
#[must_use]
pub(crate) fn sample() -> AgentConfig {
    let text = "host = \"web1\"\nserver = \"http://f\"\ntrusted_keys = [\"k-1:fjYcuZjQVdZgKGeDy4UPE6TZkOtzYO0yGbMmrsf7aMc=\"]\ncaches = [\"http://c\"]\n";
    AgentConfig::resolve(ConfigFile::parse(text).expect("parses"), Flags::default()).expect("valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "cache.test-1:fjYcuZjQVdZgKGeDy4UPE6TZkOtzYO0yGbMmrsf7aMc=";

    fn file(text: &str) -> ConfigFile {
        ConfigFile::parse(text).expect("parses")
    }

    #[test]
    fn a_minimal_file_resolves_with_defaults() {
        let f = file(&format!(
            "host = \"web1\"\nserver = \"https://fleet.example.org/\"\ntrusted_keys = [\"{KEY}\"]\ncaches = [\"https://cache.example.org\"]\n"
        ));
        let c = AgentConfig::resolve(f, Flags::default()).expect("valid");
        assert_eq!(c.manifest, ManifestLocation::Http("https://fleet.example.org/v1/hosts/web1/manifest".into()));
        assert_eq!(c.report_url().as_deref(), Some("https://fleet.example.org/v1/hosts/web1/report"));
        assert_eq!(c.cache_keys, c.trusted_keys, "the cache keys default to the trusted keys");
        assert_eq!(c.health.reach, ["fleet.example.org:443", "cache.example.org:443"]);
        assert_eq!(
            (c.poll_interval, c.reboot.allow, c.reboot.window.is_none()),
            (Duration::from_secs(300), false, true)
        );
    }

    #[test]
    fn json_from_the_nixos_module_and_flags_that_win() {
        let f = file(&format!(
            r#"{{"host":"web1","manifest":"file:///srv/m/{{host}}.json","trusted_keys":["{KEY}"],"caches":["http://10.0.0.1:8080"],
                "poll_interval":60,"reboot":{{"allow":false,"window":{{"lower":"01:00","upper":"05:00"}},"randomized_delay":"10m"}},
                "health":{{"reach":true}}}}"#
        ));
        let flags = Flags { host: Some("web2".into()), allow_reboot: true, ..Flags::default() };
        let c = AgentConfig::resolve(f, flags).expect("valid");
        assert_eq!(
            c.manifest,
            ManifestLocation::File(PathBuf::from("/srv/m/web2.json")),
            "flags win, {{host}} replaced"
        );
        assert!(c.reboot.allow && c.reboot.window.is_some());
        assert_eq!(c.reboot.randomized_delay, Duration::from_secs(600));
        assert_eq!(c.poll_interval, Duration::from_secs(60));
        assert_eq!(c.health.reach, ["10.0.0.1:8080"], "a file manifest is not probed");
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |text: &str| match AgentConfig::resolve(file(text), Flags::default()) {
            Err(ConfigError::Invalid { setting, problem }) => format!("{setting}: {problem}"),
            other => panic!("expected an invalid setting, got {other:?}"),
        };
        let base = format!("host = \"web1\"\nserver = \"https://f.example\"\ntrusted_keys = [\"{KEY}\"]\n");
        assert!(err(&base).starts_with("caches:"), "{}", err(&base));
        let with_cache = format!("{base}caches = [\"https://c.example\"]\n");
        assert!(err(&with_cache.replace("web1", "../x")).starts_with("host:"));
        assert!(err(&with_cache.replace("https://f.example", "ftp://f")).starts_with("server:"));
        assert!(err(&with_cache.replace(KEY, "nope")).starts_with("trusted_keys:"));
        assert!(
            err(&format!("{with_cache}[reboot]\nwindow = {{ lower = \"1am\", upper = \"05:00\" }}\n"))
                .starts_with("reboot.window:")
        );
        assert!(err(&format!("{with_cache}[metrics]\nlisten = \"0.0.0.0:9\"\n")).starts_with("metrics.listen:"));
        assert!(
            err(&format!("host = \"web1\"\ntrusted_keys = [\"{KEY}\"]\ncaches = [\"https://c\"]\n"))
                .starts_with("server:")
        );
        assert!(ConfigFile::parse("nonsense = 1\n").is_err(), "unknown settings are refused");
        assert!(ConfigFile::parse("poll_interval = \"soon\"\n").is_err());
    }

    #[test]
    fn authorities_of_urls() {
        assert_eq!(authority("https://a.example/x").as_deref(), Some("a.example:443"));
        assert_eq!(authority("http://10.0.0.1:8080").as_deref(), Some("10.0.0.1:8080"));
        assert_eq!(authority("http://[fd00::1]/c").as_deref(), Some("[fd00::1]:80"));
        assert_eq!(authority("http://[fd00::1]:81").as_deref(), Some("[fd00::1]:81"));
        assert_eq!(authority("file:///x"), None);
    }
}
