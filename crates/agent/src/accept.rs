//! Whether a fetched manifest may tell this host what to run. Accepted only
//! when every one of these holds, in this order (the first that fails is the
//! refusal, with a finding id):
//!
//! | check | refusal |
//! |---|---|
//! | it is a `fleetgate-manifest-v1` document | `manifest.malformed` |
//! | it carries a signature | `manifest.unsigned` |
//! | a signature verifies with a trusted key (over the exact signed bytes) | `manifest.bad-signature` |
//! | its payload parses: valid commit, top-level store path | `manifest.malformed` |
//! | it is for this host | `manifest.other-host` |
//! | it is not from the future (more than [`FUTURE_SLACK`] ahead of this clock) | `manifest.from-the-future` |
//! | it is newer than every manifest accepted before (`created_at`) — **never backwards**, also not to a replayed older signed manifest | `manifest.older` |
//!
//! The same document seen again is [`Verdict::Same`]. A manifest's age
//! (`now − created_at`) beyond `stale_after` makes it *stale*: still
//! accepted, but flagged in status, reports and metrics (a withheld update
//! or a dead CI looks like silence otherwise).

use fleetgate_channel::HostName;
use fleetgate_channel::manifest::{FORMAT, Manifest, SignedManifest};
use fleetgate_facts::{Finding, Severity};
use fleetgate_nix::PublicKey;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// How far ahead of this host's clock a manifest's time may be.
pub const FUTURE_SLACK: u64 = 3600;

/// A manifest accepted before, as the state remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The manifest.
    pub manifest: Manifest,
    /// SHA-256 of its signed payload (hex).
    pub digest: String,
    /// The key that verified it.
    pub signed_by: String,
}

/// What to do with a fetched document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A newer manifest for this host, signed by a trusted key.
    New(Box<Seen>),
    /// The manifest accepted last time, again.
    Same,
}

/// Why a manifest is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// `manifest.unsigned`, `manifest.bad-signature`, …
    pub id: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Refusal {
    fn new(id: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { id, message: message.into() }
    }

    /// As a finding (severity error), with what to do.
    #[must_use]
    pub fn finding(&self) -> Finding {
        let fix = match self.id {
            "manifest.unsigned" | "manifest.bad-signature" => {
                "Nothing was applied. If the channel's key changed, give the agent its new public key (trusted_keys); otherwise someone tampered with the manifest or its transport"
            }
            "manifest.older" => {
                "Nothing was applied. An older signed manifest was served again (a replay, or a stale mirror); the host stays where it is until a newer one comes"
            }
            "manifest.other-host" => "Nothing was applied. Check the agent's `host` and the manifest URL",
            "manifest.from-the-future" => "Nothing was applied. Check the clocks of this host and of CI (NTP)",
            _ => "Nothing was applied. Check what serves the manifest",
        };
        Finding::new(self.id, Severity::Error, self.message.clone()).with_fix(fix)
    }
}

/// SHA-256 (hex) of a manifest's payload.
#[must_use]
pub fn digest(payload: &str) -> String {
    hex::encode(sha2::Sha256::digest(payload.as_bytes()))
}

/// Decides about `document` (see the table above).
///
/// # Errors
/// The [`Refusal`].
pub fn accept(
    document: &[u8],
    keys: &[PublicKey],
    host: &HostName,
    newest: Option<&Seen>,
    now: u64,
) -> Result<Verdict, Refusal> {
    let doc = SignedManifest::parse(document).map_err(|e| {
        Refusal::new("manifest.malformed", format!("the manifest is not a signed manifest document: {e}"))
    })?;
    if doc.format != FORMAT {
        return Err(Refusal::new("manifest.malformed", format!("unknown manifest format {:?}", doc.format)));
    }
    if doc.signatures.is_empty() {
        return Err(Refusal::new("manifest.unsigned", "the manifest carries no signature"));
    }
    let bytes = doc.signed_bytes();
    let Some(key) = keys.iter().find(|k| doc.signatures.iter().any(|s| k.verifies(&bytes, s))) else {
        let names: Vec<&str> = keys.iter().map(PublicKey::name).collect();
        let signers: Vec<&str> = doc.signatures.iter().filter_map(|s| s.split_once(':').map(|(n, _)| n)).collect();
        return Err(Refusal::new(
            "manifest.bad-signature",
            format!(
                "no signature of the manifest verifies with a trusted key (trusted: {}; signed as: {}): it was altered, or signed by another key",
                names.join(", "),
                signers.join(", ")
            ),
        ));
    };
    let manifest: Manifest = serde_json::from_str(&doc.manifest)
        .map_err(|e| Refusal::new("manifest.malformed", format!("the signed payload is not a manifest: {e}")))?;
    if fleetgate_channel::CommitId::parse(&manifest.commit).is_err()
        || fleetgate_channel::store_path::validate(&manifest.system).is_err()
    {
        return Err(Refusal::new("manifest.malformed", "the manifest's commit or system path is not valid"));
    }
    if manifest.host != host.as_str() {
        return Err(Refusal::new(
            "manifest.other-host",
            format!("the manifest is for host {:?}, this is {}", manifest.host, host.as_str()),
        ));
    }
    if manifest.created_at > now.saturating_add(FUTURE_SLACK) {
        return Err(Refusal::new(
            "manifest.from-the-future",
            format!("the manifest was made at {} but this host's clock says {now}", manifest.created_at),
        ));
    }
    let seen = Seen { digest: digest(&doc.manifest), manifest, signed_by: key.name().to_owned() };
    match newest {
        Some(n) if n.digest == seen.digest => Ok(Verdict::Same),
        Some(n) if seen.manifest.created_at <= n.manifest.created_at => Err(Refusal::new(
            "manifest.older",
            format!(
                "the manifest (commit {}, made at {}) is not newer than the one accepted before (commit {}, made at {}): refused, the agent never goes backwards",
                short(&seen.manifest.commit),
                seen.manifest.created_at,
                short(&n.manifest.commit),
                n.manifest.created_at
            ),
        )),
        _ => Ok(Verdict::New(Box::new(seen))),
    }
}

/// The first 12 characters of a commit.
#[must_use]
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Seconds since the manifest was made.
#[must_use]
pub fn age(manifest: &Manifest, now: u64) -> u64 {
    now.saturating_sub(manifest.created_at)
}

#[cfg(test)]
mod tests {
    use fleetgate_nix::SecretKey;

    use super::*;

    fn sk(seed: u8) -> SecretKey {
        SecretKey::from_seed("cache.test-1", &[seed; 32]).expect("key")
    }

    fn manifest(host: &str, commit: char, at: u64) -> Manifest {
        Manifest {
            host: host.into(),
            branch: format!("nixos-tested-{host}"),
            commit: commit.to_string().repeat(40),
            system: "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-nixos-system-web1".into(),
            nar_hash: "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=".into(),
            nar_size: 1,
            closure_size: 1,
            closure_paths: 1,
            cache: "file:///srv/cache".into(),
            created_at: at,
            build: None,
        }
    }

    fn doc(m: &Manifest, key: &SecretKey) -> Vec<u8> {
        SignedManifest::sign(m, key).expect("signs").to_document()
    }

    fn host() -> HostName {
        HostName::parse("web1").expect("host")
    }

    fn refused(bytes: &[u8], newest: Option<&Seen>) -> &'static str {
        accept(bytes, &[sk(1).public()], &host(), newest, 2_000).expect_err("refused").id
    }

    #[test]
    fn a_signed_manifest_for_this_host_is_accepted_once() {
        let d = doc(&manifest("web1", 'a', 1_000), &sk(1));
        let Verdict::New(seen) = accept(&d, &[sk(9).public(), sk(1).public()], &host(), None, 2_000).expect("ok")
        else {
            panic!("new")
        };
        assert_eq!(seen.signed_by, "cache.test-1");
        assert_eq!(accept(&d, &[sk(1).public()], &host(), Some(&seen), 2_000), Ok(Verdict::Same));
        let newer = doc(&manifest("web1", 'b', 1_001), &sk(1));
        assert!(matches!(accept(&newer, &[sk(1).public()], &host(), Some(&seen), 2_000), Ok(Verdict::New(_))));
    }

    #[test]
    fn tampered_unsigned_other_host_older_and_future_manifests_are_refused() {
        let good = doc(&manifest("web1", 'a', 1_000), &sk(1));
        // Tampered: the payload changed after signing.
        let tampered = String::from_utf8(good.clone()).expect("utf8").replace("aaaa", "bbbb");
        assert_eq!(refused(tampered.as_bytes(), None), "manifest.bad-signature");
        // Signed by a key nobody trusts.
        assert_eq!(refused(&doc(&manifest("web1", 'a', 1_000), &sk(2)), None), "manifest.bad-signature");
        // No signature at all.
        let mut unsigned = SignedManifest::sign(&manifest("web1", 'a', 1_000), &sk(1)).expect("signs");
        unsigned.signatures.clear();
        assert_eq!(refused(&unsigned.to_document(), None), "manifest.unsigned");
        assert_eq!(refused(&doc(&manifest("web2", 'a', 1_000), &sk(1)), None), "manifest.other-host");
        assert_eq!(refused(&doc(&manifest("web1", 'a', 9_000), &sk(1)), None), "manifest.from-the-future");
        assert_eq!(refused(b"{", None), "manifest.malformed");
        // Replayed older, and another manifest of the same second.
        let Ok(Verdict::New(seen)) = accept(&good, &[sk(1).public()], &host(), None, 2_000) else { panic!("new") };
        assert_eq!(refused(&doc(&manifest("web1", 'c', 999), &sk(1)), Some(&seen)), "manifest.older");
        assert_eq!(refused(&doc(&manifest("web1", 'c', 1_000), &sk(1)), Some(&seen)), "manifest.older");
        let f = Refusal::new("manifest.older", "x").finding();
        assert_eq!((f.id.as_str(), f.severity), ("manifest.older", Severity::Error));
    }
}
