//! Not part of the API: the harness shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/reader.rs`) and the deterministic mutation test
//! (`tests/mutations.rs`), so both exercise the reader the same way.

use std::io::Read;

use crate::{ModuleScan, Reader};

/// Reads `data` as an image to the end: every entry, its lossy path, every
/// byte of its data, and the module finder over all entries; an error is
/// formatted and ends the walk. Returns nothing: what is checked is that
/// nothing panics.
pub fn read_everything(data: &[u8]) {
    let mut reader = Reader::new(data);
    let mut scan = ModuleScan::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.next_entry() {
            Ok(Some(mut entry)) => {
                if let Err(e) = scan.add(entry.entry()) {
                    let _ = e.to_string();
                    break;
                }
                let _ = entry.entry().path_lossy();
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
}
