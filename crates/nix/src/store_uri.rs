//! Store URIs (`file:///srv/cache`, `http://127.0.0.1:8080`, `s3://bucket?region=…`,
//! `ssh://root@host`, `ssh-ng://…`, `local`, `daemon`) and their query parameters.
use std::fmt;
use std::path::PathBuf;

use crate::error::NixError;

/// A Nix store URI split into its base and `key=value` parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUri {
    base: String,
    params: Vec<(String, String)>,
}

impl StoreUri {
    /// Parses a store URI. Rejects empty strings, whitespace, and anything that starts
    /// with `-` (it would be read as an option by `nix`).
    pub fn parse(uri: &str) -> Result<Self, NixError> {
        let bad = |m: &str| NixError::StoreUri { uri: uri.to_owned(), message: m.to_owned() };
        if uri.is_empty() {
            return Err(bad("empty"));
        }
        if uri.starts_with('-') {
            return Err(bad("must not start with `-`"));
        }
        if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let (base, query) = match uri.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (uri, None),
        };
        let mut params = Vec::new();
        for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| bad("parameter without `=`"))?;
            params.push((k.to_owned(), v.to_owned()));
        }
        Ok(Self { base: base.to_owned(), params })
    }

    /// The scheme (`file`, `http`, `s3`, `ssh`, …); `local`/`daemon`/`auto` for those words.
    pub fn scheme(&self) -> &str {
        self.base.split_once("://").map_or(self.base.as_str(), |(s, _)| s)
    }

    /// True for binary-cache stores, where `nix copy` signs with `secret-key=`.
    pub fn is_binary_cache(&self) -> bool {
        matches!(self.scheme(), "file" | "http" | "https" | "s3")
    }

    /// For `file://` stores, the directory.
    pub fn file_path(&self) -> Option<PathBuf> {
        self.base.strip_prefix("file://").map(PathBuf::from)
    }

    /// The value of a parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Sets (or replaces) a parameter.
    pub fn with_param(mut self, key: &str, value: &str) -> Self {
        self.params.retain(|(k, _)| k != key);
        self.params.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The URI without parameters (what a human wants to see in a manifest or log;
    /// parameters may name key files).
    pub fn base(&self) -> &str {
        &self.base
    }
}

impl fmt::Display for StoreUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)?;
        for (i, (k, v)) in self.params.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_round_trip_and_replace() {
        let u = StoreUri::parse("s3://cache?region=eu-west-1&compression=zstd").unwrap();
        assert_eq!(u.scheme(), "s3");
        assert!(u.is_binary_cache());
        assert_eq!(u.param("region"), Some("eu-west-1"));
        let u = u.with_param("compression", "none").with_param("secret-key", "/k");
        assert_eq!(u.to_string(), "s3://cache?region=eu-west-1&compression=none&secret-key=/k");
        assert_eq!(u.base(), "s3://cache");
    }

    #[test]
    fn kinds_of_store() {
        let f = StoreUri::parse("file:///srv/cache").unwrap();
        assert_eq!(f.file_path(), Some(PathBuf::from("/srv/cache")));
        assert!(!StoreUri::parse("ssh://root@host").unwrap().is_binary_cache());
        assert_eq!(StoreUri::parse("daemon").unwrap().scheme(), "daemon");
    }

    #[test]
    fn injection_is_refused() {
        for bad in ["", "--store", "-x", "file:///a b", "file:///a\n"] {
            assert!(StoreUri::parse(bad).is_err(), "{bad:?}");
        }
    }
}
