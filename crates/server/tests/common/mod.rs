//! Shared fixtures: the channel tests' world (real Nix, git, keys, a cache) and the
//! service as a real process.
#![allow(dead_code)]

#[path = "../../../channel/tests/common/world.rs"]
mod world;
#[allow(unused_imports)]
pub use world::*;

mod serve_process;
#[allow(unused_imports)]
pub use serve_process::ServeProcess;
