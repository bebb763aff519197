//! Commit ids: full hexadecimal object names only (40 for SHA-1, 64 for SHA-256 repos).
use std::fmt;

use crate::error::ChannelError;

/// A full git commit id, lower-case hex. Abbreviations, ref names and revision
/// expressions (`HEAD~1`, `main`) are refused: a channel points at exactly what CI built.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct CommitId(String);

impl CommitId {
    /// Validates and lower-cases a commit id.
    pub fn parse(s: &str) -> Result<Self, ChannelError> {
        if matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(ChannelError::BadCommit { commit: crate::error::shown(s) })
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_ids_only() {
        let sha1 = "0123456789abcdef0123456789ABCDEF01234567";
        assert_eq!(CommitId::parse(sha1).unwrap().as_str(), sha1.to_lowercase());
        assert!(CommitId::parse(&"a".repeat(64)).is_ok());
        for bad in [
            "",
            "abc1234",
            "HEAD",
            "main",
            "HEAD~1",
            &"g".repeat(40),
            &"a".repeat(41),
            &"a".repeat(63),
            "-0123456789abcdef0123456789abcdef0123456",
        ] {
            let e = CommitId::parse(bad).unwrap_err();
            assert!(e.to_string().contains("commit"), "{bad}: {e}");
        }
    }
}
