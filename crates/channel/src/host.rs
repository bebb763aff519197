//! Host names, validated so they can be put into a ref name, a URL path and a file name.
use std::fmt;

use crate::error::ChannelError;

/// A NixOS host name (`networking.hostName` rules: letters, digits, `-` and `_`, 1–63
/// characters, starting and ending with a letter or digit). Nothing that could be read as
/// an option (`-x`), a path (`a/b`, `..`), or a ref expression (`a~1`, `a^`, `a:b`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct HostName(String);

impl HostName {
    /// Validates a host name.
    pub fn parse(s: &str) -> Result<Self, ChannelError> {
        let bytes = s.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= 63
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric();
        if ok { Ok(Self(s.to_owned())) } else { Err(ChannelError::BadHost { host: crate::error::shown(s) }) }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host's channel branch, `nixos-tested-<host>`.
    pub fn branch(&self) -> String {
        format!("nixos-tested-{}", self.0)
    }

    /// The notes ref that carries this host's signed manifests.
    pub fn notes_ref(&self) -> String {
        format!("refs/notes/fleetgate/{}", self.0)
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for ok in ["web1", "a", "db-02", "edge_eu", "X9"] {
            assert_eq!(HostName::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(HostName::parse("web1").unwrap().branch(), "nixos-tested-web1");
    }

    #[test]
    fn injections_are_refused() {
        let long = "a".repeat(64);
        for bad in [
            "",
            "-web",
            "--force",
            "web-",
            "a/b",
            "../x",
            "a..b",
            "a.b",
            "a:b",
            "a~1",
            "a^",
            "a b",
            "a\nb",
            "a@{1}",
            "héte",
            "a*",
            "a?",
            "a[",
            "a\\b",
            "refs/heads/x",
            &long,
        ] {
            let e = HostName::parse(bad).unwrap_err();
            assert!(e.to_string().contains("host name"), "{bad:?}: {e}");
        }
    }
}
