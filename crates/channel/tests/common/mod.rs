//! Shared fixtures: real Nix, real git repositories, real servers on loopback.
#![allow(dead_code)]

mod bin;
pub mod postgres;
mod world;
#[allow(unused_imports)]
pub use bin::*;
#[allow(unused_imports)]
pub use world::*;
