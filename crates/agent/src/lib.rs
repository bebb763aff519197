//! `fleetgate-agent`: the pull side of fleetgate. A host upgrades itself to
//! its *tested* build only: it polls its signed manifest (ETag, jitter,
//! backoff), accepts it only when signed by a trusted key, for this host and
//! newer than anything it accepted before, checks that a trusted cache holds
//! the whole closure signed, realises it by substitution only (never
//! evaluating Nix, never building), runs the same pre-flight as `deploy`
//! against its own live facts, and applies it through the apply engine
//! (`fleetgate-apply`): a live switch with magic rollback and health checks
//! (including "can I still reach the server and the caches?"), or a verified
//! reboot inside a reboot window. It remembers store paths that failed here
//! and never retries them; a newer tested commit heals the host by itself.
//! It reports after every attempt, queueing reports while the server is away.
//!
//! Modules, one concept each:
//! - [`config`]: the file and flags, checked once;
//! - [`source`], [`http`]: fetching the manifest;
//! - [`accept`]: whether a manifest may be believed (signature, host, never backwards);
//! - [`store`]: the closure in the cache, signed, realised without building;
//! - [`host`]: this host as the engine and the pre-flight see it;
//! - [`cycle`]: one poll, start to end — the agent's state machine;
//! - [`recover`]: an attempt the agent did not live to finish;
//! - [`state`]: what survives polls and reboots, written atomically;
//! - [`report`], [`queue`]: what the server is told, and when it is away;
//! - [`window`], [`backoff`]: when to reboot, when to poll;
//! - [`metrics`]: Prometheus text (a file, or a loopback port);
//! - [`daemon`]: the loop, signals, one agent per host;
//! - [`status`]: `fleetgate agent status`.

pub mod accept;
pub mod agent;
pub mod backoff;
pub mod config;
pub mod cycle;
pub mod daemon;
pub mod fake;
pub mod host;
pub mod http;
pub mod metrics;
pub mod queue;
pub mod recover;
pub mod report;
pub mod source;
pub mod state;
pub mod status;
pub mod store;
pub mod window;
