//! Everything a promotion can refuse or fail with, each with what to do next.
use std::path::PathBuf;

use fleetgate_nix::{KeyFileError, NixError, ProcessError, SmallFileError};

/// Errors of the channel library. Nothing has been changed when one of the input errors
/// (`Bad*`, `Diverged`, …) is returned; for the others the variant says what was done.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ChannelError {
    /// Host name that could inject a ref, option or path.
    #[error("invalid host name {host:?}")]
    #[diagnostic(help(
        "host names are NixOS networking.hostName values: letters, digits, '-' and '_', \
         1-63 characters, starting and ending with a letter or digit"
    ))]
    BadHost {
        /// The rejected name as given ([`shown`]: at most 100 characters; the message
        /// quotes and escapes it once).
        host: String,
    },
    /// Not a full hex commit id.
    #[error("invalid commit id {commit:?}")]
    #[diagnostic(help("pass the full 40-hex (SHA-1) or 64-hex (SHA-256) commit id CI built"))]
    BadCommit {
        /// The rejected id as given ([`shown`]).
        commit: String,
    },
    /// Not a top-level store path.
    #[error("invalid store path {path:?}")]
    #[diagnostic(help("pass the system's top-level store path, /nix/store/<hash>-<name>"))]
    BadStorePath {
        /// The rejected path as given ([`shown`]).
        path: String,
    },
    /// A CI build reference that is too long or has control characters.
    #[error("invalid build reference {build:?}")]
    #[diagnostic(help(
        "the build reference (a CI run URL) must be at most 1024 characters, without control characters"
    ))]
    BadBuild {
        /// The rejected reference as given ([`shown`]).
        build: String,
    },
    /// A configuration value is unusable.
    #[error("{0}")]
    #[diagnostic(help("check the command-line options and files named in the message"))]
    Config(String),
    /// A secret (token, HMAC secret) could not be loaded.
    #[error("cannot read the secret {what}: {message}")]
    #[diagnostic(help(
        "put the secret in a file readable only by this service and pass its path, or use \
         systemd's LoadCredential= so it appears in $CREDENTIALS_DIRECTORY"
    ))]
    Secret {
        /// Which secret.
        what: String,
        /// Why (never contains the secret).
        message: String,
    },
    /// The signing key cannot be used; nothing was attempted.
    #[error("unusable --signing-key")]
    #[diagnostic(help(
        "--signing-key must name a file holding a Nix secret key: one line `name:base64`, the base64 \
         of a 64-byte ed25519 secret key. Make a key pair with `fleetgate channel keygen` (or \
         `nix-store --generate-binary-cache-key`); the public key alone cannot sign"
    ))]
    SigningKey(#[source] KeyFileError),
    /// The public key cannot be used; nothing was attempted.
    #[error("unusable --public-key {given}")]
    #[diagnostic(help(
        "--public-key takes a Nix public key `name:base64` (32 bytes): the key text itself, as in \
         nix.conf's trusted-public-keys, or a file holding it"
    ))]
    PublicKey {
        /// The file, quoted, or `(key text)`: the text is not repeated, it may be a
        /// secret key given by mistake.
        given: String,
        /// What is wrong.
        #[source]
        source: NixError,
    },
    /// An input file (Hydra event, manifest, secret) is missing, not a regular file or
    /// too large; nothing was attempted.
    #[error("cannot use {what}")]
    #[diagnostic(help(
        "pass a regular file (not a directory, FIFO or device) readable by this user, within the size \
         limit in the message"
    ))]
    InputFile {
        /// Which input (`the Hydra event (--event, $HYDRA_JSON)`).
        what: &'static str,
        /// Why.
        #[source]
        source: SmallFileError,
    },
    /// The system is not in the local store, and not in the cache either.
    #[error("{path} is in neither the local store nor the cache {cache}")]
    #[diagnostic(help("build the system on this machine first, or copy it to the cache"))]
    SystemMissing {
        /// The store path.
        path: String,
        /// The cache.
        cache: String,
    },
    /// Uploading the closure failed. Branch and manifest were not touched.
    #[error("uploading the closure to {cache} failed; branch and manifest left untouched")]
    #[diagnostic(help("check that the cache is reachable and writable, then run the promotion again"))]
    CacheUpload {
        /// The cache.
        cache: String,
        /// What Nix said.
        #[source]
        source: NixError,
    },
    /// After upload, the cache lacks some paths of the closure.
    #[error("the cache {cache} lacks {} path(s) of the closure, e.g. {}; branch and manifest left untouched", .missing.len(), .missing.first().map(String::as_str).unwrap_or("?"))]
    #[diagnostic(help(
        "re-run the promotion; if it persists, the cache drops uploads (quota, permissions, eventual consistency)"
    ))]
    CacheIncomplete {
        /// The cache.
        cache: String,
        /// Paths not found in the cache.
        missing: Vec<String>,
    },
    /// A narinfo in the cache is not signed by the expected key.
    #[error("{path} in {cache} carries no valid signature by {key}; branch and manifest left untouched")]
    #[diagnostic(help(
        "the cache must be written with the secret key matching --public-key; check \
         --signing-key and whether another writer replaced the narinfo"
    ))]
    CacheSignature {
        /// The cache.
        cache: String,
        /// The badly signed path.
        path: String,
        /// The key name expected.
        key: String,
    },
    /// The commit is not in the channel repository.
    #[error("commit {commit} is not in {repo}")]
    #[diagnostic(help("push the commit to the repository first (CI may have built a commit nobody pushed)"))]
    CommitNotFound {
        /// The commit.
        commit: String,
        /// The repository (credentials never shown).
        repo: String,
    },
    /// The branch is not an ancestor of the commit and the commit is not in the branch.
    #[error("{branch} is at {current}, which is not an ancestor of {commit}: refusing to jump sideways")]
    #[diagnostic(help("promote a descendant of {current}, or pass --force to move the branch anyway"))]
    Diverged {
        /// The branch.
        branch: String,
        /// Where it is.
        current: String,
        /// Where it was asked to go.
        commit: String,
    },
    /// The push kept being rejected.
    #[error("pushing {branch} was rejected {attempts} time(s); the branch was not changed by this run")]
    #[diagnostic(help("look at the remote's answer below (protected branch? hook? permissions?), then re-run"))]
    PushRejected {
        /// The branch.
        branch: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        #[source]
        source: ProcessError,
    },
    /// Waiting for the repository lock timed out.
    #[error("another promotion has held the lock {} for longer than {}", .path.display(), humantime::format_duration(*.waited))]
    #[diagnostic(help("a promotion may be stuck; check running fleetgate processes before removing anything"))]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: std::time::Duration,
    },
    /// Git failed (other than a rejected push).
    #[error("git failed")]
    #[diagnostic(help("check the repository URL and credentials; the message below is git's"))]
    Git(#[source] ProcessError),
    /// Nix failed.
    #[error("nix failed")]
    #[diagnostic(help("the message below is Nix's"))]
    Nix(#[source] NixError),
    /// A Hydra event could not be used.
    #[error("Hydra event: {0}")]
    #[diagnostic(help("the file in $HYDRA_JSON must be what Hydra's RunCommand plugin writes"))]
    HydraEvent(String),
    /// The commit of a Hydra build could not be determined.
    #[error("cannot find the commit Hydra built for build {build}: {message}")]
    #[diagnostic(help(
        "set system.configurationRevision = self.rev in the host's configuration, or pass \
         --hydra-url so the commit can be read from Hydra's API"
    ))]
    HydraCommit {
        /// Hydra build id.
        build: u64,
        /// What was tried.
        message: String,
    },
    /// Local file I/O (the operating system's error is the source, printed after this).
    #[error("{action} {}", .path.display())]
    #[diagnostic(help("check permissions and free space"))]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The manifest signature does not verify.
    #[error("manifest signature does not verify with {key}")]
    #[diagnostic(help("the manifest was not signed by this key, or it was altered"))]
    ManifestSignature {
        /// The key name.
        key: String,
    },
    /// The manifest document is malformed.
    #[error("malformed manifest: {0}")]
    ManifestFormat(String),
    /// The server's database failed.
    #[error("database: {0}")]
    #[diagnostic(help("check the --db file: permissions, free space, another process holding it"))]
    Database(String),
    /// The HTTP service could not start or stopped with an error.
    #[error("{0}")]
    #[diagnostic(help("check --listen (address in use? permission to bind?)"))]
    Server(String),
    /// The service stopped while promotions were still running (they were cut off).
    #[error("{running} promotion(s) still running when the service stopped: {why}")]
    #[diagnostic(help(
        "a promotion cut off is safe to run again (send the hook again); if promotions need longer, raise \
         --shutdown-timeout and the unit's TimeoutStopSec= with it"
    ))]
    PromotionsCutOff {
        /// How many.
        running: usize,
        /// Why they were not waited for.
        why: String,
    },
    /// Something that should not happen did (a bug, or git behaving unexpectedly).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Rejected input as kept in an error: the first 100 characters (an attacker's megabyte
/// of host name does not belong in a log line). Messages print it with `{:?}`, which
/// quotes and escapes it exactly once.
pub fn shown(input: &str) -> String {
    const MAX: usize = 100;
    match input.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &input[..cut]),
        None => input.to_owned(),
    }
}

impl ChannelError {
    /// Wraps an I/O error with the file and what was being done.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { action, path: path.into(), source }
    }

    /// The process exit code of the CLI for this error: 2 for bad input and
    /// configuration errors (nothing was attempted, fix the command line, the event or
    /// the files it names), 1 for everything else (the promotion was attempted and
    /// failed, or was refused, e.g. `Diverged`).
    pub fn exit_code(&self) -> u8 {
        let configuration = matches!(
            self,
            Self::Config(_)
                | Self::Secret { .. }
                | Self::SigningKey(_)
                | Self::PublicKey { .. }
                | Self::InputFile { .. }
        );
        if self.is_bad_input() || configuration { 2 } else { 1 }
    }

    /// The message followed by every source's, `: `-separated (for one-line logs and
    /// JSON; never contains a secret, as none of the parts does).
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    /// True for errors caused by bad input (HTTP 400 in the server).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::BadHost { .. }
                | Self::BadCommit { .. }
                | Self::BadBuild { .. }
                | Self::BadStorePath { .. }
                | Self::HydraEvent(_)
                | Self::ManifestFormat(_)
        )
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn rejected_input_is_quoted_and_escaped_once() {
        let host = crate::HostName::parse("web1\nweb2").unwrap_err();
        assert_eq!(host.to_string(), r#"invalid host name "web1\nweb2""#);
        assert_eq!(host.chain(), r#"invalid host name "web1\nweb2""#);
        let commit = crate::CommitId::parse("a\"b").unwrap_err();
        assert_eq!(commit.to_string(), r#"invalid commit id "a\"b""#);
        let path = crate::store_path::validate("/nix/store/x\ty").unwrap_err();
        assert_eq!(path.to_string(), r#"invalid store path "/nix/store/x\ty""#);
        // In JSON, serde adds the one escape JSON needs, no more.
        let v = serde_json::json!({ "error": host.chain() });
        assert_eq!(v.to_string(), r#"{"error":"invalid host name \"web1\\nweb2\""}"#);
    }

    #[test]
    fn long_rejected_input_is_cut() {
        let e = crate::HostName::parse(&"é".repeat(10_000)).unwrap_err().to_string();
        assert_eq!(e, format!("invalid host name \"{}…\"", "é".repeat(100)));
    }
}
