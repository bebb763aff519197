//! `fleetgate-deploy`: push a flake's NixOS systems to many hosts without
//! ever leaving one unbootable.
//!
//! A run ([`fleet::Deployer`]) evaluates and builds every selected host's
//! toplevel once ([`build`]), then deploys host by host in waves
//! ([`options::Strategy`]: all, canary, waves), each host through
//! [`host::deploy_host`]:
//!
//! 1. a lock on the target (`mkdir /run/fleetgate/lock`) over the host's
//!    shared connection, logged in ahead of its turn ([`ahead`]), then a
//!    verified reboot left pending by a run that died is finished first;
//! 2. facts and a plan ([`plan`]: `fleetgate check` decides `switch`,
//!    `boot` or `blocked`; blocked plans are not deployed without `--force`);
//! 3. `nix copy --to ssh://…` ([`copy`]), its progress in NAR bytes on the
//!    bus ([`events::EventKind::CopyProgress`]);
//! 4. the apply engine (`fleetgate-apply`) over SSH ([`remote`]): a **live
//!    switch with magic rollback** or a **verified reboot** whose fallback
//!    is the generation that booted on this hardware;
//! 5. a record: history in SQLite ([`history`]) and a GC root for the last
//!    generation that booted healthy.
//!
//! Progress goes over an event bus ([`events`]); the result is a
//! [`report::RunReport`] whose exit code says whether every host is on a
//! known-good generation. Hosts come from the flake and `fleetgate.toml`
//! ([`inventory`], [`config`], [`select`]).

pub mod ahead;
pub mod build;
pub mod config;
pub mod copy;
pub mod error;
pub mod events;
pub mod fleet;
pub mod history;
pub mod history_query;
pub mod host;
pub mod inventory;
pub mod options;
pub mod plan;
pub mod remote;
pub mod report;
pub mod rollback;
pub mod select;

pub use error::DeployError;
pub use fleet::Deployer;
pub use inventory::{Host, Inventory};
pub use options::{DeployOptions, Strategy, Timeouts};
pub use plan::{Action, CheckPlanner, FleetPlanner, Plan, Planner};
pub use report::{HostReport, Outcome, RunReport, Standing};
