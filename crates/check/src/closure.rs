//! Closure diff, as nvd shows it: packages added, removed, and whose
//! versions changed, and the closure size delta. Needs both systems in the
//! local store (`nix-store -q --requisites`, `nix path-info -S`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use fleetgate_facts::{Finding, Severity};
use fleetgate_nix::Nix;
use serde::{Deserialize, Serialize};

use crate::CheckError;

/// A package whose versions differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionChange {
    /// Package name (`systemd`).
    pub name: String,
    /// Versions in the current closure.
    pub old: Vec<String>,
    /// Versions in the new closure.
    pub new: Vec<String>,
}

/// What changes between two closures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosureDiff {
    /// Packages only in the new closure (`name-version`).
    pub added: Vec<String>,
    /// Packages only in the current closure.
    pub removed: Vec<String>,
    /// Packages in both with different versions.
    pub changed: Vec<VersionChange>,
    /// Closure size of the current system, bytes.
    pub old_size: Option<u64>,
    /// Closure size of the new system, bytes.
    pub new_size: Option<u64>,
}

impl ClosureDiff {
    /// New minus old closure size, bytes.
    #[must_use]
    pub fn size_delta(&self) -> Option<i128> {
        Some(i128::from(self.new_size?) - i128::from(self.old_size?))
    }

    /// An info finding summarising the diff.
    #[must_use]
    pub fn finding(&self) -> Finding {
        let delta = self.size_delta().map_or_else(String::new, |d| format!(", closure size {}", signed_size(d)));
        let mut evidence = Vec::new();
        for c in &self.changed {
            evidence.push(format!("[U] {}: {} -> {}", c.name, c.old.join(", "), c.new.join(", ")));
        }
        evidence.extend(self.added.iter().map(|a| format!("[A] {a}")));
        evidence.extend(self.removed.iter().map(|r| format!("[R] {r}")));
        Finding::new(
            "closure.diff",
            Severity::Info,
            format!(
                "{} changed, {} added, {} removed{delta}",
                self.changed.len(),
                self.added.len(),
                self.removed.len()
            ),
        )
        .with_evidence(evidence)
    }
}

/// The info finding for a closure diff that could not be made: why.
#[must_use]
pub fn unavailable(error: &CheckError) -> Finding {
    Finding::new(
        "closure.unavailable",
        Severity::Info,
        format!("no closure diff: {}", crate::error::one_line(&crate::error_chain(error))),
    )
    .with_fix("build or copy both systems into this machine's store to see what changes (or pass --no-closure-diff)")
}

/// `-1.5 MiB`, `+12 KiB`.
#[must_use]
pub fn signed_size(bytes: i128) -> String {
    let sign = if bytes < 0 { "-" } else { "+" };
    let b = bytes.unsigned_abs();
    #[allow(clippy::cast_precision_loss)]
    let f = b as f64;
    if b >= 1 << 30 {
        format!("{sign}{:.1} GiB", f / f64::from(1u32 << 30))
    } else if b >= 1 << 20 {
        format!("{sign}{:.1} MiB", f / f64::from(1u32 << 20))
    } else if b >= 1 << 10 {
        format!("{sign}{:.1} KiB", f / 1024.0)
    } else {
        format!("{sign}{b} B")
    }
}

/// Splits a store path's name into name and version the way
/// `builtins.parseDrvName` does: the version starts at the first `-`
/// followed by a character that is not a letter.
#[must_use]
pub fn parse_name(name: &str) -> (String, String) {
    let bytes = name.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'-' && bytes.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic()) {
            return (name[..i].to_owned(), name[i + 1..].to_owned());
        }
    }
    (name.to_owned(), String::new())
}

fn store_name(path: &str) -> Option<&str> {
    let base = path.rsplit('/').next()?;
    let (hash, name) = base.split_once('-')?;
    (hash.len() == 32).then_some(name)
}

/// Diffs two lists of store paths.
#[must_use]
pub fn diff_paths(old: &[String], new: &[String]) -> ClosureDiff {
    let group = |paths: &[String]| {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in paths {
            if let Some(name) = store_name(p) {
                let (pname, version) = parse_name(name);
                m.entry(pname).or_default().insert(version);
            }
        }
        m
    };
    let (o, n) = (group(old), group(new));
    let label = |name: &str, versions: &BTreeSet<String>| {
        let v: Vec<&str> = versions.iter().filter(|v| !v.is_empty()).map(String::as_str).collect();
        if v.is_empty() { name.to_owned() } else { format!("{name}-{}", v.join(",")) }
    };
    ClosureDiff {
        added: n.iter().filter(|(k, _)| !o.contains_key(*k)).map(|(k, v)| label(k, v)).collect(),
        removed: o.iter().filter(|(k, _)| !n.contains_key(*k)).map(|(k, v)| label(k, v)).collect(),
        changed: n
            .iter()
            .filter_map(|(k, nv)| {
                let ov = o.get(k)?;
                (ov != nv).then(|| VersionChange {
                    name: k.clone(),
                    old: ov.iter().cloned().collect(),
                    new: nv.iter().cloned().collect(),
                })
            })
            .collect(),
        old_size: None,
        new_size: None,
    }
}

/// Diffs the closures of two store paths in the local store.
///
/// # Errors
/// [`CheckError::NixUnavailable`] when Nix is missing,
/// [`CheckError::Closure`] when a path is not in the local store.
pub fn diff(old: &Path, new: &Path) -> Result<ClosureDiff, CheckError> {
    let nix =
        Nix::detect().map_err(|source| CheckError::NixUnavailable { source })?.with_timeout(Duration::from_secs(120));
    let requisites = |p: &Path| -> Result<Vec<String>, CheckError> {
        let out = nix
            .legacy("nix-store")
            .args(["-q", "--requisites"])
            .arg(p)
            .run()
            .map_err(|source| CheckError::Closure { path: p.display().to_string(), source: source.into() })?;
        Ok(out.stdout_text().lines().map(str::to_owned).collect())
    };
    let old_paths = requisites(old)?;
    let new_paths = requisites(new)?;
    let mut d = diff_paths(&old_paths, &new_paths);
    let paths = [old.display().to_string(), new.display().to_string()];
    if let Ok((infos, _)) = nix.path_info(None, &paths, false, true) {
        for info in infos {
            if info.path == paths[0] {
                d.old_size = info.closure_size;
            }
            if info.path == paths[1] {
                d.new_size = info.closure_size;
            }
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_like_parse_drv_name() {
        assert_eq!(parse_name("systemd-254.6"), ("systemd".into(), "254.6".into()));
        assert_eq!(parse_name("linux-6.1.0-56-amd64"), ("linux".into(), "6.1.0-56-amd64".into()));
        assert_eq!(parse_name("nixos-system-web1-25.05"), ("nixos-system-web1".into(), "25.05".into()));
        assert_eq!(parse_name("etc"), ("etc".into(), String::new()));
    }

    #[test]
    fn diffs_like_nvd() {
        let p = |n: &str| format!("/nix/store/{}-{n}", "a".repeat(32));
        let old = vec![p("systemd-254.6"), p("etc"), p("firmware-1")];
        let new = vec![p("systemd-255.1"), p("etc"), p("sops-3.8")];
        let d = diff_paths(&old, &new);
        assert_eq!(d.added, ["sops-3.8"]);
        assert_eq!(d.removed, ["firmware-1"]);
        assert_eq!(
            d.changed,
            [VersionChange { name: "systemd".into(), old: vec!["254.6".into()], new: vec!["255.1".into()] }]
        );
        assert_eq!(signed_size(-1536), "-1.5 KiB");
        assert_eq!(signed_size(3 << 20), "+3.0 MiB");
    }
}
