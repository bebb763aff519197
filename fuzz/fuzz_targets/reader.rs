//! Feeds arbitrary bytes to the initramfs reader: iterate every entry, read
//! every byte of data, run the module finder. Must never panic.
//! Run: `cargo +nightly fuzz run reader` (from the repository root).
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = fleetgate_initrd::Reader::new(data);
    let mut scan = fleetgate_initrd::ModuleScan::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.next_entry() {
            Ok(Some(mut entry)) => {
                scan.add(entry.entry());
                while let Ok(n) = entry.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = e.to_string();
                break;
            }
        }
    }
    let _ = scan.finish();
});
