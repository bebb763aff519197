//! Nix's ed25519 signing keys (`name:base64`) and narinfo signatures.
//!
//! A Nix secret key is `name:base64(seed ‖ public)` (64 bytes), a public key is
//! `name:base64(public)` (32 bytes), a signature is `name:base64(sig)` (64 bytes). The same
//! keys sign narinfos (over [`narinfo_fingerprint`]) and anything else an operator wants
//! to authenticate with the key they already trust.
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::error::NixError;
use crate::hash::NarHash;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

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

fn split_named(s: &str) -> Result<(&str, Vec<u8>), NixError> {
    let s = s.trim();
    let (name, b64) = s.split_once(':').ok_or_else(|| NixError::Key("expected `name:base64`".into()))?;
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == ':') {
        return Err(NixError::Key("key name is empty or has whitespace".into()));
    }
    let bytes = B64.decode(b64).map_err(|_| NixError::Key(format!("key `{name}` is not valid base64")))?;
    Ok((name, bytes))
}

fn read(path: &Path) -> Result<String, NixError> {
    std::fs::read_to_string(path).map_err(|source| NixError::Read { path: path.to_owned(), source })
}

impl SecretKey {
    /// Parses `name:base64(64 bytes)` as written by `nix-store --generate-binary-cache-key`.
    pub fn parse(s: &str) -> Result<Self, NixError> {
        let (name, bytes) = split_named(s)?;
        let arr: [u8; 64] =
            bytes.try_into().map_err(|_| NixError::Key(format!("secret key `{name}` must decode to 64 bytes")))?;
        let key = SigningKey::from_keypair_bytes(&arr)
            .map_err(|_| NixError::Key(format!("secret key `{name}`: its public half does not match its seed")))?;
        Ok(Self { name: name.to_owned(), key })
    }

    /// A key from a 32-byte seed (for tests and for callers with their own randomness).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NixError> {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == ':') {
            return Err(NixError::Key("key name is empty or has whitespace".into()));
        }
        Ok(Self { name: name.to_owned(), key: SigningKey::from_bytes(seed) })
    }

    /// The key in Nix's secret-key file format, `name:base64(seed ‖ public)`.
    pub fn to_nix_format(&self) -> String {
        let mut bytes = self.key.to_bytes().to_vec();
        bytes.extend_from_slice(&self.key.verifying_key().to_bytes());
        format!("{}:{}", self.name, B64.encode(bytes))
    }

    /// Reads and parses a secret key file.
    pub fn from_file(path: &Path) -> Result<Self, NixError> {
        Self::parse(&read(path)?)
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
    /// Parses `name:base64(32 bytes)`.
    pub fn parse(s: &str) -> Result<Self, NixError> {
        let (name, bytes) = split_named(s)?;
        let arr: [u8; 32] =
            bytes.try_into().map_err(|_| NixError::Key(format!("public key `{name}` must decode to 32 bytes")))?;
        let key = VerifyingKey::from_bytes(&arr)
            .map_err(|_| NixError::Key(format!("public key `{name}` is not a curve point")))?;
        Ok(Self { name: name.to_owned(), key })
    }

    /// Reads and parses a public key file.
    pub fn from_file(path: &Path) -> Result<Self, NixError> {
        Self::parse(&read(path)?)
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
    fn malformed_keys_are_rejected() {
        for bad in ["", "nocolon", ":AAAA", "k:!!!", "k:AAAA"] {
            assert!(PublicKey::parse(bad).is_err(), "{bad}");
            assert!(SecretKey::parse(bad).is_err(), "{bad}");
        }
    }
}
