//! `fleetgate-status`: one status model for the fleet, used by `fleetgate status` and by
//! the server's API and dashboard.
//!
//! Per host the model holds the four truths side by side — what CI says it should run
//! (the desired system: the signed manifest, or the last deploy), what it runs
//! (`/run/current-system`), what it booted (`/run/booted-system`) and what it boots next
//! (the boot loader's default entry) — plus boot debt (generations made default but never
//! booted), a pending reboot and why, the last result with its findings, when it was last
//! seen, the manifest's age and the agent's version, and a [`State`] in one word.
//!
//! Modules, one concept each:
//! - [`report`]: the report an agent sends to the server (`{"v":2,…}`; the old
//!   `{"status",…}` is accepted as version 1), validated and bounded — an API boundary;
//! - [`model`]: [`HostStatus`] and its parts;
//! - [`state`]: the state word, its precedence and how it is derived;
//! - [`live`]: the same truths read from a host's live facts (`fleetgate-facts`);
//! - [`fleet`]: the fleet (selection, summary, exit code) and its JSON document;
//! - [`render`]: the terminal table (80 columns) and plain lines.

pub mod fleet;
pub mod live;
pub mod merge;
pub mod model;
pub mod render;
pub mod report;
pub mod state;

pub use fleet::{FleetStatus, Summary};
pub use model::{
    BootDebt, DefaultEntry, Desired, DesiredSource, GenerationRecord, HostStatus, LastResult, Outcome, PendingReboot,
    RebootReason, Source,
};
pub use report::{AgentReport, ReportError};
pub use state::{State, Thresholds};
