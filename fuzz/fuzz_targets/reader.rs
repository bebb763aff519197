//! Feeds arbitrary bytes to the initramfs reader: iterate every entry, read
//! every byte of data, run the module finder. Must never panic.
//! Run: `cargo +nightly fuzz run reader` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fleetgate_initrd::fuzzing::read_everything(data));
