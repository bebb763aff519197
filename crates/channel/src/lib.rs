//! `fleetgate-channel`: per-host *tested channels*.
//!
//! CI promotes a host's successfully built system: the closure goes to a binary cache
//! (signed, then re-read and its narinfo signatures verified with the public key), branch
//! `nixos-tested-<host>` is fast-forwarded to the built commit, and a signed manifest
//! (host, commit, system path, narHash, closure size, time, CI build) is published — in
//! the cache directory, as a git note on the branch tip, and over HTTP. Steps two and
//! three only happen after step one succeeded, so a host is never pointed at a closure the
//! cache does not have.
//!
//! Modules, one concept each:
//! - [`host`], [`commit`], [`store_path`]: validated inputs (no ref, option or path
//!   injection);
//! - [`secret`]: tokens from files or systemd credentials, never printed;
//! - [`lock`]: one promotion per repository at a time (flock, with a timeout);
//! - [`git`]: a bare mirror of the channel repository, driven with real git;
//! - [`branch`]: the fast-forward decision and the retrying, lease-protected push;
//! - [`cache`]: upload the closure and verify the cache really serves it, signed;
//! - [`manifest`]: the signed manifest format;
//! - [`promote`]: the whole promotion, used by every front end; [`progress`]: its steps;
//! - [`hydra`]: the Hydra RunCommand front end (`$HYDRA_JSON`);
//! - [`sync`]: promote hosts whose system is already cached (no-op commits);
//! - [`cli`]: `fleetgate channel …` (the HTTP service, `serve`, is the `fleetgate-server`
//!   crate: it calls [`promote::promote_with`] and publishes through [`promote::ManifestSink`]).

pub mod branch;
pub mod cache;
pub mod cli;
pub mod commit;
pub mod error;
pub mod git;
pub mod host;
pub mod hydra;
pub mod lock;
pub mod manifest;
pub mod progress;
pub mod promote;
pub mod secret;
pub mod store_path;
pub mod sync;

pub use commit::CommitId;
pub use error::ChannelError;
pub use host::HostName;
pub use manifest::{Manifest, SignedManifest};
pub use promote::{ChannelConfig, PromoteOutcome, PromoteRequest, promote};

/// Where a promotion's progress goes ([`progress::Progress`]: the CLI's display, the
/// server log, a buffer in tests — any `Fn(&str)`).
pub type Log<'a> = &'a dyn progress::Progress;
