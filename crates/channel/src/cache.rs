//! Step one of a promotion: the closure goes to the binary cache, and is then read back
//! *from the cache* — every path present, every narinfo signed by the expected key,
//! checked here with ed25519 rather than trusting a zero exit code.
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use fleetgate_nix::{CopyOptions, Nix, PathInfo, PublicKey, StoreUri};

use crate::Log;
use crate::error::ChannelError;
use crate::progress::{Step, human_bytes};

/// What the cache holds for a system, after verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheFacts {
    /// NAR hash of the top-level path (as the cache reports it).
    pub nar_hash: String,
    /// NAR size of the top-level path.
    pub nar_size: u64,
    /// Sum of NAR sizes over the closure.
    pub closure_size: u64,
    /// Paths in the closure.
    pub closure_paths: u64,
    /// True if this run uploaded it (false: it was only verified).
    pub uploaded: bool,
}

/// Uploads the closure of `system` (when it is in the local store) to `cache`, signing
/// with `secret_key_file`, then verifies the cache serves the whole closure signed by
/// `public`. When `system` is not in the local store, only verifies.
pub fn upload_and_verify(
    nix: &Nix,
    cache: &StoreUri,
    system: &str,
    secret_key_file: &Path,
    public: &PublicKey,
    log: Log<'_>,
) -> Result<CacheFacts, ChannelError> {
    let sys = vec![system.to_owned()];
    let (_, not_local) = nix.path_info(None, &sys, false, false).map_err(ChannelError::Nix)?;
    let local = not_local.is_empty();
    let closure: Vec<String> = if local {
        log.step(Step::Upload, &format!("{system} to {}", cache.base()));
        upload(nix, cache, &sys, secret_key_file, log)?;
        let (infos, _) = nix.path_info(None, &sys, true, false).map_err(ChannelError::Nix)?;
        infos.into_iter().map(|i| i.path).collect()
    } else {
        log.step(Step::Upload, &format!("skipped: {system} is not in the local store, {} must have it", cache.base()));
        let (_, absent) = nix.path_info(Some(cache), &sys, false, false).map_err(ChannelError::Nix)?;
        if !absent.is_empty() {
            return Err(ChannelError::SystemMissing { path: system.to_owned(), cache: cache.base().to_owned() });
        }
        let (infos, _) = nix.path_info(Some(cache), &sys, true, false).map_err(|_| ChannelError::CacheIncomplete {
            cache: cache.base().to_owned(),
            missing: vec![format!("(part of the closure of {system})")],
        })?;
        infos.into_iter().map(|i| i.path).collect()
    };
    log.step(Step::Verify, &format!("{} path(s) in {}, signed by {}", closure.len(), cache.base(), public.name()));
    verify(nix, cache, system, &closure, public, !local)
}

/// `nix copy` of the closure to the cache, signing it, with byte counts as it goes. For a
/// `file://` cache the total (what the cache lacks) is asked before the copy starts; for
/// others that would be one more narinfo request per path (`nix path-info` asks them one
/// after the other), so the total is known only if Nix says it.
fn upload(
    nix: &Nix,
    cache: &StoreUri,
    sys: &[String],
    secret_key_file: &Path,
    log: Log<'_>,
) -> Result<(), ChannelError> {
    let started = Instant::now();
    let opts = CopyOptions { secret_key_file: Some(secret_key_file.to_owned()), ..CopyOptions::default() };
    let local_cache = cache.file_path().is_some();
    let mut lacking = |closure: &[String]| -> Option<BTreeSet<String>> {
        if !local_cache {
            return None;
        }
        nix.path_info(Some(cache), closure, false, false).ok().map(|(_, missing)| missing.into_iter().collect())
    };
    let end = nix
        .copy_to_with_progress(cache, sys, &opts, &mut lacking, &mut |p| log.bytes(p.done_bytes, p.expected_bytes))
        .map_err(|source| ChannelError::CacheUpload { cache: cache.base().to_owned(), source })?;
    let took = started.elapsed().as_secs_f64();
    match end.paths_done {
        0 => log.note(&format!("uploaded nothing: {} had every path", cache.base())),
        n => log.note(&format!("uploaded {} ({n} path(s)) in {took:.1} s", human_bytes(end.done_bytes))),
    }
    Ok(())
}

fn verify(
    nix: &Nix,
    cache: &StoreUri,
    system: &str,
    closure: &[String],
    public: &PublicKey,
    uploaded_elsewhere: bool,
) -> Result<CacheFacts, ChannelError> {
    let (infos, missing) = nix.path_info(Some(cache), closure, false, false).map_err(ChannelError::Nix)?;
    if !missing.is_empty() {
        return Err(ChannelError::CacheIncomplete { cache: cache.base().to_owned(), missing });
    }
    if let Some(bad) = infos.iter().find(|i| !i.is_signed_by(public)) {
        return Err(ChannelError::CacheSignature {
            cache: cache.base().to_owned(),
            path: bad.path.clone(),
            key: public.name().to_owned(),
        });
    }
    let top: &PathInfo = infos.iter().find(|i| i.path == system).ok_or_else(|| ChannelError::CacheIncomplete {
        cache: cache.base().to_owned(),
        missing: vec![system.to_owned()],
    })?;
    let nar_hash = top.nar_hash().map(|h| h.to_sri()).unwrap_or_else(|| top.nar_hash.clone());
    Ok(CacheFacts {
        nar_hash,
        nar_size: top.nar_size,
        closure_size: infos.iter().map(|i| i.nar_size).sum(),
        closure_paths: infos.len() as u64,
        uploaded: !uploaded_elsewhere,
    })
}
