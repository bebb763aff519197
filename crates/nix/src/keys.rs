//! Nix's ed25519 signing keys (`name:base64`) and narinfo signatures.
//!
//! A Nix secret key is `name:base64(seed ‖ public)` (64 bytes), a public key is
//! `name:base64(public)` (32 bytes), a signature is `name:base64(sig)` (64 bytes). The same
//! keys sign narinfos (over [`narinfo_fingerprint`]) and anything else an operator wants
//! to authenticate with the key they already trust.
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::hash::NarHash;
use crate::small_file::{SmallFileError, read_small_file};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Key files are one line of about 100 bytes; anything beyond this is not a key file.
pub const MAX_KEY_FILE: u64 = 4096;

/// What is wrong with the text of a key. The messages never contain key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Nothing there (or only newlines).
    #[error("the key is empty")]
    Empty,
    /// No `name:` in front.
    #[error("not in Nix's key format `name:base64` (no key name before a `:`)")]
    NoName,
    /// The name has whitespace in it, or is not a valid key name.
    #[error("the key name {0:?} is not usable (empty, or has whitespace, ':' or a leading '-')")]
    BadName(String),
    /// A secret key file has characters Nix would refuse (Nix reads the file as is).
    #[error("the key file has {0} in it; Nix reads key files as they are and would refuse it")]
    StrayCharacter(&'static str),
    /// More than one line.
    #[error("the key file has more than one line")]
    MultipleLines,
    /// The part after `:` is not base64.
    #[error("key `{name}`: the part after `:` is not base64")]
    NotBase64 {
        /// The key's name.
        name: String,
    },
    /// A public key was given where a secret key is needed.
    #[error("key `{name}` is a public key (32 bytes); a secret key (64 bytes) is needed here")]
    PublicNotSecret {
        /// The key's name.
        name: String,
    },
    /// A secret key was given where a public key is needed.
    #[error("key `{name}` is a secret key; give its public key here (never hand out the secret one)")]
    SecretNotPublic {
        /// The key's name.
        name: String,
    },
    /// The decoded key has a length no ed25519 key has.
    #[error("key `{name}` decodes to {found} bytes; a {what} key has {expected}")]
    WrongLength {
        /// The key's name.
        name: String,
        /// `secret` or `public`.
        what: &'static str,
        /// Bytes found.
        found: usize,
        /// Bytes needed.
        expected: usize,
    },
    /// A secret key whose second half is not the public key of its first half.
    #[error("secret key `{name}`: its public half does not match its seed (the key is corrupt)")]
    Mismatched {
        /// The key's name.
        name: String,
    },
    /// 32 bytes that are not an ed25519 public key.
    #[error("public key `{name}` is not a valid ed25519 public key")]
    NotAPoint {
        /// The key's name.
        name: String,
    },
}

/// A key file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Missing, not a regular file, too large, unreadable.
    #[error(transparent)]
    File(#[from] SmallFileError),
    /// Read, but not a key of the kind needed (the message is the path; the source
    /// says what is wrong).
    #[error("{}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: KeyError,
    },
}

/// A secret signing key. Its `Debug` output never shows the key material.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

/// A public verification key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

/// A key name as Nix and fleetgate accept it: not empty, no whitespace or `:`, and no
/// leading `-` (it is passed to `nix-store --generate-binary-cache-key`).
pub fn check_key_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty() || name.starts_with('-') || name.chars().any(|c| c.is_whitespace() || c == ':') {
        return Err(KeyError::BadName(name.to_owned()));
    }
    Ok(())
}

/// Splits `name:base64` (Nix's `Key::Key` in `src/libstore/crypto.cc`: the name is what
/// comes before the first `:`, and must not be empty) and decodes the key bytes.
fn split_named(s: &str) -> Result<(&str, Vec<u8>), KeyError> {
    if s.is_empty() {
        return Err(KeyError::Empty);
    }
    let (name, b64) = s.split_once(':').filter(|(n, _)| !n.is_empty()).ok_or(KeyError::NoName)?;
    check_key_name(name)?;
    let bytes = B64.decode(b64).map_err(|_| KeyError::NotBase64 { name: name.to_owned() })?;
    Ok((name, bytes))
}

/// The decoded bytes of a `what` key as an array of its length; bytes of the length of
/// the other kind of key (`other`: that length and its error) are named as that mistake.
fn sized<const N: usize>(
    name: &str,
    bytes: Vec<u8>,
    what: &'static str,
    other: (usize, fn(String) -> KeyError),
) -> Result<[u8; N], KeyError> {
    bytes.try_into().map_err(|b: Vec<u8>| match b.len() {
        n if n == other.0 => (other.1)(name.to_owned()),
        found => KeyError::WrongLength { name: name.to_owned(), what, found, expected: N },
    })
}

fn read_key_file(path: &Path) -> Result<String, KeyFileError> {
    let bytes = read_small_file(path, MAX_KEY_FILE)?;
    String::from_utf8(bytes).map_err(|_| KeyFileError::Parse {
        path: path.to_owned(),
        source: KeyError::StrayCharacter("bytes that are not UTF-8"),
    })
}

impl SecretKey {
    /// Parses a secret key file's text, `name:base64(64 bytes)` as written by
    /// `nix-store --generate-binary-cache-key`, and refuses what Nix would refuse when it
    /// reads the same file for `?secret-key=` (`SecretKey::SecretKey` in
    /// `src/libstore/crypto.cc`: exactly 64 bytes; its `base64Decode` skips newlines
    /// and stops at `=`, any other whitespace is an error). Stricter than Nix in one
    /// point: the second half must be the public key of the first.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let s = s.trim_end_matches('\n');
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        if s.split_once(':').is_none_or(|(name, _)| name.is_empty()) {
            return Err(KeyError::NoName);
        }
        if s.contains('\n') {
            return Err(KeyError::MultipleLines);
        }
        for (c, what) in [(' ', "a space"), ('\r', "a carriage return"), ('\t', "a tab")] {
            if s.contains(c) {
                return Err(KeyError::StrayCharacter(what));
            }
        }
        let (name, bytes) = split_named(s)?;
        let arr: [u8; 64] = sized(name, bytes, "secret", (32, |name| KeyError::PublicNotSecret { name }))?;
        let key = SigningKey::from_keypair_bytes(&arr).map_err(|_| KeyError::Mismatched { name: name.to_owned() })?;
        Ok(Self { name: name.to_owned(), key })
    }

    /// A key from a 32-byte seed (for tests and for callers with their own randomness).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        check_key_name(name)?;
        Ok(Self { name: name.to_owned(), key: SigningKey::from_bytes(seed) })
    }

    /// The key in Nix's secret-key file format, `name:base64(seed ‖ public)`.
    pub fn to_nix_format(&self) -> String {
        let mut bytes = self.key.to_bytes().to_vec();
        bytes.extend_from_slice(&self.key.verifying_key().to_bytes());
        format!("{}:{}", self.name, B64.encode(bytes))
    }

    /// Reads and parses a secret key file (a regular file of at most [`MAX_KEY_FILE`]
    /// bytes: a FIFO or device is refused, not waited on).
    pub fn from_file(path: &Path) -> Result<Self, KeyFileError> {
        Self::parse(&read_key_file(path)?).map_err(|source| KeyFileError::Parse { path: path.to_owned(), source })
    }

    /// The key's name (the part before `:`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey { name: self.name.clone(), key: self.key.verifying_key() }
    }

    /// Signs `msg`; returns `name:base64(signature)`.
    pub fn sign(&self, msg: &[u8]) -> String {
        let sig = self.key.sign(msg);
        format!("{}:{}", self.name, B64.encode(sig.to_bytes()))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}:<redacted>)", self.name)
    }
}

impl PublicKey {
    /// Parses `name:base64(32 bytes)` (surrounding whitespace ignored: public keys are
    /// pasted from `nix.conf` and web pages, and Nix never reads them from here).
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split_named(s.trim())?;
        let arr: [u8; 32] = sized(name, bytes, "public", (64, |name| KeyError::SecretNotPublic { name }))?;
        let key = VerifyingKey::from_bytes(&arr).map_err(|_| KeyError::NotAPoint { name: name.to_owned() })?;
        Ok(Self { name: name.to_owned(), key })
    }

    /// Reads and parses a public key file (bounded like [`SecretKey::from_file`]).
    pub fn from_file(path: &Path) -> Result<Self, KeyFileError> {
        Self::parse(&read_key_file(path)?).map_err(|source| KeyFileError::Parse { path: path.to_owned(), source })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True if `signature` (`name:base64`) has this key's name and verifies over `msg`
    /// (strict verification: no malleable or small-order signatures).
    pub fn verifies(&self, msg: &[u8], signature: &str) -> bool {
        let Some((name, b64)) = signature.trim().split_once(':') else {
            return false;
        };
        if name != self.name {
            return false;
        }
        let Ok(bytes) = B64.decode(b64) else {
            return false;
        };
        let Ok(arr) = <[u8; 64]>::try_from(bytes) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&arr);
        self.key.verify_strict(msg, &sig).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, B64.encode(self.key.to_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// The bytes a narinfo signature covers:
/// `1;<store path>;sha256:<nix32 nar hash>;<nar size>;<ref>,<ref>,…` (references as full
/// store paths, sorted as Nix stores them).
pub fn narinfo_fingerprint(store_path: &str, nar_hash: &NarHash, nar_size: u64, references: &[String]) -> String {
    format!("1;{store_path};{};{nar_size};{}", nar_hash.to_nix32(), references.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A key pair made by `nix-store --generate-binary-cache-key test1 sk pk` (Nix 2.8),
    // and the signature Nix 2.8 put on the narinfo of a one-file store path.
    const PK: &str = "test1:fjYcuZjQVdZgKGeDy4UPE6TZkOtzYO0yGbMmrsf7aMc=";
    const PATH: &str = "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-sys";
    const NAR: &str = "sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h";
    const SIG: &str = "test1:b8W6YGeP9tqmZGtBwmaVz2C+Ar/Hpz1k6RJo/0nDnyHlgLRPmuSlsNfJlCy9nj6eG+Yqj9CwKI3Ra4LokLsWBw==";

    #[test]
    fn a_real_nix_narinfo_signature_verifies() {
        let pk = PublicKey::parse(PK).unwrap();
        let fp = narinfo_fingerprint(PATH, &NarHash::parse(NAR).unwrap(), 120, &[]);
        assert!(pk.verifies(fp.as_bytes(), SIG));
        assert!(!pk.verifies(fp.replace(";120;", ";121;").as_bytes(), SIG));
        assert!(!pk.verifies(fp.as_bytes(), &SIG.replace("test1:", "other:")));
    }

    #[test]
    fn sign_then_verify_and_redacted_debug() {
        let seed = [7u8; 32];
        let sk_bytes = {
            let k = SigningKey::from_bytes(&seed);
            let mut v = seed.to_vec();
            v.extend_from_slice(&k.verifying_key().to_bytes());
            v
        };
        let sk = SecretKey::parse(&format!("k1:{}", B64.encode(&sk_bytes))).unwrap();
        let sig = sk.sign(b"hello");
        assert!(sig.starts_with("k1:"));
        assert!(sk.public().verifies(b"hello", &sig));
        assert!(!sk.public().verifies(b"hellO", &sig));
        let pk2 = PublicKey::parse(&sk.public().to_string()).unwrap();
        let again = SecretKey::from_seed("k1", &seed).unwrap();
        assert_eq!(again.to_nix_format(), sk.to_nix_format());
        assert_eq!(pk2, sk.public());
        assert!(!format!("{sk:?}").contains(&B64.encode(&sk_bytes)[..10]));
    }

    #[test]
    fn malformed_keys_are_rejected_with_what_is_wrong() {
        for bad in ["", "nocolon", ":AAAA", "k:!!!", "k:AAAA"] {
            assert!(PublicKey::parse(bad).is_err(), "{bad}");
            assert!(SecretKey::parse(bad).is_err(), "{bad}");
        }
        let secret = SecretKey::from_seed("k1", &[7; 32]).unwrap();
        let sk = secret.to_nix_format();
        let pk = secret.public().to_string();
        let name = || "k1".to_owned();
        let secret_err = |s: &str| SecretKey::parse(s).err();
        assert_eq!(secret_err("\n"), Some(KeyError::Empty));
        assert_eq!(secret_err("garbage"), Some(KeyError::NoName));
        assert_eq!(secret_err(&pk), Some(KeyError::PublicNotSecret { name: name() }));
        assert_eq!(PublicKey::parse(&sk).err(), Some(KeyError::SecretNotPublic { name: name() }));
        assert_eq!(secret_err(&format!("{sk} ")), Some(KeyError::StrayCharacter("a space")));
        assert_eq!(secret_err(&format!("{sk}\r\n")), Some(KeyError::StrayCharacter("a carriage return")));
        assert_eq!(secret_err(&format!("{sk}\n{sk}\n")), Some(KeyError::MultipleLines));
        assert_eq!(PublicKey::parse("k 1:AAAA").err(), Some(KeyError::BadName("k 1".into())));
        assert_eq!(
            secret_err("k1:AAAA"),
            Some(KeyError::WrongLength { name: name(), what: "secret", found: 3, expected: 64 })
        );
        let mut mismatched = secret.key.to_bytes().to_vec();
        mismatched.extend_from_slice(&[1; 32]);
        assert_eq!(secret_err(&format!("k1:{}", B64.encode(&mismatched))), Some(KeyError::Mismatched { name: name() }));
        // What Nix writes (one line, a newline at the end) and pasted public keys parse.
        assert_eq!(SecretKey::parse(&format!("{sk}\n")).unwrap().to_nix_format(), sk);
        assert_eq!(PublicKey::parse(&format!("  {pk}\r\n")).unwrap(), secret.public());
        // No message shows key material.
        for e in [secret_err(&pk), PublicKey::parse(&sk).err()] {
            let text = e.unwrap().to_string();
            assert!(!text.contains(&sk[3..20]) && !text.contains(&pk[3..20]), "{text}");
        }
    }

    #[test]
    fn key_files_are_regular_files_of_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let secret = SecretKey::from_seed("k1", &[7; 32]).unwrap();
        let sk = dir.path().join("sk");
        std::fs::write(&sk, format!("{}\n", secret.to_nix_format())).unwrap();
        assert_eq!(SecretKey::from_file(&sk).unwrap().name(), "k1");
        let e = SecretKey::from_file(dir.path()).err().unwrap().to_string();
        assert_eq!(e, format!("{} is a directory, not a regular file", dir.path().display()));
        let e = SecretKey::from_file(Path::new("/dev/zero")).err().unwrap().to_string();
        assert_eq!(e, "/dev/zero is a character device, not a regular file");
        let big = dir.path().join("big");
        std::fs::write(&big, "k".repeat(MAX_KEY_FILE as usize + 1)).unwrap();
        assert!(matches!(SecretKey::from_file(&big), Err(KeyFileError::File(SmallFileError::TooLarge { .. }))));
        let pk = dir.path().join("pk");
        std::fs::write(&pk, secret.public().to_string()).unwrap();
        let e = SecretKey::from_file(&pk).err().unwrap();
        assert_eq!(e.to_string(), pk.display().to_string());
        let why = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(why.as_deref(), Some("key `k1` is a public key (32 bytes); a secret key (64 bytes) is needed here"));
    }
}
