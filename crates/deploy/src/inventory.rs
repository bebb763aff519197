//! Which hosts exist and how to reach them: the flake's
//! `nixosConfigurations`, connection data from deploy-rs's `deploy.nodes`
//! schema (so deploy-rs users change nothing), and `fleetgate.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fleetgate_nix::Nix;
use fleetgate_transport::SshTarget;
use serde::Deserialize;

use crate::config::{FileConfig, HealthSettings};
use crate::error::DeployError;

/// One host to deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Its name in `nixosConfigurations`.
    pub name: String,
    /// Where ssh connects (`hostname` of deploy-rs or fleetgate.toml).
    pub hostname: String,
    /// Login user.
    pub ssh_user: Option<String>,
    /// Port.
    pub ssh_port: Option<u16>,
    /// Extra ssh options.
    pub ssh_opts: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Power-cycle command, if any.
    pub power_cycle: Option<String>,
    /// Health checks.
    pub health: HealthSettings,
}

impl Host {
    /// The ssh target, checked ([`SshTarget::from_parts`]).
    ///
    /// # Errors
    /// A host name or user `ssh` would misread (`-oProxyCommand=…`).
    pub fn ssh_target(&self) -> Result<SshTarget, fleetgate_transport::TransportError> {
        SshTarget::from_parts(self.ssh_user.as_deref(), &self.hostname, self.ssh_port)
    }

    /// `{host}` and `{hostname}` replaced in `template`.
    #[must_use]
    pub fn expand(&self, template: &str) -> String {
        template.replace("{hostname}", &self.hostname).replace("{host}", &self.name)
    }
}

/// The flake, its hosts, and the file config.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// The flake reference, as given to nix.
    pub flake: String,
    /// Every host the flake defines, by name.
    pub hosts: BTreeMap<String, Host>,
    /// `fleetgate.toml` (empty if there is none).
    pub config: FileConfig,
    /// Where `fleetgate.toml` was read from.
    pub config_path: Option<PathBuf>,
}

/// A `deploy.nodes.<name>` entry, the fields fleetgate uses.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeployNode {
    /// `hostname`.
    pub hostname: Option<String>,
    /// `sshUser`.
    pub ssh_user: Option<String>,
    /// `sshOpts`.
    #[serde(default)]
    pub ssh_opts: Vec<String>,
}

/// A flake reference split into its local path and the rest: `(scheme
/// prefix, path, query)` for `.`, `/x`, `./x`, `path:…`, `file://…`,
/// `git+file://…` (with `?ref=`, `?rev=`, `?dir=` …); `None` for remote ones.
fn local_parts(flake: &str) -> Option<(&str, &str, &str)> {
    let (before_query, query) = match flake.split_once('?') {
        Some((b, q)) => (b, q),
        None => (flake, ""),
    };
    let schemes = ["git+file://", "git+file:", "path://", "path:", "file://", "file:"];
    let (scheme, path) = match schemes.iter().find(|s| before_query.starts_with(**s)) {
        Some(s) => (*s, &before_query[s.len()..]),
        None if before_query.contains(':') => return None,
        None => ("", before_query),
    };
    let path = path.strip_prefix("localhost").filter(|p| p.starts_with('/')).unwrap_or(path);
    Some((scheme, path, query))
}

/// The local directory of a flake reference, if it has one (`.`, `/x`,
/// `path:/x`, `git+file:///x?ref=main&dir=sub`, `file:///x`), to look for
/// `fleetgate.toml` in (beside the flake's `flake.nix`, `?dir=` included).
#[must_use]
pub fn local_dir(flake: &str) -> Option<PathBuf> {
    let (_, path, query) = local_parts(flake)?;
    let mut dir = PathBuf::from(if path.is_empty() { "." } else { path });
    if let Some(sub) = query.split('&').find_map(|kv| kv.strip_prefix("dir=")) {
        dir.push(sub);
    }
    dir.join("flake.nix").is_file().then_some(dir)
}

/// The flake reference with a relative local path made absolute (scheme and
/// query kept), so that a run recorded in history can be resumed from
/// anywhere. Remote references are returned as they are.
#[must_use]
pub fn resolve_flake_ref(flake: &str) -> String {
    let Some((scheme, path, query)) = local_parts(flake) else { return flake.to_owned() };
    if path.starts_with('/') {
        return flake.to_owned();
    }
    let Ok(abs) = std::fs::canonicalize(if path.is_empty() { "." } else { path }) else {
        return flake.to_owned();
    };
    let scheme = match scheme {
        "git+file:" => "git+file://",
        "file:" => "file://",
        s => s,
    };
    let mut out = format!("{scheme}{}", abs.display());
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

const DEPLOY_NODES_APPLY: &str = "d: builtins.mapAttrs (n: v: { hostname = v.hostname or null; sshUser = v.sshUser or null; sshOpts = v.sshOpts or []; }) (d.nodes or {})";

/// `fleetgate.toml` for a flake: `config_file` when given, else the one
/// beside the flake's `flake.nix` (local flakes only), else the defaults.
/// Needs no Nix, so a bad file or value is reported before any evaluation.
///
/// # Errors
/// [`DeployError::ReadConfig`] / [`DeployError::Config`].
pub fn locate_config(flake: &str, config_file: Option<&Path>) -> Result<(FileConfig, Option<PathBuf>), DeployError> {
    match config_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| DeployError::ReadConfig { path: path.to_owned(), source })?;
            Ok((FileConfig::parse(&text, path)?, Some(path.to_owned())))
        }
        None => match local_dir(flake) {
            Some(dir) => FileConfig::load_beside(&dir),
            None => Ok((FileConfig::default(), None)),
        },
    }
}

impl Inventory {
    /// Evaluates the flake's host names and deploy-rs nodes (two small
    /// evaluations that build nothing) and reads `fleetgate.toml`.
    ///
    /// # Errors
    /// [`DeployError::Eval`] when the flake has no `nixosConfigurations`,
    /// [`DeployError::Config`] for a bad `fleetgate.toml`.
    pub fn load(nix: &Nix, flake: &str, config_file: Option<&Path>) -> Result<Inventory, DeployError> {
        let (config, config_path) = locate_config(flake, config_file)?;
        Inventory::load_with_config(nix, flake, config, config_path)
    }

    /// As [`Inventory::load`], with `fleetgate.toml` already read (by
    /// [`locate_config`]), so that options can be merged and validated
    /// before the flake is evaluated.
    ///
    /// # Errors
    /// As [`Inventory::load`].
    pub fn load_with_config(
        nix: &Nix,
        flake: &str,
        config: FileConfig,
        config_path: Option<PathBuf>,
    ) -> Result<Inventory, DeployError> {
        let installable = format!("{flake}#nixosConfigurations");
        let names = nix.eval_json(&installable, Some("builtins.attrNames")).map_err(|source| DeployError::Eval {
            what: "the flake's nixosConfigurations".to_owned(),
            installable: installable.clone(),
            source,
        })?;
        let names: Vec<String> = serde_json::from_value(names)
            .map_err(|e| DeployError::NixOutput { what: installable.clone(), message: e.to_string() })?;
        // A flake without `deploy` is fine: no deploy-rs data.
        let nodes: BTreeMap<String, DeployNode> = nix
            .eval_json(&format!("{flake}#deploy"), Some(DEPLOY_NODES_APPLY))
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        Inventory::assemble(flake, &names, &nodes, config, config_path)
    }

    /// Puts the pieces together (no nix involved).
    ///
    /// # Errors
    /// [`DeployError::Config`] when `fleetgate.toml` names a host the flake
    /// does not define.
    pub fn assemble(
        flake: &str,
        names: &[String],
        nodes: &BTreeMap<String, DeployNode>,
        config: FileConfig,
        config_path: Option<PathBuf>,
    ) -> Result<Inventory, DeployError> {
        if let Some(unknown) = config.hosts.keys().find(|h| !names.contains(h)) {
            return Err(DeployError::Config {
                path: config_path.clone().unwrap_or_else(|| PathBuf::from(crate::config::FILE_NAME)),
                message: format!("[hosts.{unknown}]: the flake has no nixosConfigurations.{unknown}"),
            });
        }
        let hosts = names
            .iter()
            .map(|name| {
                let settings = config.host(name);
                let node = nodes.get(name).cloned().unwrap_or_default();
                let host = Host {
                    name: name.clone(),
                    hostname: settings.hostname.or(node.hostname).unwrap_or_else(|| name.clone()),
                    ssh_user: settings.ssh_user.or(node.ssh_user),
                    ssh_port: settings.ssh_port,
                    ssh_opts: settings.ssh_opts.unwrap_or(node.ssh_opts),
                    tags: settings.tags,
                    power_cycle: settings.power_cycle,
                    health: settings.health,
                };
                host.ssh_target().map_err(|e| DeployError::Config {
                    path: config_path.clone().unwrap_or_else(|| PathBuf::from("flake.nix (deploy.nodes)")),
                    message: format!("host {name}: {e}"),
                })?;
                Ok((name.clone(), host))
            })
            .collect::<Result<_, DeployError>>()?;
        Ok(Inventory { flake: flake.to_owned(), hosts, config, config_path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_rs_nodes_give_connection_data_and_the_file_wins() {
        let names = vec!["web1".to_owned(), "db1".to_owned()];
        let nodes = BTreeMap::from([(
            "web1".to_owned(),
            DeployNode {
                hostname: Some("10.0.0.1".into()),
                ssh_user: Some("root".into()),
                ssh_opts: vec!["-p".into(), "2222".into()],
            },
        )]);
        let config = FileConfig::parse("[hosts.db1]\nhostname = \"db.example\"\ntags = [\"db\"]\n", Path::new("f"))
            .expect("valid");
        let inv = Inventory::assemble(".", &names, &nodes, config, None).expect("valid");
        let web1 = &inv.hosts["web1"];
        assert_eq!(web1.ssh_target().expect("valid").to_string(), "ssh://root@10.0.0.1");
        assert_eq!(web1.ssh_opts, ["-p", "2222"]);
        let db1 = &inv.hosts["db1"];
        assert_eq!((db1.hostname.as_str(), db1.tags.as_slice()), ("db.example", ["db".to_owned()].as_slice()));
    }

    #[test]
    fn a_config_for_an_unknown_host_is_an_error() {
        let config = FileConfig::parse("[hosts.nope]\n", Path::new("f")).expect("valid");
        let err = Inventory::assemble(".", &["a".into()], &BTreeMap::new(), config, None).expect_err("unknown");
        assert!(err.to_string().contains("nixosConfigurations.nope"), "{err}");
    }

    #[test]
    fn local_flake_directories() {
        assert_eq!(local_dir("github:owner/repo"), None);
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("flake.nix"), "{}").expect("write");
        let d = dir.path().display();
        assert_eq!(local_dir(&format!("path:{d}")), Some(dir.path().to_owned()));
        assert_eq!(local_dir(&format!("{d}")), Some(dir.path().to_owned()));
        // Issue 8: every git+file form finds the file (it was silently ignored).
        for form in [
            format!("git+file://{d}?ref=main"),
            format!("git+file:{d}?ref=main&rev=0123"),
            format!("git+file://localhost{d}"),
            format!("file://{d}"),
            format!("path:{d}?narHash=sha256-x"),
        ] {
            assert_eq!(local_dir(&form), Some(dir.path().to_owned()), "{form}");
        }
        std::fs::create_dir_all(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/flake.nix"), "{}").expect("write");
        assert_eq!(local_dir(&format!("git+file://{d}?dir=sub&ref=main")), Some(dir.path().join("sub")));
        assert_eq!(local_dir(&format!("git+file://{d}?dir=none")), None);
    }

    #[test]
    fn flake_references_are_resolved_for_history() {
        let cwd = std::env::current_dir().expect("cwd");
        let c = cwd.display();
        assert_eq!(resolve_flake_ref("."), format!("{c}"));
        assert_eq!(resolve_flake_ref("path:."), format!("path:{c}"));
        assert_eq!(resolve_flake_ref("git+file:.?ref=main"), format!("git+file://{c}?ref=main"));
        assert_eq!(resolve_flake_ref("github:owner/repo"), "github:owner/repo");
        assert_eq!(resolve_flake_ref("/abs/fleet?dir=x"), "/abs/fleet?dir=x");
    }
}
