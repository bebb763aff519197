//! placeholder: per-host tested channels.
pub mod cli;
