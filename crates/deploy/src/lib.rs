//! `fleetgate-deploy`: push a flake's NixOS systems to many hosts without
//! ever leaving one unbootable.
//!
//! A run ([`fleet::Deployer`]) evaluates and builds every selected host's
//! toplevel once ([`build`]), then deploys host by host in waves
//! ([`options::Strategy`]: all, canary, waves), each host through
//! [`host::deploy_host`]:
//!
//! 1. a lock on the target ([`lock`]: `mkdir /run/fleetgate/lock`);
//! 2. facts and a plan ([`plan`]: `fleetgate check` decides `switch`,
//!    `boot` or `blocked`; blocked plans are not deployed without `--force`);
//! 3. `nix copy --to ssh://…` ([`copy`]), its progress in NAR bytes on the
//!    bus ([`events::EventKind::CopyProgress`]);
//! 4. either a **live switch with magic rollback** ([`switch`]: a detached
//!    watchdog on the target rolls back unless confirmed over a new SSH
//!    connection after health checks), or a **verified reboot**
//!    ([`reboot`], [`bootonce`]: the new generation boots once, becomes the
//!    default only when healthy; otherwise back to the previous generation,
//!    after a power-cycle if need be);
//! 5. a record: history in SQLite ([`history`]) and a GC root for the last
//!    generation that booted healthy.
//!
//! Progress goes over an event bus ([`events`]); the result is a
//! [`report::RunReport`] whose exit code says whether every host is on a
//! known-good generation. Hosts come from the flake and `fleetgate.toml`
//! ([`inventory`], [`config`], [`select`]).

pub mod bootonce;
pub mod build;
pub mod config;
pub mod copy;
pub mod error;
pub mod events;
pub mod fleet;
pub mod health;
pub mod history;
pub mod history_query;
pub mod host;
pub mod inventory;
pub mod lock;
pub mod options;
pub mod plan;
pub mod reboot;
pub mod remote;
pub mod report;
pub mod select;
pub mod switch;

pub use error::DeployError;
pub use fleet::Deployer;
pub use inventory::{Host, Inventory};
pub use options::{DeployOptions, Strategy, Timeouts};
pub use plan::{Action, CheckPlanner, Plan, Planner};
pub use report::{HostReport, Outcome, RunReport, Standing};
