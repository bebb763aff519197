//! `fleetgate-nix`: a small, typed wrapper over the real Nix command-line tools.
//!
//! It knows nothing about fleets. It runs `nix`, `nix-store` and friends as child
//! processes, always with a timeout (the child's whole process group is killed when it
//! expires), and turns their output into typed values:
//!
//! - [`Nix`] detects the installed version ([`NixVersion`], Nix 2.8 is the floor) and builds
//!   invocations that pass `--extra-experimental-features 'nix-command flakes'` per call,
//!   so a stock `nix.conf` is never edited;
//! - [`PathInfo`] parses `nix path-info --json` in both shapes (a list up to 2.18, an
//!   object keyed by store path later);
//! - [`Nix::copy_to_with_progress`] runs `nix copy` with `--log-format internal-json` and
//!   reports [`CopyProgress`] (NAR bytes sent) as Nix goes ([`copy_progress`]);
//! - [`StoreUri`] handles store URIs and their query parameters (`secret-key`, …);
//! - [`keys`] reads and writes Nix's `name:base64` ed25519 key format, computes narinfo
//!   fingerprints and verifies narinfo signatures without trusting Nix to do it;
//! - [`small_file`] reads small input files (keys, events, tokens) safely: regular files
//!   only, bounded;
//! - [`process`] re-exports the timeout-bounded process runner everything above uses
//!   (the `fleetgate-process` crate), which callers can use for other tools (git) too.
//!
//! Every error carries the command line (never its environment, where secrets live) and
//! the tail of the child's stderr.

pub mod closures;
pub mod copy_progress;
pub mod error;
pub mod hash;
pub mod keys;
pub mod nix;
pub mod path_info;
pub mod process;
pub mod small_file;
pub mod store_uri;
pub mod version;

pub use closures::Closures;
pub use copy_progress::CopyProgress;
pub use error::{NixError, ProcessError};
pub use keys::{KeyError, KeyFileError, PublicKey, SecretKey, narinfo_fingerprint};
pub use nix::{CopyOptions, Nix};
pub use path_info::PathInfo;
pub use small_file::{SmallFileError, read_small_file};
pub use store_uri::StoreUri;
pub use version::NixVersion;
