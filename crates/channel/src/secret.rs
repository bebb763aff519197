//! Secrets (git tokens, HMAC secrets): read from a file or a systemd credential, never
//! from the command line, never printed.
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::ChannelError;

/// Largest secret file read (a token or an HMAC secret is well under 1 KiB).
pub const MAX_SECRET: u64 = 64 << 10;

/// Fewest characters a shared secret (webhook secret, host token) may have.
pub const MIN_SECRET_CHARS: usize = 16;

/// A secret string. `Debug` prints `Secret(<redacted>)`; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Where a secret comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file path.
    File(PathBuf),
    /// A systemd credential name, read from `$CREDENTIALS_DIRECTORY/<name>`.
    Credential(String),
}

impl Secret {
    /// Wraps a string (trailing newlines removed).
    pub fn new(s: &str) -> Self {
        Self(s.trim_end_matches(['\n', '\r']).to_owned())
    }

    /// The secret value. Call sites must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Loads a one-line secret; `what` names it in errors ("git token").
    pub fn load(what: &str, source: &SecretSource) -> Result<Self, ChannelError> {
        let secret = Self::load_text(what, source, MAX_SECRET)?;
        if secret.0.contains(['\n', '\r']) {
            return Err(ChannelError::Secret {
                what: what.to_owned(),
                message: format!("{} has more than one line", Self::path(what, source)?.display()),
            });
        }
        Ok(secret)
    }

    /// Loads a secret file that may have several lines (the host tokens file), of at
    /// most `limit` bytes.
    pub fn load_text(what: &str, source: &SecretSource, limit: u64) -> Result<Self, ChannelError> {
        let err = |message: String| ChannelError::Secret { what: what.to_owned(), message };
        let path = Self::path(what, source)?;
        let secret = Self::new(&Self::read(&path, limit).map_err(err)?);
        if secret.0.trim().is_empty() {
            return Err(err(format!("{} is empty", path.display())));
        }
        Ok(secret)
    }

    /// The file a secret is read from.
    fn path(what: &str, source: &SecretSource) -> Result<PathBuf, ChannelError> {
        let err = |message: String| ChannelError::Secret { what: what.to_owned(), message };
        match source {
            SecretSource::File(p) => Ok(p.clone()),
            SecretSource::Credential(name) => {
                if name.is_empty() || name.contains('/') || name.starts_with('.') {
                    return Err(err(format!("bad credential name {name:?}")));
                }
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    err(format!(
                        "credential {name:?} requested but $CREDENTIALS_DIRECTORY is not set \
                         (run under systemd with LoadCredential={name}:/path/to/file)"
                    ))
                })?;
                Ok(Path::new(&dir).join(name))
            }
        }
    }

    /// Refuses a secret shorter than [`MIN_SECRET_CHARS`] (a guessable one).
    pub fn require_strength(&self, what: &str) -> Result<(), ChannelError> {
        let n = self.0.chars().count();
        if n < MIN_SECRET_CHARS {
            return Err(ChannelError::Secret {
                what: what.to_owned(),
                message: format!(
                    "it has {n} character(s); at least {MIN_SECRET_CHARS} are needed (make one with \
                     `openssl rand -hex 32`)"
                ),
            });
        }
        Ok(())
    }

    /// A secret file's text: a regular file of at most `limit` bytes, UTF-8.
    fn read(path: &Path, limit: u64) -> Result<String, String> {
        let bytes = fleetgate_nix::read_small_file(path, limit).map_err(|e| {
            let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
            format!("{e}{cause}")
        })?;
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
    }

    /// Loads an optional one-line secret from a file option or a credential option.
    pub fn load_optional(
        what: &str,
        file: Option<&Path>,
        credential: Option<&str>,
    ) -> Result<Option<Self>, ChannelError> {
        Self::source(what, file, credential)?.map(|s| Self::load(what, &s)).transpose()
    }

    /// Loads an optional multi-line secret file (at most `limit` bytes).
    pub fn load_optional_text(
        what: &str,
        file: Option<&Path>,
        credential: Option<&str>,
        limit: u64,
    ) -> Result<Option<Self>, ChannelError> {
        Self::source(what, file, credential)?.map(|s| Self::load_text(what, &s, limit)).transpose()
    }

    fn source(what: &str, file: Option<&Path>, credential: Option<&str>) -> Result<Option<SecretSource>, ChannelError> {
        match (file, credential) {
            (Some(_), Some(_)) => Err(ChannelError::Secret {
                what: what.to_owned(),
                message: "give either a file or a credential name, not both".into(),
            }),
            (Some(f), None) => Ok(Some(SecretSource::File(f.to_owned()))),
            (None, Some(c)) => Ok(Some(SecretSource::Credential(c.to_owned()))),
            (None, None) => Ok(None),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_secret_is_trimmed_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "s3cr3t-value\n").unwrap();
        let s = Secret::load("git token", &SecretSource::File(p)).unwrap();
        assert_eq!(s.expose(), "s3cr3t-value");
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }

    #[test]
    fn empty_missing_and_multiline_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let multi = dir.path().join("multi");
        std::fs::write(&multi, "a\nb\n").unwrap();
        for p in [empty, multi, dir.path().join("absent")] {
            let e = Secret::load("git token", &SecretSource::File(p)).unwrap_err();
            assert!(e.to_string().contains("git token"), "{e}");
        }
        let e = Secret::load("t", &SecretSource::Credential("../x".into())).unwrap_err();
        assert!(e.to_string().contains("bad credential name"));
    }
}
