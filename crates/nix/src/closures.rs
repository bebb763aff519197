//! [`Closures`]: the path infos of several closures, read once (one `nix
//! path-info --recursive` for a whole fleet's systems, issue 15) and then
//! walked per root, so a deploy does not start a `nix path-info` per host.

use std::collections::{BTreeMap, BTreeSet};

use crate::path_info::PathInfo;

/// Path infos by store path, with their references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closures {
    infos: BTreeMap<String, PathInfo>,
}

impl Closures {
    /// From what `nix path-info --json --recursive` printed.
    #[must_use]
    pub fn new(infos: Vec<PathInfo>) -> Closures {
        Closures { infos: infos.into_iter().map(|i| (i.path.clone(), i)).collect() }
    }

    /// How many paths are known.
    #[must_use]
    pub fn len(&self) -> usize {
        self.infos.len()
    }

    /// Whether no path is known.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.infos.is_empty()
    }

    /// The closure of `roots` (each path once, sorted by path); `None` when
    /// a root or any path it references is not known here — then ask Nix.
    #[must_use]
    pub fn closure(&self, roots: &[String]) -> Option<Vec<PathInfo>> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = roots.iter().map(String::as_str).collect();
        while let Some(p) = todo.pop() {
            if !seen.insert(p) {
                continue;
            }
            let info = self.infos.get(p)?;
            todo.extend(info.references.iter().map(String::as_str).filter(|r| !seen.contains(r)));
        }
        Some(seen.into_iter().filter_map(|p| self.infos.get(p).cloned()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(path: &str, refs: &[&str]) -> PathInfo {
        PathInfo {
            path: path.to_owned(),
            nar_hash: String::new(),
            nar_size: 1,
            references: refs.iter().map(|r| (*r).to_owned()).collect(),
            closure_size: None,
            signatures: Vec::new(),
            deriver: None,
            url: None,
        }
    }

    #[test]
    fn closures_are_walked_per_root_and_unknown_paths_say_so() {
        let c = Closures::new(vec![
            info("/a", &["/a", "/lib"]),
            info("/b", &["/lib", "/b2"]),
            info("/b2", &[]),
            info("/lib", &["/lib"]),
            info("/broken", &["/gone"]),
        ]);
        let paths = |v: Option<Vec<PathInfo>>| v.map(|v| v.into_iter().map(|i| i.path).collect::<Vec<_>>());
        assert_eq!(paths(c.closure(&["/a".into()])), Some(vec!["/a".into(), "/lib".into()]));
        assert_eq!(paths(c.closure(&["/b".into()])), Some(vec!["/b".into(), "/b2".into(), "/lib".into()]));
        assert_eq!(paths(c.closure(&["/broken".into()])), None);
        assert_eq!(paths(c.closure(&["/nowhere".into()])), None);
    }
}
