//! Which hosts a run deploys: `FLAKE#HOST` arguments, `--on` tags and globs.

use crate::error::DeployError;
use crate::inventory::Inventory;

/// Splits `FLAKE[#HOST[,HOST…]]` arguments into one flake and host names.
/// No argument means `.` and every host.
///
/// # Errors
/// [`DeployError::Usage`] when the arguments name different flakes.
pub fn parse_targets(targets: &[String]) -> Result<(String, Vec<String>), DeployError> {
    let mut flake: Option<String> = None;
    let mut hosts = Vec::new();
    for target in targets {
        let (f, h) = match target.split_once('#') {
            Some((f, h)) => (if f.is_empty() { "." } else { f }, Some(h)),
            None => (target.as_str(), None),
        };
        match &flake {
            Some(existing) if existing != f => {
                return Err(DeployError::Usage(format!(
                    "all targets must name the same flake ({existing} and {f}); run one deploy per flake"
                )));
            }
            _ => flake = Some(f.to_owned()),
        }
        if let Some(h) = h {
            hosts.extend(h.split(',').filter(|s| !s.is_empty()).map(str::to_owned));
        }
    }
    Ok((flake.unwrap_or_else(|| ".".to_owned()), hosts))
}

/// `*` and `?` glob matching.
#[must_use]
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// The selected host names, in inventory order: the named hosts (or all),
/// then only those matching one of `on` (`@tag` or a name glob).
///
/// # Errors
/// [`DeployError::UnknownHost`], [`DeployError::NothingSelected`].
pub fn select(inventory: &Inventory, named: &[String], on: &[String]) -> Result<Vec<String>, DeployError> {
    for name in named {
        if !inventory.hosts.contains_key(name) {
            return Err(DeployError::UnknownHost {
                host: name.clone(),
                known: inventory.hosts.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
    }
    let selected: Vec<String> = inventory
        .hosts
        .values()
        .filter(|h| named.is_empty() || named.contains(&h.name))
        .filter(|h| {
            on.is_empty()
                || on.iter().flat_map(|o| o.split(',')).any(|o| match o.strip_prefix('@') {
                    Some(tag) => h.tags.iter().any(|t| glob_match(tag, t)),
                    None => glob_match(o, &h.name),
                })
        })
        .map(|h| h.name.clone())
        .collect();
    if selected.is_empty() {
        let mut what: Vec<String> = named.to_vec();
        what.extend(on.iter().cloned());
        return Err(DeployError::NothingSelected(what.join(" ")));
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::FileConfig;

    #[test]
    fn targets_and_selection() {
        assert_eq!(parse_targets(&[]).expect("ok"), (".".to_owned(), vec![]));
        assert_eq!(
            parse_targets(&["./fleet#web1,db1".into(), "./fleet#cache1".into()]).expect("ok"),
            ("./fleet".to_owned(), vec!["web1".into(), "db1".into(), "cache1".into()])
        );
        assert!(parse_targets(&["a#x".into(), "b#y".into()]).is_err());
        assert!(glob_match("web*", "web12") && glob_match("w?b1", "web1") && !glob_match("db*", "web1"));

        let config = FileConfig::parse(
            "[hosts.web1]\ntags = [\"web\"]\n[hosts.web2]\ntags = [\"web\", \"eu\"]\n",
            std::path::Path::new("f"),
        )
        .expect("valid");
        let names: Vec<String> = ["web1", "web2", "db1"].map(str::to_owned).to_vec();
        let inv = Inventory::assemble(".", &names, &BTreeMap::new(), config, None).expect("ok");
        assert_eq!(select(&inv, &[], &[]).expect("all"), ["db1", "web1", "web2"]);
        assert_eq!(select(&inv, &[], &["@eu".into()]).expect("tag"), ["web2"]);
        assert_eq!(select(&inv, &[], &["db*,@eu".into()]).expect("either"), ["db1", "web2"]);
        assert!(matches!(select(&inv, &["nope".into()], &[]), Err(DeployError::UnknownHost { .. })));
        assert!(matches!(select(&inv, &[], &["@none".into()]), Err(DeployError::NothingSelected(_))));
    }
}
