//! The closure: is it in a trusted binary cache, signed (checked here, with
//! ed25519 over each narinfo's fingerprint, not inferred from Nix's exit
//! code), and then realised into this host's store by *substitution only*.
//!
//! The agent never evaluates Nix and never builds: the only Nix commands it
//! runs are `nix --version`, `nix path-info --store <cache>` and
//! `nix-store --realise <top-level path>` with `max-jobs = 0` and no
//! builders — a path that is not substitutable fails instead of building —
//! and signatures required (`require-sigs`, `trusted-public-keys` = the
//! configured cache keys, passed per invocation, `nix.conf` untouched).
//! The narinfo caches' TTLs are 0, so a promotion seconds ago is seen and a
//! narinfo changed in the cache is read again.

use std::path::PathBuf;
use std::time::Duration;

use fleetgate_nix::{Nix, NixError, PathInfo, PublicKey, StoreUri};

/// The GC root that keeps the realised desired system alive until applied.
pub const DESIRED_ROOT: &str = "/nix/var/nix/gcroots/fleetgate/agent-desired";

/// What the cache holds for a system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// The cache that holds it.
    pub cache: String,
    /// Paths in the closure.
    pub paths: u64,
    /// Sum of their NAR sizes.
    pub nar_bytes: u64,
}

/// Why the closure cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The caches answered, and the closure is not acceptable: missing,
    /// unsigned, or not what the manifest says. Not retried for this manifest.
    #[error("{message}")]
    Refused {
        /// `closure.missing`, `closure.unsigned`, `closure.hash-mismatch`.
        id: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No answer, a timeout, a failed download: tried again later.
    #[error("{0}")]
    Unavailable(String),
}

/// The store operations the agent needs.
pub trait Store {
    /// Checks that a cache holds the whole closure of `system`, each narinfo
    /// signed by a trusted key, and the top-level NAR hash is `nar_hash`.
    ///
    /// # Errors
    /// [`StoreError`].
    fn verify(&mut self, system: &str, nar_hash: &str) -> Result<Closure, StoreError>;
    /// Whether `system` is valid in this host's store already.
    fn is_local(&mut self, system: &str) -> bool;
    /// Substitutes the closure into this host's store (never builds).
    ///
    /// # Errors
    /// [`StoreError`].
    fn realise(&mut self, system: &str) -> Result<(), StoreError>;
}

/// The real store: Nix's command-line tools on this host.
#[derive(Debug, Clone)]
pub struct NixStore {
    query: Nix,
    realise: Nix,
    caches: Vec<StoreUri>,
    keys: Vec<PublicKey>,
}

impl NixStore {
    /// Nix from `bin_dir` (default: `PATH`, then `/run/current-system/sw/bin`),
    /// with the options that forbid building and require signatures by `keys`.
    ///
    /// # Errors
    /// [`NixError`] when no usable Nix is found.
    pub fn new(
        bin_dir: Option<PathBuf>,
        caches: Vec<StoreUri>,
        keys: Vec<PublicKey>,
        cache_dir: PathBuf,
        query_timeout: Duration,
        realise_timeout: Duration,
    ) -> Result<NixStore, NixError> {
        let nix = match bin_dir {
            Some(d) => Nix::detect_in(Some(d))?,
            None => Nix::detect().or_else(|_| Nix::detect_in(Some(PathBuf::from("/run/current-system/sw/bin"))))?,
        };
        let substituters: Vec<String> = caches.iter().map(ToString::to_string).collect();
        let trusted: Vec<String> = keys.iter().map(public_key_text).collect();
        let nix = nix
            .with_option("substituters", &substituters.join(" "))
            .with_option("trusted-public-keys", &trusted.join(" "))
            .with_option("require-sigs", "true")
            .with_option("max-jobs", "0")
            .with_option("builders", "")
            .with_option("narinfo-cache-negative-ttl", "0")
            .with_option("narinfo-cache-positive-ttl", "0")
            .with_env("XDG_CACHE_HOME", &cache_dir);
        let nix = if std::env::var_os("HOME").is_none() { nix.with_env("HOME", "/root") } else { nix };
        Ok(NixStore {
            query: nix.clone().with_timeout(query_timeout),
            realise: nix.with_timeout(realise_timeout),
            caches,
            keys,
        })
    }

    fn verify_in(&self, cache: &StoreUri, system: &str, nar_hash: &str) -> Result<Option<Closure>, StoreError> {
        let one = vec![system.to_owned()];
        let unavailable = |e: NixError| StoreError::Unavailable(format!("asking {} for {system}: {e}", cache.base()));
        let (top, missing) = self.query.path_info(Some(cache), &one, false, false).map_err(unavailable)?;
        if !missing.is_empty() || top.is_empty() {
            return Ok(None);
        }
        let infos = match self.query.path_info(Some(cache), &one, true, false) {
            Ok((infos, missing)) if missing.is_empty() => infos,
            Ok((_, missing)) => return Err(missing_paths(cache, &missing)),
            // A narinfo of the closure missing makes `path-info -r` fail: find which.
            Err(e) => return self.walk(cache, system).and_then(|_| Err(unavailable(e))),
        };
        check_closure(cache, system, nar_hash, &infos, &self.keys).map(Some)
    }

    /// Walks the closure level by level (one `path-info` per level) to name
    /// the paths the cache lacks.
    fn walk(&self, cache: &StoreUri, system: &str) -> Result<(), StoreError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut level = vec![system.to_owned()];
        while !level.is_empty() {
            let (infos, missing) = self
                .query
                .path_info(Some(cache), &level, false, false)
                .map_err(|e| StoreError::Unavailable(format!("asking {}: {e}", cache.base())))?;
            if !missing.is_empty() {
                return Err(missing_paths(cache, &missing));
            }
            seen.extend(level.drain(..));
            level = infos.into_iter().flat_map(|i| i.references).filter(|r| !seen.contains(r)).collect();
            level.sort();
            level.dedup();
        }
        Ok(())
    }
}

fn public_key_text(k: &PublicKey) -> String {
    k.to_string()
}

fn missing_paths(cache: &StoreUri, missing: &[String]) -> StoreError {
    StoreError::Refused {
        id: "closure.missing",
        message: format!(
            "{} lacks {} path(s) of the closure ({}): refused, the host fetches only a complete, signed closure",
            cache.base(),
            missing.len(),
            missing.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Checks the closure's narinfos as the cache served them: each signed by
/// one of `keys`, and the top-level NAR hash the manifest's.
///
/// # Errors
/// [`StoreError::Refused`].
pub fn check_closure(
    cache: &StoreUri,
    system: &str,
    nar_hash: &str,
    infos: &[PathInfo],
    keys: &[PublicKey],
) -> Result<Closure, StoreError> {
    if let Some(bad) = infos.iter().find(|i| !keys.iter().any(|k| i.is_signed_by(k))) {
        return Err(StoreError::Refused {
            id: "closure.unsigned",
            message: format!(
                "{}'s narinfo for {} is not signed by a trusted cache key ({}): refused",
                cache.base(),
                bad.path,
                keys.iter().map(PublicKey::name).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let top = infos.iter().find(|i| i.path == system).ok_or_else(|| StoreError::Refused {
        id: "closure.missing",
        message: format!("{} does not list {system} in its closure", cache.base()),
    })?;
    let want = fleetgate_nix::hash::NarHash::parse(nar_hash).ok();
    if want.is_none() || top.nar_hash() != want {
        return Err(StoreError::Refused {
            id: "closure.hash-mismatch",
            message: format!(
                "{} serves {system} with NAR hash {}, the manifest says {nar_hash}: refused",
                cache.base(),
                top.nar_hash
            ),
        });
    }
    Ok(Closure {
        cache: cache.base().to_owned(),
        paths: infos.len() as u64,
        nar_bytes: infos.iter().map(|i| i.nar_size).sum(),
    })
}

impl Store for NixStore {
    fn verify(&mut self, system: &str, nar_hash: &str) -> Result<Closure, StoreError> {
        let mut unavailable = Vec::new();
        for cache in &self.caches {
            match self.verify_in(cache, system, nar_hash) {
                Ok(Some(c)) => return Ok(c),
                Ok(None) => {}
                Err(StoreError::Unavailable(e)) => unavailable.push(e),
                Err(refused) => return Err(refused),
            }
        }
        if unavailable.is_empty() {
            let caches: Vec<&str> = self.caches.iter().map(StoreUri::base).collect();
            Err(StoreError::Refused {
                id: "closure.missing",
                message: format!("no cache ({}) has {system}: refused", caches.join(", ")),
            })
        } else {
            Err(StoreError::Unavailable(unavailable.join("; ")))
        }
    }

    fn is_local(&mut self, system: &str) -> bool {
        matches!(self.query.path_info(None, &[system.to_owned()], false, false), Ok((found, _)) if !found.is_empty())
    }

    fn realise(&mut self, system: &str) -> Result<(), StoreError> {
        if let Some(dir) = std::path::Path::new(DESIRED_ROOT).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        self.realise
            .legacy("nix-store")
            .args(["--realise", system, "--add-root", DESIRED_ROOT])
            .run()
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(format!("fetching {system} from the cache failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use fleetgate_nix::SecretKey;

    use super::*;

    #[test]
    fn a_closure_is_accepted_only_signed_and_with_the_manifests_hash() {
        let sk = SecretKey::from_seed("cache.test-1", &[3; 32]).expect("key");
        let cache = StoreUri::parse("http://cache.example").expect("uri");
        let path = "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-sys";
        let hash = "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=";
        let mut info = PathInfo {
            path: path.into(),
            nar_hash: hash.into(),
            nar_size: 120,
            references: vec![],
            closure_size: None,
            signatures: vec![],
            deriver: None,
            url: None,
        };
        let fp = info.fingerprint().expect("fingerprint");
        info.signatures.push(sk.sign(fp.as_bytes()));
        let keys = [sk.public()];
        let ok = check_closure(&cache, path, hash, std::slice::from_ref(&info), &keys).expect("accepted");
        assert_eq!((ok.paths, ok.nar_bytes), (1, 120));
        let other = "sha256-AAAArtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=";
        let e = check_closure(&cache, path, other, std::slice::from_ref(&info), &keys).expect_err("hash");
        assert!(matches!(e, StoreError::Refused { id: "closure.hash-mismatch", .. }), "{e:?}");
        let mut unsigned = info.clone();
        unsigned.signatures.clear();
        let e = check_closure(&cache, path, hash, &[unsigned], &keys).expect_err("unsigned");
        assert!(matches!(e, StoreError::Refused { id: "closure.unsigned", .. }), "{e:?}");
        let stranger = SecretKey::from_seed("other-1", &[4; 32]).expect("key").public();
        let e = check_closure(&cache, path, hash, &[info], &[stranger]).expect_err("other key");
        assert!(matches!(e, StoreError::Refused { id: "closure.unsigned", .. }), "{e:?}");
    }
}
