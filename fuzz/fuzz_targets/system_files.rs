//! Feeds arbitrary bytes, split into the small files of a system toplevel,
//! a kernel's module metadata and a facts document, to fleetgate's bounded
//! readers and everything that parses what they read (`SystemToplevel`,
//! `ModuleIndex`, `Facts`, a whole check). Must never panic; a bounded read
//! must return the file or say it is too large.
//! Run: `cargo +nightly fuzz run system_files` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fleetgate_check::fuzzing::read_system_files(data));
