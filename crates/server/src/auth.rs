//! Who may read the fleet's status (`/v1/status`, `/v1/hosts`, `/metrics`, the dashboard).
//!
//! - **Read tokens** (`--read-tokens-file` / `--read-tokens-credential`): one
//!   `<name> <token> [<host glob>,…]` or `<name> sha256:<hex> [<host glob>,…]` per line
//!   (`#` comments allowed). Without globs the token reads every host; with them, only
//!   hosts whose names match (per-host scoping: `team-web web-token… web*,lb1`).
//! - **Host tokens** (the report tokens of `--host-tokens-file`) read their own host and
//!   nothing else: a host's token cannot read other hosts.
//!
//! A token comes as `Authorization: Bearer <token>` or, for the dashboard in a browser,
//! in the `fleetgate_token` cookie that `POST /login` sets (`HttpOnly`, `SameSite=Strict`;
//! the token hex-encoded). Only SHA-256 hashes of tokens are kept in memory; comparisons
//! are constant-time in the hash.
use sha2::Digest as _;

use fleetgate_channel::ChannelError;
use fleetgate_channel::secret::Secret;
use fleetgate_status::fleet::glob_match;

use crate::tokens::{HostTokens, same_hash, token_hash};

/// Largest read tokens file.
pub const MAX_READ_TOKENS_FILE: u64 = 1 << 20;
/// The dashboard's cookie.
pub const COOKIE: &str = "fleetgate_token";

/// One read token.
#[derive(Clone)]
struct ReadToken {
    name: String,
    hash: [u8; 32],
    /// Host globs; empty: every host.
    hosts: Vec<String>,
}

/// The read tokens.
#[derive(Clone, Default)]
pub struct ReadTokens(Vec<ReadToken>);

impl std::fmt::Debug for ReadTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadTokens({} tokens)", self.0.len())
    }
}

impl ReadTokens {
    /// Parses the read tokens file's text.
    ///
    /// # Errors
    /// [`ChannelError::Config`] naming the line.
    pub fn parse(text: &Secret) -> Result<Self, ChannelError> {
        let mut tokens = Vec::new();
        for (n, line) in text.expose().lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |m: &str| ChannelError::Config(format!("read tokens file, line {}: {m}", n + 1));
            let mut words = line.split_whitespace();
            let (Some(name), Some(token)) = (words.next(), words.next()) else {
                return Err(bad("expected `<name> <token> [<host glob>,…]`"));
            };
            let hosts: Vec<String> =
                words.flat_map(|w| w.split(',')).filter(|g| !g.is_empty()).map(str::to_owned).collect();
            if hosts.iter().any(|g| !g.chars().all(|c| c.is_ascii_alphanumeric() || "-_*?".contains(c))) {
                return Err(bad("host globs are host-name characters with * and ?"));
            }
            let hash = token_hash(token).map_err(|m| bad(&m))?;
            tokens.push(ReadToken { name: name.to_owned(), hash, hosts });
        }
        Ok(Self(tokens))
    }

    /// True if no read token is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Who `token` is: a read token, else a host's report token, else nobody.
    #[must_use]
    pub fn viewer(&self, hosts: &HostTokens, token: &str) -> Option<Viewer> {
        let hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        // Every token is compared (no early exit on the first match's position).
        let mut found = None;
        for t in &self.0 {
            if same_hash(&t.hash, &hash) && found.is_none() {
                found = Some(Viewer {
                    name: t.name.clone(),
                    scope: if t.hosts.is_empty() { Scope::All } else { Scope::Globs(t.hosts.clone()) },
                });
            }
        }
        found.or_else(|| hosts.owner(token).map(|h| Viewer { name: h.clone(), scope: Scope::Host(h) }))
    }
}

/// What a viewer may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every host.
    All,
    /// Hosts matching these globs.
    Globs(Vec<String>),
    /// One host (its own report token).
    Host(String),
}

/// Someone allowed to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The token's name (a host's name for a host token).
    pub name: String,
    /// What it may read.
    pub scope: Scope,
}

impl Viewer {
    /// May read `host`.
    #[must_use]
    pub fn can_read(&self, host: &str) -> bool {
        match &self.scope {
            Scope::All => true,
            Scope::Globs(globs) => globs.iter().any(|g| glob_match(g, host)),
            Scope::Host(h) => h == host,
        }
    }

    /// May read every host (the fleet-wide numbers of `/metrics`).
    #[must_use]
    pub fn sees_all(&self) -> bool {
        self.scope == Scope::All
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is
/// case-insensitive (RFC 7235 section 2.1: `bearer`, `BEARER` are `Bearer`), separated
/// from the token by one or more spaces.
#[must_use]
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The token in a `Cookie:` header's `fleetgate_token` (hex-encoded), if any.
#[must_use]
pub fn cookie_token(cookie_header: &str) -> Option<String> {
    cookie_header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        if name != COOKIE {
            return None;
        }
        let bytes = hex::decode(value.trim()).ok()?;
        String::from_utf8(bytes).ok()
    })
}

/// The `Set-Cookie` value that logs a browser in with `token` (a week), or out (`None`).
#[must_use]
pub fn set_cookie(token: Option<&str>) -> String {
    match token {
        Some(t) => format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=604800", hex::encode(t)),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPS: &str = "ops-read-token-0123456789";
    const TEAM: &str = "team-web-token-0123456789";
    const WEB1: &str = "web1-report-token-0123456789";

    fn tokens() -> (ReadTokens, HostTokens) {
        let hashed = hex::encode(sha2::Sha256::digest(TEAM.as_bytes()));
        let read =
            ReadTokens::parse(&Secret::new(&format!("# viewers\nops {OPS}\nteam sha256:{hashed} web*,lb1\n"))).unwrap();
        let hosts = HostTokens::parse(&Secret::new(&format!("web1 {WEB1}\n"))).unwrap();
        (read, hosts)
    }

    #[test]
    fn read_tokens_host_scopes_and_host_tokens() {
        let (read, hosts) = tokens();
        let ops = read.viewer(&hosts, OPS).unwrap();
        assert!(ops.sees_all() && ops.can_read("db9"));
        let team = read.viewer(&hosts, TEAM).unwrap();
        assert!(team.can_read("web7") && team.can_read("lb1") && !team.can_read("db1") && !team.sees_all());
        let web1 = read.viewer(&hosts, WEB1).unwrap();
        assert!(web1.can_read("web1") && !web1.can_read("web2") && !web1.sees_all());
        assert_eq!(read.viewer(&hosts, "nope-nope-nope-nope"), None);
        assert!(!format!("{read:?}").contains("token-0123"));
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (text, what) in
            [("ops short", "at least 16"), ("ops", "expected"), ("ops x0123456789abcdefgh ../x", "globs")]
        {
            let err = ReadTokens::parse(&Secret::new(text)).unwrap_err().to_string();
            assert!(err.contains("line 1") && err.contains(what), "{text}: {err}");
        }
    }

    #[test]
    fn the_cookie_round_trips_and_bearer_is_case_insensitive() {
        let set = set_cookie(Some("tok;en"));
        let value = set.split(';').next().unwrap();
        assert_eq!(cookie_token(&format!("other=1; {value}")).as_deref(), Some("tok;en"));
        assert_eq!(cookie_token("fleetgate_token=zz"), None);
        for ok in ["Bearer t0k", "bearer t0k", "BEARER t0k", "bEaReR   t0k"] {
            assert_eq!(bearer_token(ok), Some("t0k"), "{ok}");
        }
        for bad in ["Basic t0k", "Bearer", "Bearer ", "Bearert0k", "t0k", "Bearer\tt0k"] {
            assert_eq!(bearer_token(bad), None, "{bad}");
        }
    }
}
