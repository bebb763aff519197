//! The signed per-host manifest: what a host should run, and proof that CI said so.
//!
//! A [`SignedManifest`] is a JSON document
//! `{"format":"fleetgate-manifest-v1","manifest":"<JSON text>","signatures":["name:base64"]}`.
//! The `manifest` member is a *string* holding the manifest's JSON text, so the signed
//! bytes are exact and need no canonicalisation: each signature is ed25519 over
//! `b"fleetgate-manifest-v1\n"` followed by the UTF-8 bytes of that string, made with a
//! Nix signing key (`name:base64`, the same kind of key that signs the cache).
use serde::{Deserialize, Serialize};

use fleetgate_nix::{PublicKey, SecretKey};

use crate::error::ChannelError;

/// The format tag and domain-separation prefix of signed manifests.
pub const FORMAT: &str = "fleetgate-manifest-v1";

/// Largest manifest document read from a file (they are about 1 KiB).
pub const MAX_DOCUMENT: u64 = 1 << 20;

/// What a host should run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The host.
    pub host: String,
    /// Its channel branch.
    pub branch: String,
    /// The commit CI built.
    pub commit: String,
    /// The system's top-level store path.
    pub system: String,
    /// NAR hash of the top-level path (SRI, `sha256-…`).
    pub nar_hash: String,
    /// NAR size of the top-level path.
    pub nar_size: u64,
    /// Sum of the NAR sizes of the closure.
    pub closure_size: u64,
    /// Number of store paths in the closure.
    pub closure_paths: u64,
    /// The binary cache that holds the closure (without parameters).
    pub cache: String,
    /// Seconds since the Unix epoch when it was promoted.
    pub created_at: u64,
    /// The CI build that produced it (Hydra build URL, GitHub run URL, …).
    pub build: Option<String>,
}

/// A manifest with its signatures, as published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The manifest's JSON text (the signed payload).
    pub manifest: String,
    /// `name:base64` ed25519 signatures over [`SignedManifest::signed_bytes`].
    pub signatures: Vec<String>,
}

impl SignedManifest {
    /// Serialises and signs a manifest.
    pub fn sign(manifest: &Manifest, key: &SecretKey) -> Result<Self, ChannelError> {
        let text = serde_json::to_string(manifest).map_err(|e| ChannelError::ManifestFormat(e.to_string()))?;
        let signature = key.sign(&Self::bytes_for(&text));
        Ok(Self { format: FORMAT.to_owned(), manifest: text, signatures: vec![signature] })
    }

    fn bytes_for(text: &str) -> Vec<u8> {
        let mut v = Vec::with_capacity(FORMAT.len() + 1 + text.len());
        v.extend_from_slice(FORMAT.as_bytes());
        v.push(b'\n');
        v.extend_from_slice(text.as_bytes());
        v
    }

    /// The exact bytes the signatures cover.
    pub fn signed_bytes(&self) -> Vec<u8> {
        Self::bytes_for(&self.manifest)
    }

    /// Checks the format and a signature by `key`, then returns the manifest.
    pub fn verify(&self, key: &PublicKey) -> Result<Manifest, ChannelError> {
        if self.format != FORMAT {
            return Err(ChannelError::ManifestFormat(format!("unknown format {:?}", self.format)));
        }
        let bytes = self.signed_bytes();
        if !self.signatures.iter().any(|s| key.verifies(&bytes, s)) {
            return Err(ChannelError::ManifestSignature { key: key.name().to_owned() });
        }
        serde_json::from_str(&self.manifest).map_err(|e| ChannelError::ManifestFormat(e.to_string()))
    }

    /// Parses a published document.
    pub fn parse(bytes: &[u8]) -> Result<Self, ChannelError> {
        serde_json::from_slice(bytes).map_err(|e| ChannelError::ManifestFormat(e.to_string()))
    }

    /// The document as published (pretty JSON, trailing newline).
    pub fn to_document(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// The manifest without verifying (for display only).
    pub fn unverified(&self) -> Result<Manifest, ChannelError> {
        serde_json::from_str(&self.manifest).map_err(|e| ChannelError::ManifestFormat(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8, name: &str) -> SecretKey {
        SecretKey::from_seed(name, &[seed; 32]).unwrap()
    }

    fn sample() -> Manifest {
        Manifest {
            host: "web1".into(),
            branch: "nixos-tested-web1".into(),
            commit: "a".repeat(40),
            system: "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-sys".into(),
            nar_hash: "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=".into(),
            nar_size: 120,
            closure_size: 120,
            closure_paths: 1,
            cache: "file:///srv/cache".into(),
            created_at: 1_700_000_000,
            build: Some("https://hydra.example/build/1".into()),
        }
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let sk = key(0, "fleetgate-test");
        let doc = SignedManifest::sign(&sample(), &sk).unwrap();
        let parsed = SignedManifest::parse(&doc.to_document()).unwrap();
        assert_eq!(parsed.verify(&sk.public()).unwrap(), sample());
        assert!(parsed.signed_bytes().starts_with(b"fleetgate-manifest-v1\n{\"host\":\"web1\""));

        let mut forged = parsed.clone();
        forged.manifest = forged.manifest.replace("web1", "web2");
        assert!(matches!(forged.verify(&sk.public()), Err(ChannelError::ManifestSignature { .. })));
        assert!(parsed.verify(&key(1, "fleetgate-test").public()).is_err());
        let mut wrong_format = parsed;
        wrong_format.format = "v0".into();
        assert!(wrong_format.verify(&sk.public()).is_err());
        assert!(SignedManifest::parse(b"{").is_err());
    }
}
