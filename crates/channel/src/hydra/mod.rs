//! The Hydra front end: a drop-in command for Hydra's RunCommand plugin.
//!
//! - [`event`]: the `$HYDRA_JSON` schema, exactly as `RunCommand.pm` writes it;
//! - [`revision`]: which commit a build was made from;
//! - [`hook`]: the decision (act or skip, and why) and the promotion.
pub mod event;
pub mod hook;
pub mod revision;
