//! Secrets (git tokens, HMAC secrets): read from a file or a systemd credential, never
//! from the command line, never printed.
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::ChannelError;

/// Largest secret file read (a token or an HMAC secret is well under 1 KiB).
pub const MAX_SECRET: u64 = 64 << 10;

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

    /// Loads a secret; `what` names it in errors ("git token").
    pub fn load(what: &str, source: &SecretSource) -> Result<Self, ChannelError> {
        let err = |message: String| ChannelError::Secret { what: what.to_owned(), message };
        let path = match source {
            SecretSource::File(p) => p.clone(),
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
                Path::new(&dir).join(name)
            }
        };
        let text = Self::read(&path, MAX_SECRET).map_err(err)?;
        let secret = Self::new(&text);
        if secret.0.is_empty() {
            return Err(err(format!("{} is empty", path.display())));
        }
        if secret.0.contains(['\n', '\r']) {
            return Err(err(format!("{} has more than one line", path.display())));
        }
        Ok(secret)
    }

    /// A secret file's text: a regular file of at most `limit` bytes, UTF-8.
    fn read(path: &Path, limit: u64) -> Result<String, String> {
        let bytes = fleetgate_nix::read_small_file(path, limit).map_err(|e| {
            let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
            format!("{e}{cause}")
        })?;
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
    }

    /// Loads an optional secret from a file option or a credential option.
    pub fn load_optional(
        what: &str,
        file: Option<&Path>,
        credential: Option<&str>,
    ) -> Result<Option<Self>, ChannelError> {
        match (file, credential) {
            (Some(_), Some(_)) => Err(ChannelError::Secret {
                what: what.to_owned(),
                message: "give either a file or a credential name, not both".into(),
            }),
            (Some(f), None) => Self::load(what, &SecretSource::File(f.to_owned())).map(Some),
            (None, Some(c)) => Self::load(what, &SecretSource::Credential(c.to_owned())).map(Some),
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
