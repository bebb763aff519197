//! Evaluate and build the selected hosts' systems once, on this machine:
//! one `nix eval` for every host's `drvPath`, one `nix build` for all of
//! them (Nix builds in parallel and shares what the hosts have in common).
//! Only when that fails are hosts built one by one (at most
//! `max_parallel` at a time) to find out which ones are broken, so one
//! broken host does not stop the others.
//!
//! The toplevel (`config.system.build.toplevel`) is built, never deploy-rs's
//! activatable wrapper: fleetgate activates with the system's own
//! `bin/switch-to-configuration`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use fleetgate_nix::Nix;

use crate::error::DeployError;

/// Built systems, and hosts whose build failed (with nix's message).
#[derive(Debug, Default)]
pub struct Built {
    /// Host → store path of its toplevel.
    pub systems: BTreeMap<String, String>,
    /// Host → why it could not be built.
    pub failed: BTreeMap<String, String>,
}

fn toplevel(flake: &str, host: &str) -> String {
    format!("{flake}#nixosConfigurations.\"{host}\".config.system.build.toplevel")
}

/// Builds the systems of `hosts`.
///
/// # Errors
/// [`DeployError::Eval`] when the flake cannot be evaluated at all.
pub fn build(nix: &Nix, flake: &str, hosts: &[String], max_parallel: usize) -> Result<Built, DeployError> {
    let list = hosts.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(" ");
    let apply = format!(
        "cs: builtins.listToAttrs (map (n: {{ name = n; value = let r = builtins.tryEval cs.${{n}}.config.system.build.toplevel.drvPath; in if r.success then r.value else null; }}) [ {list} ])"
    );
    let installable = format!("{flake}#nixosConfigurations");
    let value = nix.eval_json(&installable, Some(&apply)).map_err(|source| DeployError::Eval {
        what: "the hosts' system derivations".to_owned(),
        installable: installable.clone(),
        source,
    })?;
    let drvs: BTreeMap<String, Option<String>> = serde_json::from_value(value)
        .map_err(|e| DeployError::NixOutput { what: "nix eval".to_owned(), message: e.to_string() })?;
    let mut built = Built::default();
    let mut todo = Vec::new();
    for host in hosts {
        match drvs.get(host).cloned().flatten() {
            Some(drv) => todo.push((host.clone(), drv)),
            None => {
                built.failed.insert(
                    host.clone(),
                    format!(
                        "its system does not evaluate; run `nix --extra-experimental-features 'nix-command flakes' eval {}.drvPath` to see why",
                        toplevel(flake, host)
                    ),
                );
            }
        }
    }
    if todo.is_empty() {
        return Ok(built);
    }
    let installables: Vec<String> = todo.iter().map(|(h, _)| toplevel(flake, h)).collect();
    match nix.build(&installables) {
        Ok(results) => {
            for (host, drv) in &todo {
                match results.iter().find(|r| &r.drv_path == drv).and_then(|r| r.outputs.get("out")) {
                    Some(out) => {
                        built.systems.insert(host.clone(), out.clone());
                    }
                    None => {
                        built.failed.insert(host.clone(), "`nix build --json` did not report its output".to_owned());
                    }
                }
            }
        }
        Err(_) => one_by_one(nix, flake, &todo, max_parallel.max(1), &mut built),
    }
    Ok(built)
}

fn one_by_one(nix: &Nix, flake: &str, todo: &[(String, String)], parallel: usize, built: &mut Built) {
    let queue = Mutex::new(todo.iter());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..parallel.min(todo.len()) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next();
                    let Some((host, _)) = next else { break };
                    let result = nix.build(&[toplevel(flake, host)]).map_err(|e| e.to_string()).and_then(|r| {
                        r.first()
                            .and_then(|r| r.outputs.get("out").cloned())
                            .ok_or_else(|| "`nix build --json` reported no output".to_owned())
                    });
                    results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((host.clone(), result));
                }
            });
        }
    });
    for (host, result) in results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
        match result {
            Ok(path) => {
                built.systems.insert(host, path);
            }
            Err(e) => {
                built.failed.insert(host, format!("its system does not build: {e}"));
            }
        }
    }
}
