//! `fleetgate-apply`: the one engine for every way a host changes
//! generation. It knows nothing of fleets, CLIs or flakes: given a host
//! ([`machine::Machine`]), an old and a new system and what "healthy" means,
//! it runs
//!
//! - a **live switch with magic rollback** ([`switch::live_switch`]),
//! - a **verified reboot** ([`reboot::verified_reboot`]): boot once → wait for
//!   a new boot id → verify the booted system and health → bless, or fall
//!   back → restore,
//! - the **one restore path** ([`reboot::restore`]), whose result is typed
//!   ([`outcome::Restored`]) and always reported,
//! - the **resume** of a pending intent ([`reboot::resume`], [`intent`]),
//!   by whoever sees the host come back: the waiting deployer, the next
//!   deploy, or the host itself at boot.
//!
//! Each protocol is an explicit state machine whose table of states and exits
//! sits at the top of its module. `deploy` drives the engine over SSH
//! ([`remote::ScriptMachine`] on an SSH connector); the agent drives it on the
//! host itself (the same scripts over the local transport). The scripts find
//! their tools in the `sw/bin` of the systems they act on, never in an
//! inherited `PATH` ([`scripts`]). Every failure exit is a unit test against
//! [`fake::FakeMachine`].

pub mod bootloader;
pub mod fake;
pub mod health;
pub mod intent;
pub mod machine;
pub mod opening;
pub mod outcome;
pub mod reboot;
pub mod remote;
pub mod scripts;
pub mod switch;
pub mod systemd_boot;
pub mod testing;

pub use machine::{Machine, MachineError};
pub use outcome::{Observer, Outcome, Restored, Standing, Step};
