//! Per-host report tokens. The file has one `<host> <token>` or
//! `<host> sha256:<hex of SHA-256(token)>` per line (`#` comments allowed); only hashes
//! are kept in memory.
use std::collections::HashMap;

use sha2::Digest as _;

use fleetgate_channel::error::ChannelError;
use fleetgate_channel::host::HostName;
use fleetgate_channel::secret::{MIN_SECRET_CHARS, Secret};

/// Largest host tokens file read (one line per host).
pub const MAX_TOKENS_FILE: u64 = 1 << 20;

/// Host → SHA-256 of its token.
#[derive(Clone, Default)]
pub struct HostTokens(HashMap<String, [u8; 32]>);

impl std::fmt::Debug for HostTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostTokens({} hosts)", self.0.len())
    }
}

impl HostTokens {
    /// Parses the token file's text.
    pub fn parse(text: &Secret) -> Result<Self, ChannelError> {
        let mut map = HashMap::new();
        for (n, line) in text.expose().lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |m: &str| ChannelError::Config(format!("host token file, line {}: {m}", n + 1));
            let (host, token) = line.split_once(char::is_whitespace).ok_or_else(|| bad("expected `<host> <token>`"))?;
            let host = HostName::parse(host)?;
            map.insert(host.to_string(), token_hash(token.trim()).map_err(|m| bad(&m))?);
        }
        Ok(Self(map))
    }

    /// Hosts with a token.
    pub fn hosts(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    /// The host whose token `token` is, if any (every host's hash is compared).
    pub fn owner(&self, token: &str) -> Option<String> {
        let got: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (host, expected) in &self.0 {
            if same_hash(expected, &got) && found.is_none() {
                found = Some(host.clone());
            }
        }
        found
    }

    /// True if `token` is `host`'s token (constant time in the token's hash).
    pub fn check(&self, host: &str, token: &str) -> bool {
        let Some(expected) = self.0.get(host) else {
            return false;
        };
        let got: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        same_hash(expected, &got)
    }
}

/// The SHA-256 a tokens file line stands for: `sha256:<64 hex>` as written, or the hash
/// of a plain token of at least [`MIN_SECRET_CHARS`] characters. The error says which rule
/// the text broke.
pub(crate) fn token_hash(token: &str) -> Result<[u8; 32], String> {
    match token.strip_prefix("sha256:") {
        Some(h) => hex::decode(h)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| "sha256: must be followed by 64 hex digits".to_owned()),
        None if token.chars().count() >= MIN_SECRET_CHARS => Ok(sha2::Sha256::digest(token.as_bytes()).into()),
        None => Err(format!("tokens must be at least {MIN_SECRET_CHARS} characters")),
    }
}

/// Equal hashes, compared in constant time.
pub(crate) fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_tokens() {
        let hashed = hex::encode(sha2::Sha256::digest(b"web2-token-0123456789"));
        let t =
            HostTokens::parse(&Secret::new(&format!("# comment\nweb1 web1-token-0123456789\nweb2 sha256:{hashed}\n")))
                .unwrap();
        assert!(t.check("web1", "web1-token-0123456789"));
        assert!(t.check("web2", "web2-token-0123456789"));
        assert!(!t.check("web1", "web2-token-0123456789"));
        assert!(!t.check("web3", "anything"));
        assert!(HostTokens::parse(&Secret::new("web1 short")).is_err());
        assert!(HostTokens::parse(&Secret::new("../x tokentokentokentoken")).is_err());
        assert!(!format!("{t:?}").contains("token-0123"));
    }
}
